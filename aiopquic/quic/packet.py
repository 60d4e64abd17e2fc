"""QUIC wire constants and header helpers with aioquic's names.

The engine (ngtcp2) parses and builds every packet of a connection; this module exists so that
code written for aioquic (``aioquic.quic.packet``) or for aiopquic 0.6.1 (``QuicErrorCode`` from
``aiopquic.quic.connection``) finds the names it imports.  Servers that own their UDP socket
(Hypercorn) use :func:`pull_quic_header` to route a datagram to its connection before any
connection exists, and :func:`encode_quic_version_negotiation` to answer an unknown version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Optional

from aiopquic.buffer import Buffer

__all__ = [
    "CONNECTION_ID_MAX_SIZE",
    "NON_ACK_ELICITING_FRAME_TYPES",
    "NON_IN_FLIGHT_FRAME_TYPES",
    "PACKET_NUMBER_MAX_SIZE",
    "PROBING_FRAME_TYPES",
    "QuicFrameType",
    "RETRY_INTEGRITY_TAG_SIZE",
    "STATELESS_RESET_TOKEN_SIZE",
    "UINT_VAR_MAX_SIZE",
    "pretty_protocol_version",
    "PACKET_FIXED_BIT",
    "PACKET_LONG_HEADER",
    "PACKET_SPIN_BIT",
    "PACKET_TYPE_HANDSHAKE",
    "PACKET_TYPE_INITIAL",
    "PACKET_TYPE_ONE_RTT",
    "PACKET_TYPE_RETRY",
    "PACKET_TYPE_ZERO_RTT",
    "QuicErrorCode",
    "QuicHeader",
    "QuicPacketType",
    "QuicProtocolVersion",
    "encode_quic_version_negotiation",
    "is_long_header",
    "pull_quic_header",
]

PACKET_LONG_HEADER = 0x80
"""First-byte bit of a long header packet."""
PACKET_FIXED_BIT = 0x40
"""First-byte bit that is always 1 (except in Version Negotiation packets)."""
PACKET_SPIN_BIT = 0x20
"""Latency spin bit of a short header packet."""
CONNECTION_ID_MAX_SIZE = 20
"""Longest connection ID (RFC 9000 section 17.2)."""
_RETRY_TAG_SIZE = 16


class QuicErrorCode(IntEnum):
    """Transport error codes (RFC 9000 §20.1). ``CRYPTO_ERROR`` is the base of the TLS alert
    range 0x0100-0x01ff: add the alert number to it."""

    NO_ERROR = 0x0
    INTERNAL_ERROR = 0x1
    CONNECTION_REFUSED = 0x2
    FLOW_CONTROL_ERROR = 0x3
    STREAM_LIMIT_ERROR = 0x4
    STREAM_STATE_ERROR = 0x5
    FINAL_SIZE_ERROR = 0x6
    FRAME_ENCODING_ERROR = 0x7
    TRANSPORT_PARAMETER_ERROR = 0x8
    CONNECTION_ID_LIMIT_ERROR = 0x9
    PROTOCOL_VIOLATION = 0xA
    INVALID_TOKEN = 0xB
    APPLICATION_ERROR = 0xC
    CRYPTO_BUFFER_EXCEEDED = 0xD
    KEY_UPDATE_ERROR = 0xE
    AEAD_LIMIT_REACHED = 0xF
    NO_VIABLE_PATH = 0x10
    VERSION_NEGOTIATION_ERROR = 0x11
    CRYPTO_ERROR = 0x100


class QuicProtocolVersion(IntEnum):
    """QUIC versions: 0 marks a Version Negotiation packet; v1 is RFC 9000, v2 RFC 9369."""

    NEGOTIATION = 0
    VERSION_1 = 0x00000001
    VERSION_2 = 0x6B3343CF


class QuicPacketType(Enum):
    """Packet types, whatever their encoding in the version at hand."""

    INITIAL = 0
    ZERO_RTT = 1
    HANDSHAKE = 2
    RETRY = 3
    VERSION_NEGOTIATION = 4
    ONE_RTT = 5


PACKET_TYPE_INITIAL = QuicPacketType.INITIAL
PACKET_TYPE_ZERO_RTT = QuicPacketType.ZERO_RTT
PACKET_TYPE_HANDSHAKE = QuicPacketType.HANDSHAKE
PACKET_TYPE_RETRY = QuicPacketType.RETRY
PACKET_TYPE_ONE_RTT = QuicPacketType.ONE_RTT

PACKET_NUMBER_MAX_SIZE = 4
RETRY_INTEGRITY_TAG_SIZE = 16
STATELESS_RESET_TOKEN_SIZE = 16
UINT_VAR_MAX_SIZE = 8


class QuicFrameType(IntEnum):
    """QUIC frame types (RFC 9000 section 19, RFC 9221 DATAGRAM), aioquic's names.  For
    reading qlog traces and logs: the engine builds and parses frames itself."""

    PADDING = 0x00
    PING = 0x01
    ACK = 0x02
    ACK_ECN = 0x03
    RESET_STREAM = 0x04
    STOP_SENDING = 0x05
    CRYPTO = 0x06
    NEW_TOKEN = 0x07
    STREAM_BASE = 0x08
    MAX_DATA = 0x10
    MAX_STREAM_DATA = 0x11
    MAX_STREAMS_BIDI = 0x12
    MAX_STREAMS_UNI = 0x13
    DATA_BLOCKED = 0x14
    STREAM_DATA_BLOCKED = 0x15
    STREAMS_BLOCKED_BIDI = 0x16
    STREAMS_BLOCKED_UNI = 0x17
    NEW_CONNECTION_ID = 0x18
    RETIRE_CONNECTION_ID = 0x19
    PATH_CHALLENGE = 0x1A
    PATH_RESPONSE = 0x1B
    TRANSPORT_CLOSE = 0x1C
    APPLICATION_CLOSE = 0x1D
    HANDSHAKE_DONE = 0x1E
    DATAGRAM = 0x30
    DATAGRAM_WITH_LENGTH = 0x31


NON_ACK_ELICITING_FRAME_TYPES = frozenset(
    [QuicFrameType.ACK, QuicFrameType.ACK_ECN, QuicFrameType.PADDING,
     QuicFrameType.TRANSPORT_CLOSE, QuicFrameType.APPLICATION_CLOSE])
NON_IN_FLIGHT_FRAME_TYPES = frozenset(
    [QuicFrameType.ACK, QuicFrameType.ACK_ECN, QuicFrameType.TRANSPORT_CLOSE,
     QuicFrameType.APPLICATION_CLOSE])
PROBING_FRAME_TYPES = frozenset(
    [QuicFrameType.PATH_CHALLENGE, QuicFrameType.PATH_RESPONSE, QuicFrameType.PADDING,
     QuicFrameType.NEW_CONNECTION_ID])


def pretty_protocol_version(version: int) -> str:
    """A version number as text: ``"VERSION_1 (0x00000001)"``, or hex for unknown ones."""
    try:
        name = QuicProtocolVersion(version).name
    except ValueError:
        name = "UNKNOWN"
    return f"{name} (0x{version:08x})"


# the 2-bit long packet type field (first byte, bits 4-5): v1 (RFC 9000) and v2 (RFC 9369)
_LONG_TYPES_V1 = (QuicPacketType.INITIAL, QuicPacketType.ZERO_RTT, QuicPacketType.HANDSHAKE,
                  QuicPacketType.RETRY)
_LONG_TYPES_V2 = (QuicPacketType.RETRY, QuicPacketType.INITIAL, QuicPacketType.ZERO_RTT,
                  QuicPacketType.HANDSHAKE)


@dataclass
class QuicHeader:
    """What the unprotected part of a packet's header says (aioquic's ``QuicHeader``)."""

    version: Optional[int]
    """The protocol version (long headers only, else ``None``)."""
    packet_type: QuicPacketType
    packet_length: int
    """Bytes of this packet in the datagram (a datagram may hold several)."""
    destination_cid: bytes
    source_cid: bytes
    token: bytes = b""
    """The address validation token (Initial and Retry packets)."""
    integrity_tag: bytes = b""
    """The Retry integrity tag (Retry packets)."""
    supported_versions: list[int] = field(default_factory=list)
    """The versions a Version Negotiation packet lists."""


def is_long_header(first_byte: int) -> bool:
    """True when a packet starting with ``first_byte`` has a long header."""
    return bool(first_byte & PACKET_LONG_HEADER)


def _pull_cid(buf: Buffer, what: str) -> bytes:
    length = buf.pull_uint8()
    if length > CONNECTION_ID_MAX_SIZE:
        raise ValueError(f"{what} connection ID is too long ({length} bytes)")
    return buf.pull_bytes(length)


def pull_quic_header(buf: Buffer, host_cid_length: Optional[int] = None) -> QuicHeader:
    """Parse the header of the packet at ``buf``'s cursor, without decrypting anything.

    A short header carries no connection ID length: ``host_cid_length`` is the length of the
    IDs this endpoint issues.  Raises :class:`ValueError` (:class:`~aiopquic.buffer.
    BufferReadError` is one) for a truncated or malformed header.
    """
    start = buf.tell()
    first = buf.pull_uint8()
    if not is_long_header(first):
        if not first & PACKET_FIXED_BIT:
            raise ValueError("Packet fixed bit is zero")
        if host_cid_length is None:
            raise ValueError("host_cid_length is needed to parse a short header")
        dcid = buf.pull_bytes(host_cid_length)
        return QuicHeader(version=None, packet_type=QuicPacketType.ONE_RTT,
                          packet_length=buf.capacity - start, destination_cid=dcid,
                          source_cid=b"")
    version = buf.pull_uint32()
    dcid = _pull_cid(buf, "Destination")
    scid = _pull_cid(buf, "Source")
    if version == QuicProtocolVersion.NEGOTIATION:
        versions = []
        while not buf.eof():
            versions.append(buf.pull_uint32())
        return QuicHeader(version=version, packet_type=QuicPacketType.VERSION_NEGOTIATION,
                          packet_length=buf.tell() - start, destination_cid=dcid,
                          source_cid=scid, supported_versions=versions)
    if not first & PACKET_FIXED_BIT:
        raise ValueError("Packet fixed bit is zero")
    types = _LONG_TYPES_V2 if version == QuicProtocolVersion.VERSION_2 else _LONG_TYPES_V1
    packet_type = types[(first >> 4) & 3]
    token = tag = b""
    if packet_type == QuicPacketType.RETRY:
        token_length = buf.capacity - buf.tell() - _RETRY_TAG_SIZE
        if token_length < 0:
            raise ValueError("Retry packet is truncated")
        token = buf.pull_bytes(token_length)
        tag = buf.pull_bytes(_RETRY_TAG_SIZE)
        rest = 0
    else:
        if packet_type == QuicPacketType.INITIAL:
            token = buf.pull_bytes(buf.pull_uint_var())
        rest = buf.pull_uint_var()
    end = buf.tell() + rest
    if end > buf.capacity:
        raise ValueError("Packet payload is truncated")
    return QuicHeader(version=version, packet_type=packet_type, packet_length=end - start,
                      destination_cid=dcid, source_cid=scid, token=token, integrity_tag=tag)


def encode_quic_version_negotiation(source_cid: bytes, destination_cid: bytes,
                                    supported_versions: list[int]) -> bytes:
    """A Version Negotiation packet (RFC 9000 section 17.2.1) listing
    ``supported_versions``; the connection IDs are the client's, swapped."""
    if len(source_cid) > CONNECTION_ID_MAX_SIZE or len(destination_cid) > CONNECTION_ID_MAX_SIZE:
        raise ValueError("connection IDs are at most 20 bytes")
    buf = Buffer(capacity=7 + len(source_cid) + len(destination_cid)
                 + 4 * len(supported_versions))
    buf.push_uint8(PACKET_LONG_HEADER | os.urandom(1)[0])
    buf.push_uint32(QuicProtocolVersion.NEGOTIATION)
    buf.push_uint8(len(destination_cid))
    buf.push_bytes(destination_cid)
    buf.push_uint8(len(source_cid))
    buf.push_bytes(source_cid)
    for version in supported_versions:
        buf.push_uint32(version)
    return buf.data
