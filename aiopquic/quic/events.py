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
    "WebTransportSessionReady",
    "WebTransportSessionRefused",
    "WebTransportSessionClosed",
    "WebTransportSessionDraining",
    "WebTransportStreamDataReceived",
    "WebTransportStreamReset",
    "WebTransportStopSending",
    "WebTransportDatagramReceived",
    "WebTransportNewStream",
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


# ---- WebTransport events of aiopquic 0.6.1's API ---------------------------------------
# aiopquic.asyncio.webtransport's 0.6.1-style sessions (WebTransportClient,
# WebTransportServerSession) put these in their events() / receive_stream_data() streams.
# Field order and defaults are 0.6.1's; ``data`` and ``reason`` are bytes here (0.6.1 gave
# memoryviews: ``bytes(x)`` works with both).  Unlike the QUIC events above they have
# defaults (0.6.1 code builds them with keywords) and so no __slots__.


@dataclass
class WebTransportSessionReady(QuicEvent):
    """The server accepted the session (2xx to the CONNECT)."""



@dataclass
class WebTransportSessionRefused(QuicEvent):
    """The session request was refused: ``error_code`` is the server's HTTP status, or
    WT_ALPN_ERROR (0x0817b3dd) when it was refused for its WT-Available-Protocols (a 400 to
    an offer), or 0 when the request ended without an answer."""


    error_code: int = 0
    "The HTTP status or WT_ALPN_ERROR (see above)."


@dataclass
class WebTransportSessionClosed(QuicEvent):
    """The session closed (CLOSE_WEBTRANSPORT_SESSION from either side, or the end of the
    CONNECT stream)."""


    error_code: int = 0
    "The application error code of the close."

    reason: bytes = b""
    "The close reason (UTF-8)."


@dataclass
class WebTransportSessionDraining(QuicEvent):
    """The peer sent DRAIN_WEBTRANSPORT_SESSION."""



@dataclass
class WebTransportStreamDataReceived(QuicEvent):
    """Bytes of a WebTransport stream (its header stripped)."""


    stream_id: int = 0
    "The stream."

    data: bytes = b""
    "The bytes."

    end_stream: bool = False
    "Whether the peer ended the stream with these bytes."


@dataclass
class WebTransportStreamReset(QuicEvent):
    """The peer reset a WebTransport stream (or the session ended: WT_SESSION_GONE)."""


    stream_id: int = 0
    "The stream."

    error_code: int = 0
    "The WebTransport code (32-bit), or the HTTP/3 code when outside that range."


@dataclass
class WebTransportStopSending(QuicEvent):
    """The peer sent STOP_SENDING on a WebTransport stream."""


    stream_id: int = 0
    "The stream."

    error_code: int = 0
    "The WebTransport code (32-bit), or the HTTP/3 code when outside that range."


@dataclass
class WebTransportDatagramReceived(QuicEvent):
    """A datagram of the session."""


    data: bytes = b""
    "The payload."


@dataclass
class WebTransportNewStream(QuicEvent):
    """The peer opened a WebTransport stream (``stream_id``)."""


    stream_id: int = 0
    "The new stream."
