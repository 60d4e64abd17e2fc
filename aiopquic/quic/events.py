"""Events reported by a QUIC connection.

The class names, field names and field order are exactly aioquic's
(:mod:`aioquic.quic.events`), so code written against aioquic's
``quic_event_received(event)`` works unchanged.  ``data`` fields are :class:`bytes`, as in
aioquic.

The classes define ``__slots__`` (many ``StreamDataReceived`` events are created on a busy
connection); setting attributes that are not fields raises :class:`AttributeError`.
"""

from dataclasses import dataclass
from typing import Optional

__all__ = [
    "QuicEvent",
    "ConnectionIdIssued",
    "ConnectionIdRetired",
    "ConnectionTerminated",
    "DatagramFrameReceived",
    "HandshakeCompleted",
    "PingAcknowledged",
    "ProtocolNegotiated",
    "StopSendingReceived",
    "StreamDataReceived",
    "StreamReset",
]


@dataclass
class QuicEvent:
    """Base class for QUIC events."""

    __slots__ = ()


@dataclass
class ConnectionIdIssued(QuicEvent):
    """A new local connection ID was issued to the peer."""

    __slots__ = ("connection_id",)

    connection_id: bytes
    "The connection ID which was issued."


@dataclass
class ConnectionIdRetired(QuicEvent):
    """A local connection ID was retired by the peer."""

    __slots__ = ("connection_id",)

    connection_id: bytes
    "The connection ID which was retired."


@dataclass
class ConnectionTerminated(QuicEvent):
    """The QUIC connection is terminated (closed by either side, idle timeout or error)."""

    __slots__ = ("error_code", "frame_type", "reason_phrase")

    error_code: int
    "The error code which was specified when closing the connection."

    frame_type: Optional[int]
    "The frame type which caused the connection to be closed, or ``None``."

    reason_phrase: str
    "The human-readable reason for which the connection was closed."


@dataclass
class DatagramFrameReceived(QuicEvent):
    """A DATAGRAM frame was received."""

    __slots__ = ("data",)

    data: bytes
    "The data which was received."


@dataclass
class HandshakeCompleted(QuicEvent):
    """The TLS handshake completed."""

    __slots__ = ("alpn_protocol", "early_data_accepted", "session_resumed")

    alpn_protocol: Optional[str]
    "The protocol which was negotiated using ALPN, or ``None``."

    early_data_accepted: bool
    "Whether early (0-RTT) data was accepted by the remote peer."

    session_resumed: bool
    "Whether a TLS session was resumed."


@dataclass
class PingAcknowledged(QuicEvent):
    """A PING frame sent with :meth:`QuicConnection.send_ping` was acknowledged."""

    __slots__ = ("uid",)

    uid: int
    "The unique ID of the PING."


@dataclass
class ProtocolNegotiated(QuicEvent):
    """ALPN negotiation completed."""

    __slots__ = ("alpn_protocol",)

    alpn_protocol: Optional[str]
    "The protocol which was negotiated using ALPN, or ``None``."


@dataclass
class StopSendingReceived(QuicEvent):
    """The peer asked us to stop sending on a stream (STOP_SENDING frame)."""

    __slots__ = ("error_code", "stream_id")

    error_code: int
    "The error code that was sent from the peer."

    stream_id: int
    "The ID of the stream that the peer requested stopping data transmission."


@dataclass
class StreamDataReceived(QuicEvent):
    """Data was received on a stream."""

    __slots__ = ("data", "end_stream", "stream_id")

    data: bytes
    "The data which was received."

    end_stream: bool
    "Whether the STREAM frame had the FIN bit set."

    stream_id: int
    "The ID of the stream the data was received for."


@dataclass
class StreamReset(QuicEvent):
    """The peer reset a stream (RESET_STREAM frame)."""

    __slots__ = ("error_code", "stream_id")

    error_code: int
    "The error code that triggered the reset."

    stream_id: int
    "The ID of the stream that was reset."
