"""Sans-IO HTTP/3 (RFC 9114) with QPACK (RFC 9204, through pylsqpack), extended CONNECT
(RFC 9220), HTTP datagrams (RFC 9297) and WebTransport framing (draft-ietf-webtrans-http3).

:class:`H3Connection` has aioquic's method names and returns aioquic's event classes: feed it
every QUIC event with :meth:`H3Connection.handle_event` and act on the HTTP/3 events it
returns.  It sends through the :class:`~aiopquic.quic.connection.QuicConnection` it wraps;
nothing has to call ``transmit()`` afterwards (aiopquic's network thread sends by itself).

Errors of the peer never raise: they close the QUIC connection with the HTTP/3 error code
the RFCs name (``H3_FRAME_UNEXPECTED``, ``H3_MISSING_SETTINGS``, ...), after which
``handle_event`` returns nothing.  A malformed request (bad header section, content-length
mismatch) is a stream error on the server (the stream is reset with ``H3_MESSAGE_ERROR`` and
never reported) and a connection error on the client.  Unknown frame types, unknown
unidirectional stream types and unknown settings are ignored, as RFC 9114 requires.

Server push (RFC 9114 section 4.6) works as in aioquic: a client grants push ids 0 .. 8
(``max_push_id``, sent as MAX_PUSH_ID right after its SETTINGS), reports each promise once as
:class:`~aiopquic.h3.events.PushPromiseReceived` and the pushed response's header sections and
body as ``HeadersReceived`` / ``DataReceived`` with ``push_id`` set (``stream_id`` is the push
stream's).  A server calls :meth:`H3Connection.send_push_promise`, which returns the push
stream's id for ``send_headers`` / ``send_data``.  A push id above the one granted, a push id
used by two push streams, or promises of one push id with different headers close the
connection (``H3_ID_ERROR`` / ``H3_GENERAL_PROTOCOL_ERROR``); so do a PUSH_PROMISE or a push
stream from a client (``H3_FRAME_UNEXPECTED`` / ``H3_STREAM_CREATION_ERROR``).  What a client
keeps per push is bounded by the push ids it granted; a push stream that arrives before its
promise is held, without receive credit, until the promise comes.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from enum import IntEnum
from typing import Any, Optional, Union

import pylsqpack

from aiopquic.h3._qpack_size import EncoderStreamSizes
from aiopquic.h3._wire import decode_varint, encode_frame, encode_varint
from aiopquic.h3.events import (
    DatagramReceived,
    DataReceived,
    GoawayReceived,
    H3Event,
    Headers,
    HeadersReceived,
    PushPromiseReceived,
    WebTransportStreamDataReceived,
)
from aiopquic.h3.exceptions import (
    FrameUnexpected,
    H3Error,
    InvalidStreamTypeError,
    NoAvailablePushIDError,
)
from aiopquic.quic.connection import (
    QuicConnectionError,
    stream_is_client_initiated,
    stream_is_unidirectional,
)
from aiopquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

__all__ = [
    "ClosedCriticalStream",
    "DatagramError",
    "FrameError",
    "FrameUnexpected",
    "H3Error",
    "IdError",
    "InvalidStreamTypeError",
    "MessageError",
    "MissingSettingsError",
    "NoAvailablePushIDError",
    "ProtocolError",
    "QpackDecoderStreamError",
    "QpackDecompressionFailed",
    "QpackEncoderStreamError",
    "SettingsError",
    "StreamCreationError",
    "stream_is_client_initiated",
    "stream_is_request_response",
    "stream_is_unidirectional",
    "H3_ALPN",
    "ErrorCode",
    "FrameType",
    "H3Connection",
    "Setting",
    "StreamType",
    "WT_BUFFERED_STREAM_REJECTED",
    "WT_SESSION_GONE",
    "webtransport_error_to_http3",
    "http3_error_to_webtransport",
]

H3_ALPN = ["h3"]

logger = logging.getLogger("aiopquic.h3")


class ErrorCode(IntEnum):
    """HTTP/3 (RFC 9114 section 8.1), QPACK (RFC 9204) and HTTP datagram error codes."""

    H3_DATAGRAM_ERROR = 0x33
    H3_NO_ERROR = 0x100
    H3_GENERAL_PROTOCOL_ERROR = 0x101
    H3_INTERNAL_ERROR = 0x102
    H3_STREAM_CREATION_ERROR = 0x103
    H3_CLOSED_CRITICAL_STREAM = 0x104
    H3_FRAME_UNEXPECTED = 0x105
    H3_FRAME_ERROR = 0x106
    H3_EXCESSIVE_LOAD = 0x107
    H3_ID_ERROR = 0x108
    H3_SETTINGS_ERROR = 0x109
    H3_MISSING_SETTINGS = 0x10A
    H3_REQUEST_REJECTED = 0x10B
    H3_REQUEST_CANCELLED = 0x10C
    H3_REQUEST_INCOMPLETE = 0x10D
    H3_MESSAGE_ERROR = 0x10E
    H3_CONNECT_ERROR = 0x10F
    H3_VERSION_FALLBACK = 0x110
    QPACK_DECOMPRESSION_FAILED = 0x200
    QPACK_ENCODER_STREAM_ERROR = 0x201
    QPACK_DECODER_STREAM_ERROR = 0x202


class FrameType(IntEnum):
    """HTTP/3 frame types (plus the WebTransport bidirectional stream signal)."""

    DATA = 0x0
    HEADERS = 0x1
    CANCEL_PUSH = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    GOAWAY = 0x7
    MAX_PUSH_ID = 0xD
    WEBTRANSPORT_STREAM = 0x41


class StreamType(IntEnum):
    """Unidirectional stream types."""

    CONTROL = 0x00
    PUSH = 0x01
    QPACK_ENCODER = 0x02
    QPACK_DECODER = 0x03
    WEBTRANSPORT = 0x54


class Setting(IntEnum):
    """SETTINGS identifiers, including every WebTransport capability codepoint browsers
    look for."""

    QPACK_MAX_TABLE_CAPACITY = 0x1
    MAX_FIELD_SECTION_SIZE = 0x6
    QPACK_BLOCKED_STREAMS = 0x7
    ENABLE_CONNECT_PROTOCOL = 0x8  # RFC 9220
    H3_DATAGRAM = 0x33  # RFC 9297
    ENABLE_WEBTRANSPORT = 0x2B603742  # draft-02 (Chrome)
    WEBTRANSPORT_MAX_SESSIONS = 0xC671706A  # draft-07
    WT_MAX_SESSIONS = 0x14E9CD29  # draft-13/14 (Safari)
    WT_ENABLED = 0x2C7CF000  # draft-15
    DUMMY = 0x21  # a reserved ("grease") identifier, aioquic's name; never sent here


# WebTransport stream error codes (draft-ietf-webtrans-http3).
WT_SESSION_GONE = 0x170D7B68
WT_BUFFERED_STREAM_REJECTED = 0x3994BD84
_WT_APP_ERROR_FIRST = 0x52E4A40FA8DB
_WT_APP_ERROR_LAST = 0x52E5AC983162


def webtransport_error_to_http3(code: int) -> int:
    """Map a 32-bit WebTransport application error code to the HTTP/3 error code carried by
    RESET_STREAM / STOP_SENDING.  Raises :class:`ValueError` outside 0 .. 2**32-1."""
    if not 0 <= code <= 0xFFFFFFFF:
        raise ValueError(f"WebTransport error code {code} is not a 32-bit unsigned integer")
    return _WT_APP_ERROR_FIRST + code + code // 0x1E


def http3_error_to_webtransport(code: int) -> Optional[int]:
    """Inverse of :func:`webtransport_error_to_http3`; ``None`` if ``code`` is not in the
    WebTransport range (or is one of its reserved codepoints)."""
    if not _WT_APP_ERROR_FIRST <= code <= _WT_APP_ERROR_LAST:
        return None
    shifted = code - _WT_APP_ERROR_FIRST
    if (code - 0x21) % 0x1F == 0:
        return None
    return shifted - shifted // 0x1F


# HTTP/2 frame and setting types with no HTTP/3 meaning: receiving them is an error.
_RESERVED_FRAME_TYPES = frozenset((0x2, 0x6, 0x8, 0x9))
_RESERVED_SETTINGS = frozenset((0x0, 0x2, 0x3, 0x4, 0x5))
_BOOLEAN_SETTINGS = (Setting.ENABLE_CONNECT_PROTOCOL, Setting.H3_DATAGRAM,
                     Setting.ENABLE_WEBTRANSPORT, Setting.WT_ENABLED)
_WT_CAPABILITY = (Setting.ENABLE_WEBTRANSPORT, Setting.WEBTRANSPORT_MAX_SESSIONS,
                  Setting.WT_MAX_SESSIONS, Setting.WT_ENABLED)
_CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection",
                                  b"transfer-encoding", b"upgrade"))
_BAD_NAME = re.compile(rb"[^\x21-\x39\x3b-\x40\x5b-\x7e]")  # CTL, SP, ':', A-Z, DEL, 8-bit
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_VALUE_OR_SPACE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")  # one search for both checks

# Largest HEADERS frame buffered whole (at least; a larger max_field_section_size raises it).
_MAX_BUFFERED_FRAME = 256 * 1024
DEFAULT_MAX_FIELD_SECTION_SIZE = 64 * 1024
# Bytes buffered behind a header section blocked on QPACK (per stream).
MAX_BLOCKED_STREAM_BYTES = 1024 * 1024
_MAX_CONTROL_FRAME = 16 * 1024
_SMALL_DATA = 4096  # DATA payloads up to this are sent in one piece with their frame header

# stream kinds
_REQUEST, _WT, _CONTROL, _ENCODER, _DECODER, _WT_UNI, _IGNORED, _PUSH = range(8)
_PAYLOAD_KINDS = frozenset((_REQUEST, _WT, _WT_UNI, _PUSH))
# QuicConnection._consumed's key for connection-level credit only (streams that ended)
_CONN_CREDIT = -1
# push ids a client grants by default (aioquic's: MAX_PUSH_ID 8), and the largest it may grant
DEFAULT_MAX_PUSH_ID = 8
MAX_PUSH_ID_LIMIT = 0xFFFF
# header section states
_INITIAL, _AFTER_HEADERS, _AFTER_TRAILERS = range(3)


class _ProtocolError(Exception):
    error_code = ErrorCode.H3_GENERAL_PROTOCOL_ERROR

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class _ClosedCriticalStream(_ProtocolError):
    error_code = ErrorCode.H3_CLOSED_CRITICAL_STREAM


class _DatagramError(_ProtocolError):
    error_code = ErrorCode.H3_DATAGRAM_ERROR


class _ExcessiveLoad(_ProtocolError):
    error_code = ErrorCode.H3_EXCESSIVE_LOAD


class _FrameError(_ProtocolError):
    error_code = ErrorCode.H3_FRAME_ERROR


class _FrameUnexpected(_ProtocolError):
    error_code = ErrorCode.H3_FRAME_UNEXPECTED


class _IdError(_ProtocolError):
    error_code = ErrorCode.H3_ID_ERROR


class _MessageError(_ProtocolError):
    error_code = ErrorCode.H3_MESSAGE_ERROR


class _MissingSettings(_ProtocolError):
    error_code = ErrorCode.H3_MISSING_SETTINGS


class _SettingsError(_ProtocolError):
    error_code = ErrorCode.H3_SETTINGS_ERROR


class _StreamCreationError(_ProtocolError):
    error_code = ErrorCode.H3_STREAM_CREATION_ERROR


class _QpackDecompressionFailed(_ProtocolError):
    error_code = ErrorCode.QPACK_DECOMPRESSION_FAILED


class _QpackEncoderStreamError(_ProtocolError):
    error_code = ErrorCode.QPACK_ENCODER_STREAM_ERROR


class _QpackDecoderStreamError(_ProtocolError):
    error_code = ErrorCode.QPACK_DECODER_STREAM_ERROR


# aioquic's public names for the HTTP/3 protocol errors.  They are never raised to the
# caller here: a peer's protocol error closes the connection with the exception's
# ``error_code`` (an :class:`ErrorCode`).
ProtocolError = _ProtocolError
ClosedCriticalStream = _ClosedCriticalStream
DatagramError = _DatagramError
FrameError = _FrameError
IdError = _IdError
MessageError = _MessageError
MissingSettingsError = _MissingSettings
SettingsError = _SettingsError
StreamCreationError = _StreamCreationError
QpackDecompressionFailed = _QpackDecompressionFailed
QpackEncoderStreamError = _QpackEncoderStreamError
QpackDecoderStreamError = _QpackDecoderStreamError


def stream_is_request_response(stream_id: int) -> bool:
    """True for a client-initiated bidirectional stream (where requests go)."""
    return stream_id % 4 == 0


class _Stream:
    """Receive (and for requests, send) state of one stream.

    The class attributes are the state of a new stream: an instance stores only what it
    changes (a request stream sets a handful of fields; ``__init__`` runs once per request,
    so it stays short).  Defaults are immutable: ``held`` and ``fbuf`` are replaced, not
    mutated in place, while they are the shared empty values."""

    pending = b""  # unparsed bytes (a split frame header)
    ftype: Optional[int] = None  # frame being received (its header is parsed)
    fleft = 0  # payload bytes of that frame still to come
    fbuf: Union[bytes, bytearray] = b""  # payload of a frame that is buffered whole
    frames_seen = False
    recv_state = _INITIAL
    send_state = _INITIAL
    recv_ended = False
    send_ended = False
    blocked = False  # header section waits for QPACK encoder stream data
    session_id: Optional[int] = None  # WebTransport streams: their session
    expected_length: Optional[int] = None
    received_length = 0
    no_body = False  # response to HEAD (or 204/304): content-length is not checked
    # receive credit: bytes received, payload handed out for the application to credit,
    # and bytes credited by this layer (framing, or payload handed out by default)
    rx = 0
    out = 0
    credited = 0
    held: list[bytes] = []  # bytes behind a blocked header section, in order (see hold())
    held_len = 0
    block = b""  # the blocked header block (checked against the size limit later)
    push_id: Optional[int] = None  # push streams: their push id (once read)
    waiting = False  # a push stream held until its PUSH_PROMISE arrives
    blocked_push: Optional[int] = None  # the blocked block is this push's promise

    def __init__(self, stream_id: int, kind: Optional[int]) -> None:
        self.stream_id = stream_id
        self.kind = kind

    def hold(self, data: bytes) -> None:
        """Keep ``data`` in ``held`` (a list of chunks: no quadratic re-copying)."""
        if self.held:
            self.held.append(data)
        else:
            self.held = [data]  # never append to the shared default
        self.held_len += len(data)

    def collect(self, data: bytes, pos: int, take: int) -> tuple[int, Optional[bytes]]:
        """Buffer ``take`` payload bytes of the current frame from ``data[pos:]``; returns the
        new position and the whole payload once the frame is complete (else None)."""
        if take == self.fleft and not self.fbuf:  # the whole payload is here: no buffering
            self.fleft = 0
            self.ftype = None
            return pos + take, data[pos:pos + take]
        if take:
            if self.fbuf:
                self.fbuf += data[pos:pos + take]
            else:
                self.fbuf = bytearray(data[pos:pos + take])
            pos += take
            self.fleft -= take
        if self.fleft:
            return pos, None
        payload = bytes(self.fbuf)
        self.fbuf = b""
        self.ftype = None
        return pos, payload


def _is_uni(stream_id: int) -> bool:
    return bool(stream_id & 2)


# Fields that passed the context-free checks (name characters, not connection-specific, value
# characters): browsers repeat the same dozen fields on every request.  Only short fields are
# kept and the table is emptied when full, so a peer sending endless new fields costs at most
# _GOOD_FIELDS_MAX * _GOOD_FIELD_LEN bytes here.
_GOOD_FIELDS: dict[tuple[bytes, bytes], bool] = {}
_GOOD_FIELDS_MAX = 2048
_GOOD_FIELD_LEN = 256


def _check_fields(headers: Headers, allowed_pseudo: frozenset[bytes],
                  stream: Optional[_Stream], allow_te: bool) -> dict[bytes, bytes]:
    """Validate a received field section (RFC 9114 section 4.2/4.3); returns the pseudo
    headers.  Raises _MessageError naming the offending field."""
    pseudo: dict[bytes, bytes] = {}
    regular = False
    length: Optional[int] = None
    good = _GOOD_FIELDS
    for field in headers:
        name, value = field
        if not name:
            raise _MessageError("empty header name")
        known = field in good
        if name[0] == 0x3A:
            if regular:
                raise _MessageError(f"pseudo-header {name!r} after regular headers")
            if name not in allowed_pseudo:
                raise _MessageError(f"pseudo-header {name!r} is not allowed here")
            if name in pseudo:
                raise _MessageError(f"pseudo-header {name!r} appears twice")
            pseudo[name] = value
        else:
            regular = True
            if not known:
                if _BAD_NAME.search(name):
                    raise _MessageError(f"header name {name!r} has invalid characters "
                                        "(uppercase, space, ':' or control)")
                if name in _CONNECTION_SPECIFIC:
                    raise _MessageError(f"connection-specific header {name!r}")
            if name == b"te" and (not allow_te or value.lower() != b"trailers"):
                raise _MessageError(f"header 'te: {value!r}' is not allowed")
            if name == b"content-length":
                try:
                    n = int(value)
                except ValueError:
                    n = -1
                if n < 0 or not value.isdigit():
                    raise _MessageError(f"content-length {value!r} is not a number")
                if length is not None and n != length:
                    raise _MessageError("conflicting content-length values")
                length = n
        if known:
            continue
        if value and _BAD_VALUE_OR_SPACE.search(value) is not None:
            if _BAD_VALUE.search(value):
                raise _MessageError(f"value of header {name!r} contains NUL, CR or LF")
            raise _MessageError(f"value of header {name!r} has surrounding whitespace")
        if len(name) + len(value) <= _GOOD_FIELD_LEN:
            if len(good) >= _GOOD_FIELDS_MAX:
                good.clear()
            good[field] = True
    if stream is not None and length is not None:
        stream.expected_length = length
    return pseudo


def _check_header_types(headers: Headers) -> None:
    for item in headers:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], bytes)
                and isinstance(item[1], bytes)):
            raise TypeError(f"headers must be (bytes, bytes) pairs, got {item!r}")


_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path", b":protocol"))
_PROMISE_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path"))
_RESPONSE_PSEUDO = frozenset((b":status",))
_NO_PSEUDO: frozenset[bytes] = frozenset()


def _check_request(headers: Headers, stream: _Stream) -> None:
    pseudo = _check_fields(headers, _REQUEST_PSEUDO, stream, True)
    method = pseudo.get(b":method")
    if not method:
        raise _MessageError("request without :method")
    if method == b"CONNECT":
        if b":protocol" in pseudo:  # extended CONNECT (RFC 9220)
            for name in (b":scheme", b":path", b":authority"):
                if not pseudo.get(name):
                    raise _MessageError(f"extended CONNECT without {name.decode()}")
        else:
            if b":scheme" in pseudo or b":path" in pseudo:
                raise _MessageError("CONNECT with :scheme or :path")
            if not pseudo.get(b":authority"):
                raise _MessageError("CONNECT without :authority")
        return
    if b":protocol" in pseudo:
        raise _MessageError(":protocol is only allowed with CONNECT")
    if not pseudo.get(b":scheme"):
        raise _MessageError("request without :scheme")
    if not pseudo.get(b":path"):
        raise _MessageError("request without :path")
    if pseudo[b":scheme"] in (b"http", b"https") and not pseudo.get(b":authority") and not any(
            name == b"host" for name, _ in headers):
        raise _MessageError("request without :authority or host")


def _check_response(headers: Headers, stream: Optional[_Stream]) -> bytes:
    pseudo = _check_fields(headers, _RESPONSE_PSEUDO, stream, False)
    status = pseudo.get(b":status")
    if status is None:
        raise _MessageError("response without :status")
    if len(status) != 3 or not status.isdigit():
        raise _MessageError(f":status {status!r} is not a three-digit code")
    if status == b"101":
        raise _MessageError(":status 101 is not allowed in HTTP/3")
    return status


def _parse_settings(payload: bytes) -> dict[int, int]:
    settings: dict[int, int] = {}
    pos = 0
    while pos < len(payload):
        ident = decode_varint(payload, pos)
        if ident is None:
            raise _FrameError("truncated SETTINGS frame")
        value = decode_varint(payload, ident[1])
        if value is None:
            raise _FrameError("truncated SETTINGS frame")
        key, pos = ident[0], value[1]
        if key in _RESERVED_SETTINGS:
            raise _SettingsError(f"setting {key:#x} is an HTTP/2 setting")
        if key in settings:
            raise _SettingsError(f"setting {key:#x} appears twice")
        settings[key] = value[0]
    return settings


def _parse_single_varint(payload: bytes, what: str) -> int:
    value = decode_varint(payload, 0)
    if value is None or value[1] != len(payload):
        raise _FrameError(f"malformed {what} frame")
    return value[0]


class H3Connection:
    """A sans-IO HTTP/3 connection over an aiopquic :class:`QuicConnection` (aioquic's API).

    Creating it opens the control stream (with SETTINGS) and the two QPACK streams.  With
    ``enable_webtransport`` it advertises every WebTransport capability codepoint
    (ENABLE_CONNECT_PROTOCOL, H3_DATAGRAM, ENABLE_WEBTRANSPORT, WEBTRANSPORT_MAX_SESSIONS,
    WT_MAX_SESSIONS, WT_ENABLED) and recognises WebTransport streams; that needs QUIC
    datagrams (``QuicConfiguration.max_datagram_frame_size``), else :class:`ValueError`.

    ``max_field_section_size`` (advertised as SETTINGS_MAX_FIELD_SECTION_SIZE) bounds the
    decoded size of a received header section (name + value + 32 per field, RFC 9114 section
    4.2.2); a larger one is refused before pylsqpack builds it (a server answers 431).

    Receive flow control: the H3Connection returns the QUIC credit of what it consumes itself
    (frame headers, header sections, control and QPACK streams) as it parses, and the credit
    of payload bytes (``DataReceived`` / ``WebTransportStreamDataReceived``) when it hands
    the event out -- aioquic's contract: the application owns what it got.  With
    ``credit_on_consume=True`` payload credit comes back only when the application calls
    :meth:`consumed`, so a peer cannot send more than the flow-control window ahead of the
    application (the asyncio helpers work this way).  Bytes this layer holds (a blocked header
    section and what follows it) are credited only once processed.

    Server push: a client grants the push ids 0 .. ``max_push_id`` (default 8, as aioquic's
    client; at most :data:`MAX_PUSH_ID_LIMIT`; ``None`` grants none and sends no MAX_PUSH_ID,
    so a server cannot push).  A server ignores ``max_push_id``.  Pushed responses arrive as
    ``HeadersReceived`` / ``DataReceived`` with ``push_id`` set, after the
    ``PushPromiseReceived`` of their push id, and their credit works as a request stream's.

    Call it from the event loop's thread only (like the QuicConnection).
    """

    def __init__(self, quic: Any, enable_webtransport: bool = False, *,
                 max_field_section_size: int = DEFAULT_MAX_FIELD_SECTION_SIZE,
                 credit_on_consume: bool = False,
                 extra_settings: Optional[dict[int, int]] = None,
                 max_push_id: Optional[int] = DEFAULT_MAX_PUSH_ID) -> None:
        if not isinstance(max_field_section_size, int) or max_field_section_size < 1:
            raise ValueError("max_field_section_size must be a positive integer, got "
                             f"{max_field_section_size!r}")
        if max_push_id is not None and (isinstance(max_push_id, bool) or not isinstance(
                max_push_id, int) or not 0 <= max_push_id <= MAX_PUSH_ID_LIMIT):
            raise ValueError(f"max_push_id must be None or an integer from 0 to "
                             f"{MAX_PUSH_ID_LIMIT}, got {max_push_id!r}")
        self._quic = quic
        self._is_client = bool(quic.configuration.is_client)
        self._enable_webtransport = bool(enable_webtransport)
        self._max_field_section_size = max_field_section_size
        self._max_headers_frame = max(_MAX_BUFFERED_FRAME, max_field_section_size + 1024)
        self._credit_on_consume = bool(credit_on_consume)
        # this layer owns the receive credit of every stream of the connection (a stand-in
        # QuicConnection without credit, as in sans-IO tests, gets none)
        self._credit: Any = None
        if hasattr(quic, "_consumed") and hasattr(quic, "_auto_credit"):
            quic._auto_credit = False
            self._credit = quic._consumed
        datagrams = bool(quic.configuration.max_datagram_frame_size)
        if self._enable_webtransport and not datagrams:
            raise ValueError("WebTransport needs QUIC datagrams: set "
                             "QuicConfiguration.max_datagram_frame_size (e.g. 65536)")
        self._max_table_capacity = 4096
        self._blocked_streams = 16
        self._decoder = pylsqpack.Decoder(self._max_table_capacity, self._blocked_streams)
        self._sizes = EncoderStreamSizes(self._max_table_capacity)
        self._encoder = pylsqpack.Encoder()
        # QPACK stream bytes, aioquic's counters (its interop client reads them)
        self._decoder_bytes_received = 0
        self._decoder_bytes_sent = 0
        self._decoder_pending: list[bytes] = []  # see _send_decoder
        self._encoder_bytes_received = 0
        self._encoder_bytes_sent = 0
        self._streams: dict[int, _Stream] = {}
        self._done = False
        self._received_settings: Optional[dict[int, int]] = None
        self._peer_control: Optional[int] = None
        self._peer_encoder: Optional[int] = None
        self._peer_decoder: Optional[int] = None
        self._goaway_received: Optional[int] = None
        self._goaway_sent: Optional[int] = None
        self._max_request_seen = -4  # highest client bidi stream id processed (server)
        # server push.  Client: the push ids granted, each promise's header digest, the push
        # stream of each push id seen, push streams held until their promise, pushes the
        # server cancelled (every one bounded by max_push_id + 1 entries).  Server: the
        # client's MAX_PUSH_ID, the next push id, the open push stream of each push id.
        self._max_push_id: Optional[int] = max_push_id if self._is_client else None
        self._promises: dict[int, bytes] = {}
        self._push_streams: dict[int, int] = {}
        self._push_cancelled: set[int] = set()
        self._peer_max_push_id: Optional[int] = None
        self._next_push_id = 0

        settings: dict[int, int] = {
            Setting.QPACK_MAX_TABLE_CAPACITY: self._max_table_capacity,
            Setting.MAX_FIELD_SECTION_SIZE: max_field_section_size,
            Setting.QPACK_BLOCKED_STREAMS: self._blocked_streams,
            Setting.ENABLE_CONNECT_PROTOCOL: 1,
        }
        if datagrams:
            settings[Setting.H3_DATAGRAM] = 1
        if self._enable_webtransport:
            for ident in _WT_CAPABILITY:
                settings[ident] = 1
        for extra_id, value in (extra_settings or {}).items():
            if extra_id in _RESERVED_SETTINGS or not 0 <= value < 1 << 62:
                raise ValueError(f"setting {extra_id:#x}={value} cannot be sent")
            settings[extra_id] = value
        # a reserved (GREASE) setting keeps peers honest about ignoring unknown ids
        settings[0x1F * random.randrange(1, 1 << 16) + 0x21] = random.randrange(1 << 14)
        self._sent_settings = settings

        self._local_control = self._open_uni(StreamType.CONTROL)
        payload = b"".join(encode_varint(k) + encode_varint(v) for k, v in settings.items())
        self._quic.send_stream_data(self._local_control,
                                    encode_frame(FrameType.SETTINGS, payload))
        if self._max_push_id is not None:
            self._quic.send_stream_data(self._local_control, encode_frame(
                FrameType.MAX_PUSH_ID, encode_varint(self._max_push_id)))
        self._local_encoder = self._open_uni(StreamType.QPACK_ENCODER)
        self._local_decoder = self._open_uni(StreamType.QPACK_DECODER)

    # ------------------------------------------------------------------ properties

    @property
    def received_settings(self) -> Optional[dict[int, int]]:
        """The peer's SETTINGS once received, else ``None``."""
        return self._received_settings

    @property
    def sent_settings(self) -> Optional[dict[int, int]]:
        """The SETTINGS we sent."""
        return self._sent_settings

    @property
    def max_field_section_size(self) -> int:
        """*(aiopquic)* The largest received header section accepted (advertised in
        SETTINGS)."""
        return self._max_field_section_size

    def consumed(self, stream_id: int, nbytes: int, flush: bool = True) -> None:
        """*(aiopquic)* The application has consumed ``nbytes`` of payload it received on
        ``stream_id``: return their flow-control credit to the peer.  Needed only with
        ``credit_on_consume=True`` (otherwise credit returns as the events are handed out).
        ``flush=False`` lets small amounts batch until a later call flushes them."""
        credit = self._credit
        if credit is None or nbytes <= 0 or self._quic.closed:
            return
        st = self._streams.get(stream_id)
        if st is None or st.recv_ended:
            stream_id = _CONN_CREDIT  # the stream has all its data: only MAX_DATA matters
        credit(stream_id, nbytes)
        if flush:
            self._quic._flush_credit(stream_id)

    @property
    def webtransport_enabled(self) -> bool:
        """*(aiopquic)* True when WebTransport was enabled for this connection."""
        return self._enable_webtransport

    def _settle(self, st: _Stream) -> None:
        """Return the credit of the bytes of ``st`` this layer is done with: everything
        received that is neither held here nor handed out for the application to credit."""
        credit = self._credit
        if credit is None:
            return
        owed = st.rx - st.out - st.credited - len(st.pending) - len(st.fbuf) - st.held_len - \
            len(st.block)
        if owed > 0 and not self._done:
            st.credited += owed
            # a stream whose FIN arrived needs no MAX_STREAM_DATA: its credit joins the
            # connection's (one command per batch of requests instead of one per request)
            key = _CONN_CREDIT if st.recv_ended else st.stream_id
            credit(key, owed)
            if st.kind not in _PAYLOAD_KINDS:
                # no application read will flush this stream's credit: send it now
                self._quic._flush_credit(key)

    @property
    def goaway_received(self) -> Optional[int]:
        """*(aiopquic)* The identifier of the last GOAWAY received, or ``None``."""
        return self._goaway_received

    @property
    def peer_supports_webtransport(self) -> bool:
        """*(aiopquic)* True once the peer's SETTINGS advertise extended CONNECT, HTTP
        datagrams and any WebTransport capability codepoint."""
        s = self._received_settings
        if not s:
            return False
        return (s.get(Setting.H3_DATAGRAM) == 1 and
                any(s.get(ident, 0) >= 1 for ident in _WT_CAPABILITY) and
                (self._is_client is False or s.get(Setting.ENABLE_CONNECT_PROTOCOL) == 1))

    # ------------------------------------------------------------------ sending

    def _open_uni(self, stream_type: int) -> int:
        stream_id = int(self._quic.get_next_available_stream_id(is_unidirectional=True))
        self._quic.send_stream_data(stream_id, encode_varint(stream_type))
        return stream_id

    def _send_stream(self, stream_id: int) -> _Stream:
        # (an id that is no integer, e.g. unhashable, must still get the ValueError below)
        st = self._streams.get(stream_id) if isinstance(stream_id, int) else None
        if st is not None and st.kind == _REQUEST:
            return st  # the usual case, checked first
        if not isinstance(stream_id, int) or stream_id < 0:
            raise ValueError(f"invalid stream id {stream_id!r}")
        if stream_id & 2:
            if st is not None and st.kind == _PUSH and not self._is_client:
                return st
            if not self._is_client and stream_id & 1 and st is None and stream_id not in (
                    self._local_control, self._local_encoder, self._local_decoder):
                raise FrameUnexpected(
                    f"stream {stream_id} is not an open push stream: it ended, the client "
                    "cancelled it, or send_push_promise() never returned it")
            raise InvalidStreamTypeError(
                f"stream {stream_id} is unidirectional: HTTP messages use bidirectional "
                "streams (a server also sends on the push streams of send_push_promise())")
        if st is None:
            local = bool(stream_id & 1) == (not self._is_client)
            if not local:
                raise FrameUnexpected(f"stream {stream_id} is finished or was never opened "
                                      "by the peer")
            if self._is_client and self._goaway_received is not None and \
                    stream_id >= self._goaway_received:
                raise H3Error(f"the server sent GOAWAY({self._goaway_received}): open a new "
                              f"connection for new requests (stream {stream_id})")
            st = _Stream(stream_id, _REQUEST)
            self._streams[stream_id] = st
        elif st.kind != _REQUEST:
            raise InvalidStreamTypeError(f"stream {stream_id} is not a request stream")
        return st

    def send_headers(self, stream_id: int, headers: Headers, end_stream: bool = False) -> None:
        """Send a header section on ``stream_id``: a request (client), a response or an
        interim 1xx response (server), or trailers (a second section after the body).

        Raises :class:`FrameUnexpected` when no more headers may be sent on the stream,
        :class:`TypeError` for names/values that are not bytes, and the QUIC layer's
        exceptions when the stream or connection is closed."""
        st = self._send_stream(stream_id)
        if st.send_ended or st.send_state == _AFTER_TRAILERS:
            raise FrameUnexpected(f"no more headers may be sent on stream {stream_id}")
        _check_header_types(headers)
        if self._is_client and st.send_state == _INITIAL and (b":method", b"HEAD") in headers:
            st.no_body = True
        interim = False
        if not self._is_client and st.send_state == _INITIAL:
            for name, value in headers:
                if name == b":status":
                    interim = value[:1] == b"1"
                    break
        if interim and end_stream:
            raise FrameUnexpected("an interim (1xx) response cannot end the stream")
        encoder_bytes, block = self._encoder.encode(stream_id, headers)
        if encoder_bytes:
            self._quic.send_stream_data(self._local_encoder, encoder_bytes)
            self._encoder_bytes_sent += len(encoder_bytes)
        if st.send_state == _INITIAL:
            if not interim:
                st.send_state = _AFTER_HEADERS
        else:
            st.send_state = _AFTER_TRAILERS
        if end_stream:
            st.send_ended = True
        self._quic.send_stream_data(stream_id, encode_frame(FrameType.HEADERS, block),
                                    end_stream)
        self._maybe_forget(st)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Send body bytes (one DATA frame) on ``stream_id``; ``end_stream`` ends it.  Empty
        ``data`` with ``end_stream`` just ends the stream.

        Raises :class:`FrameUnexpected` before the headers, after trailers or after the end
        of the stream."""
        st = self._send_stream(stream_id)
        if st.send_state != _AFTER_HEADERS or st.send_ended:
            raise FrameUnexpected(
                f"DATA is not allowed on stream {stream_id} now (before headers, after "
                "trailers or after the end of the stream)")
        if end_stream:
            st.send_ended = True
        n = len(data)
        quic = self._quic
        if n == 0:
            if end_stream:
                quic.send_stream_data(stream_id, b"", True)
        elif n <= _SMALL_DATA:
            quic.send_stream_data(stream_id, b"\x00" + encode_varint(n) + bytes(data),
                                  end_stream)
        else:
            quic.send_stream_data(stream_id, b"\x00" + encode_varint(n))
            quic.send_stream_data(stream_id, data, end_stream)
        self._maybe_forget(st)

    def send_datagram(self, stream_id: int, data: bytes) -> Any:
        """Send an HTTP/3 datagram (RFC 9297) tied to the request stream ``stream_id`` (for
        WebTransport: the session id).

        Raises :class:`InvalidStreamTypeError` unless ``stream_id`` is a client-initiated
        bidirectional stream, and :class:`ValueError` when QUIC datagrams are off or
        ``data`` is too large for one packet.  Returns what the QUIC connection's
        ``send_datagram_frame`` returns (0 there means its datagram queue was full)."""
        if not isinstance(stream_id, int) or stream_id < 0 or stream_id % 4 != 0:
            raise InvalidStreamTypeError(
                "datagrams can only be sent for client-initiated bidirectional streams "
                f"(got stream {stream_id!r})")
        return self._quic.send_datagram_frame(encode_varint(stream_id >> 2) + bytes(data))

    def create_webtransport_stream(self, session_id: int, is_unidirectional: bool = False) -> int:
        """Open a WebTransport stream for the session ``session_id`` and return its stream
        id.  The WebTransport stream header is written; the application then writes raw bytes
        with ``quic.send_stream_data(stream_id, ...)``.

        Raises :class:`H3Error` when WebTransport is not enabled."""
        if not self._enable_webtransport:
            raise H3Error("WebTransport is not enabled (H3Connection(enable_webtransport=True))")
        if not isinstance(session_id, int) or session_id < 0 or session_id % 4 != 0:
            raise InvalidStreamTypeError(f"invalid WebTransport session id {session_id!r}")
        quic = self._quic
        if is_unidirectional:
            stream_id = int(quic.get_next_available_stream_id(is_unidirectional=True))
            quic.send_stream_data(stream_id, encode_varint(StreamType.WEBTRANSPORT) +
                                  encode_varint(session_id))
        else:
            stream_id = int(quic.get_next_available_stream_id(is_unidirectional=False))
            quic.send_stream_data(stream_id, encode_varint(FrameType.WEBTRANSPORT_STREAM) +
                                  encode_varint(session_id))
            st = _Stream(stream_id, _WT)
            st.session_id = session_id
            self._streams[stream_id] = st
        return stream_id

    # -- server push ------------------------------------------------------------------

    def send_push_promise(self, stream_id: int, headers: Headers) -> int:
        """Promise a push on the request stream ``stream_id`` (aioquic's method): sends
        PUSH_PROMISE with the next push id and the promised request ``headers`` (``:method``,
        ``:scheme``, ``:authority``, ``:path``), opens the push stream and returns *its stream
        id*, on which the pushed response is sent with :meth:`send_headers` and
        :meth:`send_data` (as aioquic returns).

        Raises :class:`~aiopquic.h3.exceptions.NoAvailablePushIDError` when the client
        granted no push id or all of them are used (or its GOAWAY forbids more),
        :class:`InvalidStreamTypeError` unless ``stream_id`` is a client-initiated
        bidirectional stream, :class:`FrameUnexpected` when that stream is not open for
        sending, :class:`TypeError` for headers that are not bytes pairs, and
        :class:`RuntimeError` on a client (only a server may push)."""
        if self._is_client:
            raise RuntimeError("only a server may send a push promise")
        if not isinstance(stream_id, int) or stream_id < 0 or \
                not stream_is_request_response(stream_id):
            raise InvalidStreamTypeError(
                "push promises can only be sent on client-initiated bidirectional streams "
                f"(got stream {stream_id!r})")
        _check_header_types(headers)
        st = self._streams.get(stream_id)
        if st is None or st.kind != _REQUEST or st.send_ended:
            raise FrameUnexpected(f"stream {stream_id} is not an open request stream: "
                                  "cannot promise a push on it")
        push_id = self._next_push_id
        limit = self._peer_max_push_id
        if limit is None or push_id > limit:
            granted = "no push id" if limit is None else f"push ids up to {limit}"
            raise NoAvailablePushIDError(
                f"no push id available for stream {stream_id}: the client granted "
                f"{granted} and {push_id} were used")
        if self._goaway_received is not None and push_id >= self._goaway_received:
            raise NoAvailablePushIDError(
                f"no push id available for stream {stream_id}: the client's GOAWAY allows "
                f"push ids below {self._goaway_received}")
        self._next_push_id = push_id + 1
        encoder_bytes, block = self._encoder.encode(stream_id, headers)
        if encoder_bytes:
            self._quic.send_stream_data(self._local_encoder, encoder_bytes)
            self._encoder_bytes_sent += len(encoder_bytes)
        self._quic.send_stream_data(stream_id, encode_frame(
            FrameType.PUSH_PROMISE, encode_varint(push_id) + block))
        push_stream_id = self._open_uni(StreamType.PUSH)
        self._quic.send_stream_data(push_stream_id, encode_varint(push_id))
        push = _Stream(push_stream_id, _PUSH)
        push.push_id = push_id
        push.recv_ended = True  # nothing is received on a stream we opened
        self._streams[push_stream_id] = push
        self._push_streams[push_id] = push_stream_id
        return push_stream_id

    def cancel_push(self, push_id: int) -> None:
        """*(aiopquic)* Cancel a server push with CANCEL_PUSH (RFC 9114 section 7.2.3).

        A client no longer wants push ``push_id`` (one it granted): the push stream is
        stopped with ``H3_REQUEST_CANCELLED`` and whatever still arrives on it is discarded
        without events.  A server withdraws a push it promised: the push stream is reset
        and further writes to it raise.  Raises :class:`ValueError` for a push id the
        client never granted (client) or that was never promised (server)."""
        if isinstance(push_id, bool) or not isinstance(push_id, int) or push_id < 0:
            raise ValueError(f"invalid push id {push_id!r}")
        if self._is_client:
            if self._max_push_id is None or push_id > self._max_push_id:
                raise ValueError(f"push id {push_id} was never granted (max_push_id "
                                 f"{self._max_push_id})")
            self._push_cancelled.add(push_id)
            st = self._push_stream_of(push_id)
            if st is not None and st.kind == _PUSH:
                self._drop_push(st)
        else:
            if push_id >= self._next_push_id:
                raise ValueError(f"push id {push_id} was never promised")
            self._withdraw_push(push_id)
        self._quic.send_stream_data(self._local_control,
                                    encode_frame(FrameType.CANCEL_PUSH, encode_varint(push_id)))

    def send_goaway(self, stream_id: Optional[int] = None) -> int:
        """*(aiopquic)* Send GOAWAY on the control stream and return its identifier.

        A server's default is the first request stream id it has not processed (requests
        at or above it are then rejected with ``H3_REQUEST_REJECTED``); a client's is push id
        0.  Raises :class:`ValueError` if the identifier would increase."""
        if stream_id is None:
            stream_id = 0 if self._is_client else self._max_request_seen + 4
        if not self._is_client and stream_id % 4 != 0:
            raise ValueError(f"a server's GOAWAY must carry a client bidirectional stream id "
                             f"(got {stream_id})")
        if self._goaway_sent is not None and stream_id > self._goaway_sent:
            raise ValueError(f"GOAWAY identifier cannot increase ({self._goaway_sent} -> "
                             f"{stream_id})")
        self._goaway_sent = stream_id
        self._quic.send_stream_data(self._local_control,
                                    encode_frame(FrameType.GOAWAY, encode_varint(stream_id)))
        return stream_id

    # ------------------------------------------------------------------ receiving

    def handle_event(self, event: QuicEvent) -> list[H3Event]:
        """Process one QUIC event and return the HTTP/3 events it produced.

        A protocol error of the peer closes the QUIC connection with the right HTTP/3 error
        code and returns no events; so does every later call."""
        if self._done:
            return []
        try:
            if isinstance(event, StreamDataReceived):
                return self._on_stream_data(event.stream_id, event.data, event.end_stream)
            if isinstance(event, DatagramFrameReceived):
                return self._on_datagram(event.data)
            if isinstance(event, StreamReset):
                self._on_stream_reset(event.stream_id)
            elif isinstance(event, StopSendingReceived):
                self._on_stop_sending(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self._done = True
        except _ProtocolError as exc:
            self._fail(exc.error_code, exc.reason)
        except Exception as exc:  # a bug of ours must not take the event loop down
            logger.exception("HTTP/3 internal error while handling %r", event)
            self._fail(ErrorCode.H3_INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
        return []

    def _fail(self, error_code: int, reason: str) -> None:
        logger.info("HTTP/3 error %#x from the peer: %s; closing the connection", error_code,
                    reason)
        self._done = True
        self._quic.close(error_code=error_code, reason_phrase=reason)

    def _maybe_forget(self, st: _Stream) -> None:
        if st.recv_ended and not st.blocked and not st.waiting and (
                st.send_ended or st.kind not in (_REQUEST, _PUSH)):
            self._streams.pop(st.stream_id, None)
            if st.kind == _PUSH and not self._is_client and st.push_id is not None:
                self._push_streams.pop(st.push_id, None)

    def _on_datagram(self, data: bytes) -> list[H3Event]:
        head = decode_varint(data, 0)
        if head is None:
            raise _DatagramError("HTTP datagram without a quarter stream id")
        return [DatagramReceived(data=data[head[1]:], stream_id=head[0] * 4)]

    def _on_stream_reset(self, stream_id: int) -> None:
        if stream_id in (self._peer_control, self._peer_encoder, self._peer_decoder):
            raise _ClosedCriticalStream(f"the peer reset critical stream {stream_id}")
        st = self._streams.get(stream_id)
        if st is None:
            return
        if st.kind == _REQUEST:
            self._cancel_header_block(stream_id)
            if not self._is_client and st.recv_state == _INITIAL and not st.send_ended:
                # the application never saw this request: nothing will answer it
                self._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_INCOMPLETE)
                st.send_ended = True
        st.recv_ended = True
        st.blocked = False
        st.waiting = False
        st.blocked_push = None
        st.pending = b""
        st.fbuf = b""
        st.block = b""
        st.held = []
        st.held_len = 0
        self._maybe_forget(st)
        self._settle(st)

    def _on_stop_sending(self, stream_id: int) -> None:
        if stream_id in (self._local_control, self._local_encoder, self._local_decoder):
            raise _ClosedCriticalStream(f"the peer stopped critical stream {stream_id}")
        st = self._streams.get(stream_id)
        if st is not None:
            st.send_ended = True
            self._maybe_forget(st)

    def _on_stream_data(self, stream_id: int, data: bytes, fin: bool) -> list[H3Event]:
        st = self._streams.get(stream_id)
        if st is None:
            local = bool(stream_id & 1) == (not self._is_client)
            if local:  # a stream we no longer track (finished): discard, return the credit
                if data and self._credit is not None:
                    self._credit(stream_id, len(data))
                return []
            st = _Stream(stream_id, None if _is_uni(stream_id) else _REQUEST)
            self._streams[stream_id] = st
        st.rx += len(data)
        events: list[H3Event] = []
        if st.kind == _WT:
            if data or fin:
                assert st.session_id is not None
                if self._credit_on_consume:
                    st.out += len(data)
                events.append(WebTransportStreamDataReceived(
                    data=data, stream_id=stream_id, stream_ended=fin, session_id=st.session_id))
            if fin:
                st.recv_ended = True
                self._maybe_forget(st)
        elif _is_uni(stream_id) and (st.kind != _PUSH or st.push_id is None):
            self._recv_uni(st, data, fin, events)
        elif st.kind == _IGNORED:
            if fin:
                st.recv_ended = True
                self._maybe_forget(st)
        elif st.blocked or st.waiting:
            self._hold(st, data, fin)
        else:
            if st.pending:
                data = st.pending + data
                st.pending = b""
            self._recv_request(st, data, fin, events)
        self._settle(st)
        return events

    def _hold(self, st: _Stream, data: bytes, fin: bool) -> None:
        """Keep bytes behind a header section blocked on QPACK, or of a push stream whose
        promise has not arrived (uncredited, at most MAX_BLOCKED_STREAM_BYTES)."""
        if data:
            st.hold(data)
        st.recv_ended = st.recv_ended or fin
        if st.held_len > MAX_BLOCKED_STREAM_BYTES:
            what = "a header section blocked on QPACK" if st.blocked else \
                f"the promise of push {st.push_id}"
            self._refuse(st, ErrorCode.H3_EXCESSIVE_LOAD,
                         f"{st.held_len} bytes waiting for {what}")
            self._maybe_forget(st)

    # ---- request streams (and WebTransport bidirectional streams)

    def _recv_request(self, st: _Stream, data: bytes, fin: bool, events: list[H3Event],
                      start: Optional[int] = None) -> None:
        if start is None:
            start = len(events)
        sid = st.stream_id
        pos, n = 0, len(data)
        while True:
            if st.ftype is None:
                if pos >= n:
                    break
                head = decode_varint(data, pos)
                if head is None:
                    break
                ftype, p = head
                if ftype == FrameType.WEBTRANSPORT_STREAM and self._enable_webtransport and \
                        st.kind == _REQUEST:
                    if st.frames_seen:
                        raise _FrameUnexpected("WebTransport stream signal after other frames")
                    session = decode_varint(data, p)
                    if session is None:
                        break
                    st.kind = _WT
                    st.session_id = session[0]
                    rest = data[session[1]:]
                    if self._credit_on_consume:
                        st.out += len(rest)
                    if rest or fin:
                        events.append(WebTransportStreamDataReceived(
                            data=rest, stream_id=sid, stream_ended=fin,
                            session_id=session[0]))
                    if fin:
                        st.recv_ended = True
                        self._maybe_forget(st)
                    return
                length = decode_varint(data, p)
                if length is None:
                    break
                pos = length[1]
                if not st.frames_seen:
                    st.frames_seen = True
                    if sid % 4 != 0 and st.kind != _PUSH:
                        raise _StreamCreationError(
                            f"server-initiated bidirectional stream {sid} is not a "
                            "WebTransport stream")
                self._check_request_frame(st, ftype)
                if ftype in (FrameType.HEADERS, FrameType.PUSH_PROMISE) and \
                        length[0] > self._max_headers_frame:
                    raise _ExcessiveLoad(f"frame {ftype:#x} of {length[0]} bytes")
                st.ftype, st.fleft = ftype, length[0]
            ftype = st.ftype
            take = min(n - pos, st.fleft)
            if ftype == FrameType.DATA:
                if take:
                    chunk = data if take == n else data[pos:pos + take]
                    st.received_length += take
                    if self._credit_on_consume:
                        st.out += take
                    events.append(DataReceived(data=chunk, stream_id=sid, stream_ended=False,
                                               push_id=st.push_id))
                    pos += take
                    st.fleft -= take
                if st.fleft:
                    break
                st.ftype = None
            elif ftype == FrameType.HEADERS:
                pos, block = st.collect(data, pos, take)
                if block is None:
                    break
                headers = self._decode_checked(st, block)
                if st.blocked:
                    rest = data[pos:]
                    if rest:
                        st.hold(rest)
                    st.recv_ended = st.recv_ended or fin
                    return
                if headers is not None:
                    self._on_headers(st, headers, events)
                if st.kind == _IGNORED:
                    if fin:
                        st.recv_ended = True
                        self._maybe_forget(st)
                    return
            elif ftype == FrameType.PUSH_PROMISE:  # (a client's request stream)
                pos, payload = st.collect(data, pos, take)
                if payload is None:
                    break
                head = decode_varint(payload, 0)
                if head is None:
                    raise _FrameError(f"PUSH_PROMISE without a push id on stream {sid}")
                push_id = head[0]
                self._check_push_id(push_id, "PUSH_PROMISE")
                headers = self._decode_checked(st, payload[head[1]:])
                if st.blocked:
                    st.blocked_push = push_id
                    rest = data[pos:]
                    if rest:
                        st.hold(rest)
                    st.recv_ended = st.recv_ended or fin
                    return
                if headers is not None:
                    self._on_push_promise(st, push_id, headers, events)
            else:  # unknown (or unused) frame: skip its payload as it arrives
                pos += take
                st.fleft -= take
                if st.fleft:
                    break
                st.ftype = None
        if pos < n:
            st.pending = data[pos:]
        if fin:
            st.recv_ended = True
            self._on_request_end(st, events, start)

    def _check_request_frame(self, st: _Stream, ftype: int) -> None:
        if ftype == FrameType.DATA:
            if st.recv_state != _AFTER_HEADERS:
                raise _FrameUnexpected("DATA frame before HEADERS or after trailers")
        elif ftype == FrameType.HEADERS:
            if st.recv_state == _AFTER_TRAILERS:
                raise _FrameUnexpected("HEADERS frame after trailers")
        elif ftype == FrameType.PUSH_PROMISE:
            if not self._is_client:
                raise _FrameUnexpected("a client sent PUSH_PROMISE")
            if st.kind == _PUSH:
                raise _FrameUnexpected(f"PUSH_PROMISE on push stream {st.stream_id}")
            if self._max_push_id is None:
                raise _IdError("PUSH_PROMISE received but no push id was allowed")
        elif ftype in (FrameType.CANCEL_PUSH, FrameType.SETTINGS, FrameType.GOAWAY,
                       FrameType.MAX_PUSH_ID) or ftype in _RESERVED_FRAME_TYPES:
            raise _FrameUnexpected(f"frame type {ftype:#x} is not allowed on a request stream")
        elif ftype == FrameType.WEBTRANSPORT_STREAM:
            raise _FrameUnexpected("WebTransport stream signal without WebTransport (or on a "
                                   "push stream)")

    def _decode_checked(self, st: _Stream, block: bytes) -> Optional[Headers]:
        """Decode a header block within max_field_section_size.  Returns None when the
        stream is blocked on QPACK (``st.blocked``) or was refused as too large."""
        sid = st.stream_id
        sizes = self._sizes
        cap = 2 * self._max_field_section_size
        if not sizes.small(len(block), cap):
            ric = sizes.required_insert_count(block)
            if ric is not None and ric <= sizes.inserts:
                # every entry it references is known: bound the decoded size before
                # decoding (the bound is at most 8/5 of the real size, from Huffman coding)
                bound = sizes.bound(block, cap)
                if bound is not None and bound > cap:
                    self._reject_headers(st, f"more than {cap}", cancel=ric > 0)
                    return None
        try:
            headers = self._decode(sid, block)
        except pylsqpack.StreamBlocked:
            st.blocked = True
            st.block = block
            return None
        if sizes.small(len(block), self._max_field_section_size):
            return headers  # within the limit whatever it decoded to: no need to count
        return self._check_size(st, headers)

    def _check_size(self, st: _Stream, headers: Headers) -> Optional[Headers]:
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 32
        if size > self._max_field_section_size:
            self._reject_headers(st, str(size), cancel=False)
            return None
        return headers

    def _reject_headers(self, st: _Stream, size: str, cancel: bool) -> None:
        """A header section larger than max_field_section_size: a server answers 431 (if
        nothing was sent yet) and stops the stream; a client closes the connection."""
        reason = (f"header section of {size} bytes on stream {st.stream_id} (limit "
                  f"{self._max_field_section_size})")
        if self._is_client:
            raise _ExcessiveLoad(reason)
        logger.debug("refusing %s", reason)
        if st.recv_state == _INITIAL and st.send_state == _INITIAL and not st.send_ended:
            try:
                self.send_headers(st.stream_id, [(b":status", b"431"),
                                                 (b"content-length", b"0")], end_stream=True)
            except Exception as exc:  # the stream may be stopped already
                logger.debug("cannot answer 431 on stream %d: %s", st.stream_id, exc)
        self._abort(st, ErrorCode.H3_EXCESSIVE_LOAD, cancel=cancel)

    def _refuse(self, st: _Stream, code: int, reason: str) -> None:
        """Excessive load on one stream: a stream error on a server, a connection error on
        a client (whose application would otherwise wait for a response forever)."""
        if self._is_client:
            raise _ExcessiveLoad(reason)
        logger.debug("refusing stream %d: %s", st.stream_id, reason)
        self._abort(st, code, cancel=st.blocked)

    def _decode(self, stream_id: int, block: Optional[bytes]) -> Headers:
        try:
            if block is None:
                decoder_bytes, headers = self._decoder.resume_header(stream_id)
            else:
                decoder_bytes, headers = self._decoder.feed_header(stream_id, block)
        except pylsqpack.DecompressionFailed as exc:
            raise _QpackDecompressionFailed(f"cannot decode headers on stream {stream_id}") \
                from exc
        if decoder_bytes:
            self._send_decoder(decoder_bytes)
        return headers

    def _send_decoder(self, data: bytes) -> None:
        """Queue QPACK decoder instructions (Section Acknowledgment, Stream Cancellation)
        on our decoder stream.  Inside an endpoint's batch of events (the QUIC connection's
        ``_batch_end`` list is set) they are gathered and written once when the batch ends,
        instead of one write here and one event at the peer per header block; outside a
        batch (sans-IO use) they are written at once."""
        self._decoder_bytes_sent += len(data)
        batch = getattr(self._quic, "_batch_end", None)  # stand-ins in tests have none
        if batch is None:
            if self._decoder_pending:
                self._flush_decoder()
            self._quic.send_stream_data(self._local_decoder, data)
            return
        if not self._decoder_pending:
            batch.append(self._flush_decoder)
        self._decoder_pending.append(data)

    def _flush_decoder(self) -> None:
        """Write the decoder instructions gathered during a batch (see _send_decoder); a
        connection that closed meanwhile needs none of them."""
        pending = self._decoder_pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        try:
            self._quic.send_stream_data(self._local_decoder, data)
        except QuicConnectionError:
            pass

    def _on_headers(self, st: _Stream, headers: Headers, events: list[H3Event]) -> None:
        sid = st.stream_id
        try:
            if st.recv_state == _INITIAL:
                if self._is_client:
                    status = _check_response(headers, st)
                    if status[:1] == b"1":
                        st.expected_length = None
                    else:
                        st.recv_state = _AFTER_HEADERS
                        if status in (b"204", b"304"):
                            st.no_body = True
                else:
                    _check_request(headers, st)
                    st.recv_state = _AFTER_HEADERS
                    if sid > self._max_request_seen:
                        self._max_request_seen = sid
                    if self._goaway_sent is not None and sid >= self._goaway_sent:
                        self._abort(st, ErrorCode.H3_REQUEST_REJECTED)
                        return
            else:
                _check_fields(headers, _NO_PSEUDO, None, False)
                st.recv_state = _AFTER_TRAILERS
        except _MessageError:
            if self._is_client:
                raise
            self._abort(st, ErrorCode.H3_MESSAGE_ERROR)
            return
        events.append(HeadersReceived(headers=headers, stream_id=sid, stream_ended=False,
                                      push_id=st.push_id))

    def _cancel_header_block(self, stream_id: int) -> None:
        """Tell the peer's QPACK encoder (Stream Cancellation) that ``stream_id``'s header
        block is abandoned.  Older pylsqpack releases (the one PyPy gets) have no
        ``Decoder.cancel_stream``: then nothing is sent, which only delays the encoder's
        reuse of dynamic-table entries."""
        cancel_stream = getattr(self._decoder, "cancel_stream", None)
        if cancel_stream is not None:
            data = cancel_stream(stream_id)
            if data:
                self._send_decoder(data)

    def ignore_stream(self, stream_id: int) -> None:
        """*(aiopquic)* Drop (and credit) whatever still arrives on a WebTransport stream
        the layer above refused or stopped, instead of reporting it as data again.  Does
        nothing for a stream this layer no longer tracks."""
        st = self._streams.get(stream_id)
        if st is not None and st.kind in (_WT, _WT_UNI):
            st.kind = _IGNORED
            self._settle(st)

    def _abort(self, st: _Stream, code: int, cancel: bool = False) -> None:
        """Stream error: reset and stop the stream, ignore what still arrives on it.
        ``cancel`` tells the peer's QPACK encoder that a header block is abandoned."""
        if cancel:
            self._cancel_header_block(st.stream_id)
        st.kind = _IGNORED
        st.pending = b""
        st.fbuf = b""
        st.ftype = None
        st.blocked = False
        st.block = b""
        st.held = []
        st.held_len = 0
        if not st.send_ended:
            self._quic.reset_stream(st.stream_id, code)
            st.send_ended = True
        if not st.recv_ended:
            self._quic.stop_stream(st.stream_id, code)

    def _on_request_end(self, st: _Stream, events: list[H3Event], start: int) -> None:
        if st.kind == _IGNORED:
            self._maybe_forget(st)
            return
        if st.ftype is not None or st.pending:
            raise _FrameError(f"frame truncated by the end of stream {st.stream_id}")
        if st.recv_state == _INITIAL:
            if self._is_client:
                raise _MessageError(f"response on stream {st.stream_id} ended without a "
                                    "final header section")
            # a request that ended before its headers: nothing to answer
            if not st.send_ended:
                self._quic.reset_stream(st.stream_id, ErrorCode.H3_REQUEST_INCOMPLETE)
                st.send_ended = True
            self._maybe_forget(st)
            return
        if st.expected_length is not None and not st.no_body and \
                st.received_length != st.expected_length:
            if self._is_client:
                raise _MessageError(f"content-length {st.expected_length} but "
                                    f"{st.received_length} bytes received")
            # drop what the application was about to see of this request
            del events[start:]
            self._abort(st, ErrorCode.H3_MESSAGE_ERROR)
            self._maybe_forget(st)
            return
        last = events[-1] if len(events) > start else None
        if isinstance(last, (DataReceived, HeadersReceived)) and last.stream_id == st.stream_id:
            last.stream_ended = True
        else:
            events.append(DataReceived(data=b"", stream_id=st.stream_id, stream_ended=True,
                                       push_id=st.push_id))
        self._maybe_forget(st)

    # ---- unidirectional streams

    def _recv_uni(self, st: _Stream, data: bytes, fin: bool, events: list[H3Event]) -> None:
        if st.pending:
            data = st.pending + data
            st.pending = b""
        pos = 0
        if st.kind is None:
            head = decode_varint(data, 0)
            if head is None:
                st.pending = data
                if fin:
                    st.recv_ended = True
                    self._maybe_forget(st)
                return
            stream_type, pos = head
            self._assign_uni(st, stream_type)
        kind = st.kind
        if kind == _CONTROL:
            if fin:
                raise _ClosedCriticalStream("the peer closed its control stream")
            self._recv_control(st, data, pos, events)
            return
        if kind == _ENCODER or kind == _DECODER:
            if fin:
                raise _ClosedCriticalStream("the peer closed a QPACK stream")
            chunk = data[pos:] if pos else data
            if not chunk:
                return
            if kind == _DECODER:
                self._decoder_bytes_received += len(chunk)
                try:
                    self._encoder.feed_decoder(chunk)
                except pylsqpack.DecoderStreamError as exc:
                    raise _QpackDecoderStreamError("bad QPACK decoder stream data") from exc
            else:
                self._encoder_bytes_received += len(chunk)
                self._sizes.feed(chunk)  # entry sizes, for the field section size bound
                try:
                    unblocked = self._decoder.feed_encoder(chunk)
                except pylsqpack.EncoderStreamError as exc:
                    raise _QpackEncoderStreamError("bad QPACK encoder stream data") from exc
                for stream_id in unblocked:
                    self._resume(stream_id, events)
            return
        if kind == _PUSH:
            head = decode_varint(data, pos)
            if head is None:
                st.pending = data[pos:]
                if fin:  # ended before its push id: nothing to report
                    st.pending = b""
                    st.recv_ended = True
                    self._maybe_forget(st)
                return
            self._on_push_stream(st, head[0])
            rest = data[head[1]:]
            if st.kind == _IGNORED:
                pass
            elif st.waiting:
                self._hold(st, rest, fin)
                return
            else:
                self._recv_request(st, rest, fin, events)
                return
        if kind == _WT_UNI:
            if st.session_id is None:
                head = decode_varint(data, pos)
                if head is None:
                    st.pending = data[pos:]
                    if fin:
                        st.recv_ended = True
                        self._maybe_forget(st)
                    return
                st.session_id, pos = head
            chunk = data[pos:] if pos else data
            if self._credit_on_consume:
                st.out += len(chunk)
            if chunk or fin:
                events.append(WebTransportStreamDataReceived(
                    data=chunk, stream_id=st.stream_id, stream_ended=fin,
                    session_id=st.session_id))
        if fin:
            st.recv_ended = True
            self._maybe_forget(st)

    def _assign_uni(self, st: _Stream, stream_type: int) -> None:
        sid = st.stream_id
        if stream_type == StreamType.CONTROL:
            if self._peer_control is not None:
                raise _StreamCreationError("a second control stream")
            self._peer_control = sid
            st.kind = _CONTROL
        elif stream_type == StreamType.QPACK_ENCODER:
            if self._peer_encoder is not None:
                raise _StreamCreationError("a second QPACK encoder stream")
            self._peer_encoder = sid
            st.kind = _ENCODER
        elif stream_type == StreamType.QPACK_DECODER:
            if self._peer_decoder is not None:
                raise _StreamCreationError("a second QPACK decoder stream")
            self._peer_decoder = sid
            st.kind = _DECODER
        elif stream_type == StreamType.PUSH:
            if not self._is_client:
                raise _StreamCreationError("a client opened a push stream")
            st.kind = _PUSH
            st.send_ended = True  # a receive-only stream
        elif stream_type == StreamType.WEBTRANSPORT and self._enable_webtransport:
            st.kind = _WT_UNI
        else:
            # unknown (or reserved) stream type: abort reading, discard (RFC 9114 6.2)
            st.kind = _IGNORED
            self._quic.stop_stream(sid, ErrorCode.H3_STREAM_CREATION_ERROR)

    # ---- server push (client side, and CANCEL_PUSH both ways)

    def _check_push_id(self, push_id: int, what: str) -> None:
        """A push id a server sent must be one we granted (RFC 9114 sections 4.6, 7.2.7)."""
        if self._max_push_id is None or push_id > self._max_push_id:
            granted = "no push id" if self._max_push_id is None else \
                f"push ids up to {self._max_push_id}"
            raise _IdError(f"{what} with push id {push_id}, but we granted {granted}")

    def _on_push_stream(self, st: _Stream, push_id: int) -> None:
        self._check_push_id(push_id, "push stream")
        if push_id in self._push_streams:
            raise _IdError(f"push id {push_id} used by two push streams "
                           f"({self._push_streams[push_id]} and {st.stream_id})")
        self._push_streams[push_id] = st.stream_id
        st.push_id = push_id
        if push_id in self._push_cancelled:
            self._drop_push(st)
        elif push_id not in self._promises:
            st.waiting = True  # held (without credit) until the PUSH_PROMISE arrives

    def _drop_push(self, st: _Stream) -> None:
        """Stop reading a cancelled push stream; what still arrives is discarded."""
        st.waiting = False
        self._abort(st, ErrorCode.H3_REQUEST_CANCELLED, cancel=st.blocked)
        self._maybe_forget(st)
        self._settle(st)

    def _on_push_promise(self, st: _Stream, push_id: int, headers: Headers,
                         events: list[H3Event]) -> None:
        pseudo = _check_fields(headers, _PROMISE_PSEUDO, None, True)
        for name in _PROMISE_PSEUDO:
            if not pseudo.get(name):
                raise _MessageError(f"PUSH_PROMISE {push_id} without {name.decode()}")
        digest = hashlib.sha256(repr(headers).encode()).digest()
        known = self._promises.get(push_id)
        if known is not None:
            if known != digest:
                raise _ProtocolError(f"PUSH_PROMISE {push_id} repeated with other headers")
            return  # the same promise on another request stream: reported once
        self._promises[push_id] = digest
        events.append(PushPromiseReceived(headers=headers, push_id=push_id,
                                          stream_id=st.stream_id))
        push = self._push_stream_of(push_id)
        if push is not None and push.waiting:
            push.waiting = False
            data = b"".join(push.held)
            push.held = []
            push.held_len = 0
            self._recv_request(push, data, push.recv_ended, events)
            self._settle(push)

    def _push_stream_of(self, push_id: int) -> Optional[_Stream]:
        """The push stream carrying ``push_id`` while this layer tracks it, else None."""
        push_sid = self._push_streams.get(push_id)
        return self._streams.get(push_sid) if push_sid is not None else None

    def _withdraw_push(self, push_id: int) -> None:
        """Server: a promised push is cancelled (by us or by the client): reset its stream
        with H3_REQUEST_CANCELLED unless it already ended."""
        st = self._push_stream_of(push_id)
        if st is not None and not st.send_ended:
            self._quic.reset_stream(st.stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            st.send_ended = True
            self._maybe_forget(st)

    def _on_cancel_push(self, push_id: int) -> None:
        if not self._is_client:
            if push_id >= self._next_push_id:
                raise _IdError(f"CANCEL_PUSH for push id {push_id}, which was never promised")
            self._withdraw_push(push_id)
            return
        self._check_push_id(push_id, "CANCEL_PUSH")
        self._push_cancelled.add(push_id)
        st = self._push_stream_of(push_id)
        if st is not None and st.waiting:
            self._drop_push(st)

    def _recv_control(self, st: _Stream, data: bytes, pos: int,
                      events: list[H3Event]) -> None:
        n = len(data)
        while True:
            if st.ftype is None:
                if pos >= n:
                    break
                head = decode_varint(data, pos)
                if head is None:
                    break
                length = decode_varint(data, head[1])
                if length is None:
                    break
                ftype, pos = head[0], length[1]
                self._check_control_frame(ftype)
                if ftype in (FrameType.SETTINGS, FrameType.GOAWAY, FrameType.MAX_PUSH_ID,
                             FrameType.CANCEL_PUSH) and length[0] > _MAX_CONTROL_FRAME:
                    raise _ExcessiveLoad(f"control frame {ftype:#x} of {length[0]} bytes")
                st.ftype, st.fleft = ftype, length[0]
            ftype = st.ftype
            take = min(n - pos, st.fleft)
            if ftype in (FrameType.SETTINGS, FrameType.GOAWAY, FrameType.MAX_PUSH_ID,
                         FrameType.CANCEL_PUSH):
                pos, payload = st.collect(data, pos, take)
                if payload is None:
                    break
                self._on_control_frame(ftype, payload, events)
            else:
                pos += take
                st.fleft -= take
                if st.fleft:
                    break
                st.ftype = None
        if pos < n:
            st.pending = data[pos:]

    def _check_control_frame(self, ftype: int) -> None:
        if self._received_settings is None:
            if ftype != FrameType.SETTINGS:
                raise _MissingSettings(f"first control frame is {ftype:#x}, not SETTINGS")
            return
        if ftype == FrameType.SETTINGS:
            raise _FrameUnexpected("a second SETTINGS frame")
        if ftype in (FrameType.DATA, FrameType.HEADERS, FrameType.PUSH_PROMISE,
                     FrameType.WEBTRANSPORT_STREAM) or ftype in _RESERVED_FRAME_TYPES:
            raise _FrameUnexpected(f"frame type {ftype:#x} is not allowed on the control "
                                   "stream")
        if ftype == FrameType.MAX_PUSH_ID and self._is_client:
            raise _FrameUnexpected("a server sent MAX_PUSH_ID")

    def _on_control_frame(self, ftype: int, payload: bytes, events: list[H3Event]) -> None:
        if ftype == FrameType.SETTINGS:
            settings = _parse_settings(payload)
            for ident in _BOOLEAN_SETTINGS:
                if settings.get(ident, 0) > 1:
                    raise _SettingsError(f"setting {ident:#x} must be 0 or 1")
            if settings.get(Setting.H3_DATAGRAM) == 1 and getattr(
                    self._quic, "handshake_complete", False) and not getattr(
                    self._quic, "_peer_max_datagram", 1):
                raise _SettingsError("H3_DATAGRAM=1 without the max_datagram_frame_size "
                                     "transport parameter")
            self._received_settings = settings
            encoder_bytes = self._encoder.apply_settings(
                max_table_capacity=settings.get(Setting.QPACK_MAX_TABLE_CAPACITY, 0),
                blocked_streams=settings.get(Setting.QPACK_BLOCKED_STREAMS, 0))
            if encoder_bytes:
                self._quic.send_stream_data(self._local_encoder, encoder_bytes)
                self._encoder_bytes_sent += len(encoder_bytes)
        elif ftype == FrameType.GOAWAY:
            goaway_id = _parse_single_varint(payload, "GOAWAY")
            if self._is_client and goaway_id % 4 != 0:
                raise _IdError(f"GOAWAY with stream id {goaway_id}, not a client bidirectional "
                               "stream")
            if self._goaway_received is not None and goaway_id > self._goaway_received:
                raise _IdError(f"GOAWAY goaway_idifier increased ({self._goaway_received} -> "
                               f"{goaway_id})")
            self._goaway_received = goaway_id
            events.append(GoawayReceived(stream_id=goaway_id))
        elif ftype == FrameType.MAX_PUSH_ID:  # (a server: _check_control_frame)
            max_push_id = _parse_single_varint(payload, "MAX_PUSH_ID")
            if self._peer_max_push_id is not None and max_push_id < self._peer_max_push_id:
                raise _IdError(f"MAX_PUSH_ID reduced ({self._peer_max_push_id} -> "
                               f"{max_push_id})")
            self._peer_max_push_id = max_push_id
        elif ftype == FrameType.CANCEL_PUSH:
            self._on_cancel_push(_parse_single_varint(payload, "CANCEL_PUSH"))

    def _resume(self, stream_id: int, events: list[H3Event]) -> None:
        st = self._streams.get(stream_id)
        if st is None or not st.blocked:
            return
        start = len(events)
        block, st.block = st.block, b""
        cap = 2 * self._max_field_section_size
        bound = self._sizes.bound(block, cap)
        if bound is not None and bound > cap:
            self._reject_headers(st, f"more than {cap}", cancel=True)
        else:
            st.blocked = False
            headers = self._check_size(st, self._decode(stream_id, None))
            push_id, st.blocked_push = st.blocked_push, None
            if headers is not None:
                if push_id is not None:
                    self._on_push_promise(st, push_id, headers, events)
                else:
                    self._on_headers(st, headers, events)
        if st.kind == _IGNORED:
            st.held = []
            st.held_len = 0
            if st.recv_ended:
                self._maybe_forget(st)
            self._settle(st)
            return
        data = b"".join(st.held)
        st.held = []
        st.held_len = 0
        self._recv_request(st, data, st.recv_ended, events, start)
        self._settle(st)
