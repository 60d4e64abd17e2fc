"""HTTP/3 events returned by :meth:`H3Connection.handle_event`.

Class names, field names and field order are aioquic's (:mod:`aioquic.h3.events`), so code
written against aioquic's ``H3Connection`` handles them unchanged.  :class:`GoawayReceived`
is an aiopquic addition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = [
    "Headers",
    "H3Event",
    "DataReceived",
    "DatagramReceived",
    "GoawayReceived",
    "HeadersReceived",
    "PushPromiseReceived",
    "WebTransportStreamDataReceived",
]

Headers = list[tuple[bytes, bytes]]
"""A header list: ``[(name, value), ...]`` as bytes, pseudo-headers (``:method`` ...) first."""


class H3Event:
    """Base class for HTTP/3 events."""


@dataclass
class DataReceived(H3Event):
    """Body bytes (the payload of DATA frames) arrived on a request or response stream."""

    data: bytes
    "The data which was received."

    stream_id: int
    "The ID of the stream the data was received for."

    stream_ended: bool
    "Whether the peer ended the stream (nothing follows on it)."

    push_id: Optional[int] = None
    "The Push ID of a pushed response (``stream_id`` is its push stream), else ``None``."


@dataclass
class DatagramReceived(H3Event):
    """An HTTP/3 datagram (RFC 9297) arrived; ``stream_id`` is the request stream it belongs
    to (for WebTransport: the session id)."""

    data: bytes
    "The data which was received."

    stream_id: int
    "The ID of the stream the data was received for."


@dataclass
class GoawayReceived(H3Event):
    """*(aiopquic)* The peer sent GOAWAY: it will not process requests (server's GOAWAY) with
    stream ids at or above ``stream_id``; new requests must use a new connection."""

    stream_id: int
    "The identifier carried by the GOAWAY frame."


@dataclass
class HeadersReceived(H3Event):
    """A header section arrived: request or response headers, or trailers (a second
    section after the body)."""

    headers: Headers
    "The headers."

    stream_id: int
    "The ID of the stream the headers were received for."

    stream_ended: bool
    "Whether the peer ended the stream (nothing follows on it)."

    push_id: Optional[int] = None
    "The Push ID of a pushed response (``stream_id`` is its push stream), else ``None``."


@dataclass
class PushPromiseReceived(H3Event):
    """A server promised a push (client side): the pushed response follows as
    ``HeadersReceived`` / ``DataReceived`` with this ``push_id``.  Emitted once per push
    id."""

    headers: Headers
    "The request headers."

    push_id: int
    "The Push ID of the push promise."

    stream_id: int
    "The Stream ID of the stream that the push is related to."


@dataclass
class WebTransportStreamDataReceived(H3Event):
    """Bytes arrived on a WebTransport stream (bidirectional or unidirectional) of the session
    ``session_id``; the stream's WebTransport header is already stripped."""

    data: bytes
    "The data which was received."

    stream_id: int
    "The ID of the stream the data was received for."

    stream_ended: bool
    "Whether the peer ended the stream."

    session_id: int
    "The ID of the session the data was received for (its CONNECT stream id)."
