"""HTTP/3 and WebTransport for anyio (asyncio and trio backends).

A thin adapter over the sans-IO layers that the asyncio API uses too
(:class:`~aiopquic.h3.webtransport.WebTransportConnection` over
:class:`~aiopquic.h3.connection.H3Connection`): this module only moves their events to
anyio tasks and waits where they say "not now".

Server::

    async def handler(request: Request) -> None:
        body = await request.read()
        await request.respond(200, [(b"content-type", b"text/plain")], b"got " + body)

    async def echo(session: WebTransportSession) -> None:
        async for stream in session:
            ...

    await serve_http3("127.0.0.1", 4433, configuration=cfg, handler=handler,
                      webtransport_handler=echo)

Client::

    async with connect_http3("127.0.0.1", 4433, configuration=cfg) as http:
        response = await http.request("GET", "/")
    async with connect_webtransport("https://127.0.0.1:4433/echo",
                                    configuration=cfg) as session:
        stream = await session.open_stream()

Receive credit follows the application at every layer: request and response bodies and
WebTransport stream payload are credited to the peer as :meth:`Request.receive`,
:meth:`Response.receive` and :meth:`WebTransportStream.receive` return them.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Callable, Optional, Union
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream, TaskGroup, TaskStatus
from anyio.lowlevel import checkpoint

from aiopquic.anyio._connection import (
    DATAGRAM_BACKLOG,
    H3_NO_ERROR,
    Connection,
    ConnectionClosedError,
    StreamResetError,
    StreamStoppedError,
    _Signal,
)
from aiopquic.anyio.client import check_client_arguments, open_connection
from aiopquic.anyio.server import Server, create_listener
from aiopquic.h3.connection import ErrorCode
from aiopquic.h3.events import DataReceived, Headers, HeadersReceived
from aiopquic.h3.webtransport import (
    SessionClosed,
    SessionDatagram,
    SessionDraining,
    SessionEstablished,
    SessionRefused,
    SessionRequested,
    StreamData,
    StreamFinished,
    StreamOpened,
    StreamResetByPeer,
    StreamStopped,
    WebTransportConnection,
    h3_configuration,
)
from aiopquic.quic._checks import check_buffer, check_int
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnectionError, StreamStateError
from aiopquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    StopSendingReceived,
    StreamReset,
)

__all__ = [
    "HTTP3Connection",
    "Request",
    "RequestHandler",
    "Response",
    "WebTransportHandler",
    "WebTransportRejected",
    "WebTransportSession",
    "WebTransportSessionClosed",
    "WebTransportStream",
    "connect_http3",
    "connect_webtransport",
    "create_http3_listener",
    "http3_handler",
    "serve_http3",
]

_log = logging.getLogger("aiopquic.anyio")

#: Peer streams of one WebTransport session waiting for :meth:`WebTransportSession.
#: accept_stream`; past this, new ones are refused (WT_BUFFERED_STREAM_REJECTED).
STREAM_BACKLOG = 256
#: Requests and session requests of one connection waiting for a handler task.
REQUEST_BACKLOG = 1024
#: Largest body :meth:`Request.read` / :meth:`Response.read` return by default.
MAX_READ = 64 * 1024 * 1024
#: Seconds a session we closed waits for the peer to end its CONNECT stream before its
#: streams are reset anyway.
CLOSE_GRACE = 3.0

RequestHandler = Callable[["Request"], Awaitable[object]]
WebTransportHandler = Callable[["WebTransportSession"], Awaitable[object]]
_Bytes = Union[bytes, bytearray, memoryview]
_HeaderSeq = Sequence[tuple[bytes, bytes]]


class WebTransportSessionClosed(anyio.BrokenResourceError):
    """The WebTransport session was closed with a non-zero code (by either side), or its
    connection went away.  ``code`` and ``reason`` are those of the close."""

    def __init__(self, code: int, reason: str, by_peer: bool) -> None:
        who = "the peer" if by_peer else "us"
        super().__init__(f"WebTransport session closed by {who} with code {code}"
                         + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason
        self.by_peer = by_peer


class WebTransportRejected(ConnectionError):
    """The server answered a WebTransport session request with a non-2xx status (``status``
    0: the request stream ended without an answer)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"WebTransport session refused (HTTP {status}): {reason}"
                         if reason else f"WebTransport session refused (HTTP {status})")
        self.status = status
        self.reason = reason


def _header(headers: Headers, name: bytes) -> Optional[bytes]:
    for key, value in headers:
        if key == name:
            return value
    return None


class _Inbox:
    """Bytes received on one stream, handed out as the application reads them; the credit
    of each byte goes back to the peer when it is handed out (or dropped)."""

    __slots__ = ("chunks", "nbytes", "fin", "reset", "closed", "signal", "_credit")

    def __init__(self, credit: Callable[[int], None]) -> None:
        self.chunks: deque[bytes] = deque()
        self.nbytes = 0
        self.fin = False
        self.reset: Optional[int] = None
        self.closed = False  # locally: stop_sending() / aclose()
        self.signal = _Signal()
        self._credit = credit

    def push(self, data: bytes, fin: bool) -> None:
        if data:
            if self.closed or self.reset is not None:
                self._credit(len(data))
            else:
                self.chunks.append(data)
                self.nbytes += len(data)
        if fin:
            self.fin = True
        self.signal.fire()

    def on_reset(self, code: int) -> None:
        self.reset = code
        self.drop()
        self.signal.fire()

    def drop(self) -> None:
        n = self.nbytes
        self.chunks.clear()
        self.nbytes = 0
        if n:
            self._credit(n)

    def take(self, max_bytes: int) -> bytes:
        chunk = self.chunks[0]
        if len(chunk) <= max_bytes:
            self.chunks.popleft()
            data = chunk
        else:
            data = chunk[:max_bytes]
            self.chunks[0] = chunk[max_bytes:]
        self.nbytes -= len(data)
        self._credit(len(data))
        return data

    @property
    def done(self) -> bool:
        return self.fin or self.reset is not None or self.closed

    async def receive(self, stream_id: int, max_bytes: int,
                      gone: Callable[[], Optional[BaseException]]) -> bytes:
        """What both kinds of stream do in ``receive()``: bytes first, then the end (FIN:
        :class:`anyio.EndOfStream`, reset: :class:`StreamResetError`), then ``gone()``'s
        exception once what carries the stream (connection, session) has ended."""
        max_bytes = check_int("max_bytes", max_bytes, 1, 1 << 63, high_text="2**63")
        while True:
            if self.closed:
                raise anyio.ClosedResourceError
            if self.reset is not None:
                raise StreamResetError(stream_id, self.reset)
            if self.chunks:
                data = self.take(max_bytes)
                await checkpoint()
                return data
            if self.fin:
                raise anyio.EndOfStream
            error = gone()
            if error is not None:
                raise error
            await self.signal.wait()


# ---------------------------------------------------------------------- the connection


class _H3Connection(Connection):
    """An anyio :class:`Connection` whose QUIC events go through the sans-IO HTTP/3 and
    WebTransport layers instead of becoming raw streams."""

    def __init__(self, quic: Any, endpoint: Any, local_host: str = "0.0.0.0", *,
                 webtransport: bool = True,
                 protocols: Optional[list[str]] = None) -> None:
        super().__init__(quic, endpoint, local_host)
        self.wt = WebTransportConnection(quic, enable_webtransport=webtransport,
                                         supported_protocols=protocols)
        self.exchanges: dict[int, _Exchange] = {}
        self.sessions: dict[int, WebTransportSession] = {}
        self.wt_streams: dict[int, WebTransportStream] = {}
        self.incoming: deque[Union[Request, WebTransportSession]] = deque()
        self.refused_requests = 0
        self._settings_seen = False
        self._expire_group: Optional[TaskGroup] = None  # runs the session-close timers

    def _schedule_expire(self, session_id: int) -> None:
        group = self._expire_group
        if group is not None:
            group.start_soon(self._expire_later, session_id)

    async def _expire_later(self, session_id: int) -> None:
        await anyio.sleep(CLOSE_GRACE)
        if self._quic.closed:
            return
        try:
            self.wt.expire_close(session_id)
        except Exception:  # a timer of ours must never take the connection down
            _log.warning("resetting the streams of closed WebTransport session %d failed",
                         session_id, exc_info=True)

    # -- pumping

    def _on_events(self) -> None:
        quic = self._quic
        while True:
            event = quic.next_event()
            if event is None:
                break
            if isinstance(event, HandshakeCompleted):
                self._connected = True
                self._signal.fire()
            elif isinstance(event, StreamReset):
                exchange = self.exchanges.get(event.stream_id)
                if exchange is not None:
                    exchange._inbox.on_reset(event.error_code)
                    self._maybe_forget_exchange(exchange)
            elif isinstance(event, StopSendingReceived):
                exchange = self.exchanges.get(event.stream_id)
                if exchange is not None:
                    exchange._stopped = event.error_code
                    exchange._sent.fire()
            for h3_event in self.wt.handle_event(event):
                self._dispatch(h3_event)
            if isinstance(event, ConnectionTerminated):
                self._wake_all()
        quic._take_finished_streams()  # nothing to forget here: the layers track streams
        if not self._settings_seen and self.wt.settings_received:
            self._settings_seen = True
            self._signal.fire()

    def _wake_all(self) -> None:
        super()._wake_all()
        for exchange in self.exchanges.values():
            exchange._inbox.signal.fire()
            exchange._sent.fire()
        for session in self.sessions.values():
            session._signal.fire()
        for stream in self.wt_streams.values():
            stream._inbox.signal.fire()

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, StreamData):
            stream = self.wt_streams.get(event.stream_id)
            if stream is None:
                if event.data:
                    self.wt.consumed(event.stream_id, len(event.data),
                                     session_id=event.session_id)
                return
            stream._inbox.push(event.data, event.ended)
        elif isinstance(event, (HeadersReceived, DataReceived)):
            self._on_exchange_event(event)
        elif isinstance(event, StreamOpened):
            session = self.sessions.get(event.session_id)
            if session is None:
                return
            if len(session._accept) >= STREAM_BACKLOG or session._closing:
                session.streams_refused += 1
                self.wt.refuse_stream(event.stream_id)
                return
            stream = WebTransportStream(session, event.stream_id, readable=True,
                                        writable=event.bidirectional)
            self.wt_streams[event.stream_id] = stream
            session._accept.append(stream)
            session._signal.fire()
        elif isinstance(event, StreamResetByPeer):
            stream = self.wt_streams.get(event.stream_id)
            if stream is not None:
                stream._inbox.on_reset(event.error_code if event.error_code is not None
                                       else event.http3_code)
        elif isinstance(event, StreamStopped):
            stream = self.wt_streams.get(event.stream_id)
            if stream is not None:
                stream._stopped = event.error_code if event.error_code is not None \
                    else event.http3_code
                stream._inbox.signal.fire()
        elif isinstance(event, StreamFinished):
            self.wt_streams.pop(event.stream_id, None)
        elif isinstance(event, SessionDatagram):
            session = self.sessions.get(event.session_id)
            if session is not None:
                session._on_datagram(event.data)
        elif isinstance(event, SessionClosed):
            session = self.sessions.get(event.session_id)
            for stream_id in event.streams:
                stream = self.wt_streams.pop(stream_id, None)
                if stream is not None:
                    stream._on_session_gone()
            if session is not None:
                session._on_closed(event)
        elif isinstance(event, SessionDraining):
            session = self.sessions.get(event.session_id)
            if session is not None:
                session.draining = True
                session._signal.fire()
        elif isinstance(event, SessionRequested):
            session = WebTransportSession(self, event.session_id, event.path, event.headers,
                                          self.wt.session_protocol(event.session_id))
            if len(self.incoming) >= REQUEST_BACKLOG:
                self.refused_requests += 1
                self.wt.reject_session(event.session_id, 503)
                return
            self.sessions[event.session_id] = session
            self.incoming.append(session)
            self._signal.fire()
        elif isinstance(event, (SessionEstablished, SessionRefused)):
            session = self.sessions.get(event.session_id)
            if session is not None:
                session._on_answer(event)

    def _on_exchange_event(self, event: Union[HeadersReceived, DataReceived]) -> None:
        stream_id = event.stream_id
        exchange = self.exchanges.get(stream_id)
        if isinstance(event, HeadersReceived):
            if exchange is None:
                if self._quic.configuration.is_client:
                    return  # a response to a request we gave up
                if len(self.incoming) >= REQUEST_BACKLOG or self._local_close:
                    self.refused_requests += 1
                    self._refuse_request(stream_id)
                    return
                request = Request(self, stream_id, event.headers)
                self.exchanges[stream_id] = request
                self.incoming.append(request)
                self._signal.fire()
                exchange = request
            else:
                exchange._on_headers(event.headers)
            if event.stream_ended:
                exchange._inbox.push(b"", True)
                self._maybe_forget_exchange(exchange)
            return
        if exchange is None:
            if event.data:
                self.wt.consumed(stream_id, len(event.data))
            return
        exchange._inbox.push(event.data, event.stream_ended)
        if event.stream_ended:
            self._maybe_forget_exchange(exchange)

    def _refuse_request(self, stream_id: int) -> None:
        try:
            self._quic.stop_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            self._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
        except (QuicConnectionError, StreamStateError):
            pass

    def _maybe_forget_exchange(self, exchange: _Exchange) -> None:
        if exchange._inbox.done and exchange._send_done and \
                self.exchanges.get(exchange.stream_id) is exchange:
            del self.exchanges[exchange.stream_id]

    # -- sending with backpressure

    async def wait_drained(self, stream_id: int) -> None:
        """Wait while ``stream_id``'s bytes queued past its send ring are not gone yet."""
        while not self._quic.closed:
            event = anyio.Event()
            if not self.wt.add_drain_waiter(stream_id, event.set):
                return
            await event.wait()

    def closed_error(self) -> BaseException:
        if self._local_close:
            return anyio.ClosedResourceError()
        return self._closed_error()


def _credit(conn: _H3Connection, stream_id: int, nbytes: int) -> None:
    if not conn._quic.closed:
        conn.wt.consumed(stream_id, nbytes)


class _Exchange:
    """What a server request and a client response share: a received body, sending with
    backpressure, a stream reset by the peer."""

    def __init__(self, conn: _H3Connection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        """The QUIC stream of the request."""
        self._inbox = _Inbox(functools.partial(_credit, conn, stream_id))
        self._sent = _Signal()
        self._send_done = False
        self._stopped: Optional[int] = None
        self.trailers: Headers = []
        """Trailers received after the body (empty when there were none)."""

    def _on_headers(self, headers: Headers) -> None:
        self.trailers = list(headers)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """The next body bytes (at most ``max_bytes``), waiting for some if needed.

        Raises :class:`anyio.EndOfStream` at the end of the body,
        :class:`~aiopquic.anyio.StreamResetError` when the peer reset the stream,
        :class:`~aiopquic.anyio.ConnectionClosedError` when the connection closed first
        (bytes received before are returned first, so a cut body never looks complete)."""
        conn = self._conn

        def gone() -> Optional[BaseException]:
            if conn._quic.closed or conn._local_close:
                return conn.closed_error()
            return None

        return await self._inbox.receive(self.stream_id, max_bytes, gone)

    async def read(self, limit: int = MAX_READ) -> bytes:
        """The whole (rest of the) body.  Raises :class:`ValueError` when it exceeds
        ``limit`` bytes (the stream is then stopped with H3_EXCESSIVE_LOAD), and as
        :meth:`receive` does."""
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = await self.receive(1 << 20)
            except anyio.EndOfStream:
                return b"".join(parts)
            total += len(chunk)
            if total > limit:
                self.stop_receiving(ErrorCode.H3_EXCESSIVE_LOAD)
                raise ValueError(f"body of stream {self.stream_id} is larger than "
                                 f"limit={limit} bytes")
            parts.append(chunk)

    def __aiter__(self) -> _Exchange:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def stop_receiving(self, error_code: int = H3_NO_ERROR) -> None:
        """STOP_SENDING: we do not want the rest of the body (buffered bytes are dropped)."""
        inbox = self._inbox
        if inbox.done:
            inbox.closed = True
            return
        inbox.closed = True
        inbox.drop()
        if not self._conn._quic.closed:
            try:
                self._conn._quic.stop_stream(self.stream_id, error_code)
            except (QuicConnectionError, StreamStateError):
                pass
        inbox.signal.fire()
        self._conn._maybe_forget_exchange(self)

    def reset(self, error_code: int = ErrorCode.H3_REQUEST_CANCELLED) -> None:
        """RESET_STREAM: abandon what we are sending (no-op once it is complete)."""
        if self._send_done:
            return
        self._send_done = True
        if not self._conn._quic.closed:
            try:
                self._conn._quic.reset_stream(self.stream_id, error_code)
            except (QuicConnectionError, StreamStateError):
                pass
        self._conn._maybe_forget_exchange(self)

    async def _send(self, fn: Callable[[], None], end: bool) -> None:
        conn = self._conn
        if self._send_done:
            raise anyio.ClosedResourceError
        if self._stopped is not None:
            raise StreamStoppedError(self.stream_id, self._stopped)
        if conn._quic.closed or conn._local_close:
            raise conn.closed_error()
        await conn.wait_drained(self.stream_id)
        if conn._quic.closed or conn._local_close:
            raise conn.closed_error()
        try:
            fn()
        except QuicConnectionError:
            raise conn.closed_error() from None
        except StreamStateError as exc:
            raise StreamStoppedError(self.stream_id, 0) from exc
        if end:
            self._send_done = True
            conn._maybe_forget_exchange(self)
        await checkpoint()

    async def send(self, data: _Bytes, end_stream: bool = False) -> None:
        """Send body bytes (a DATA frame); ``end_stream`` ends the body.  Waits while earlier
        bytes are queued behind a full send buffer.  Raises :class:`TypeError` for non-bytes,
        :class:`anyio.ClosedResourceError` after the end of what we send, and
        :class:`~aiopquic.anyio.ConnectionClosedError` when the connection is gone."""
        data = bytes(check_buffer("data", data))
        http = self._conn.wt.http
        await self._send(lambda: http.send_data(self.stream_id, data, end_stream), end_stream)

    async def send_eof(self) -> None:
        """End the body (FIN)."""
        if not self._send_done:
            await self.send(b"", end_stream=True)

    async def send_trailers(self, headers: _HeaderSeq) -> None:
        """Send trailers and end what we send."""
        http = self._conn.wt.http
        await self._send(lambda: http.send_headers(self.stream_id, list(headers), True), True)


class Request(_Exchange):
    """One HTTP/3 request, given to the server's handler.

    ``method``, ``path``, ``authority``, ``scheme`` and ``protocol`` come from the
    pseudo-headers (``str``), ``headers`` is the whole header section (``list`` of
    ``(bytes, bytes)``).  Read the body with :meth:`receive`, :meth:`read` or ``async for
    chunk in request``; answer with :meth:`respond`, or with :meth:`send_headers` then
    :meth:`send` for a streamed answer.  A handler that returns without answering makes the
    server answer 500; one that raises makes it answer 500 (or reset the stream with
    H3_INTERNAL_ERROR when headers were sent already) and log the exception; the
    connection and its other requests are not affected.
    """

    def __init__(self, conn: _H3Connection, stream_id: int, headers: Headers) -> None:
        super().__init__(conn, stream_id)
        self.headers: Headers = list(headers)
        """The request's header section, pseudo-headers included."""

        def text(name: bytes) -> str:
            value = _header(headers, name)
            return value.decode("utf-8", "replace") if value is not None else ""

        self.method = text(b":method")
        self.path = text(b":path")
        self.authority = text(b":authority")
        self.scheme = text(b":scheme")
        self.protocol = text(b":protocol")
        self.headers_sent = False
        """True once the response's header section has been sent."""

    @property
    def connection(self) -> Connection:
        """The QUIC connection the request came on (peer address, ALPN, typed attributes)."""
        return self._conn

    async def send_headers(self, status: int, headers: _HeaderSeq = (),
                           end_stream: bool = False) -> None:
        """Send the response's status and header section.  Raises :class:`ValueError` for a
        status outside 100..599, :class:`RuntimeError` when a final status was sent already."""
        status = check_int("status", status, 100, 600)
        if self.headers_sent:
            raise RuntimeError(f"the response to stream {self.stream_id} has its headers "
                               "already")
        section = [(b":status", str(status).encode())] + list(headers)
        http = self._conn.wt.http
        await self._send(lambda: http.send_headers(self.stream_id, section, end_stream),
                         end_stream)
        if status >= 200:
            self.headers_sent = True

    async def respond(self, status: int, headers: _HeaderSeq = (),
                      body: _Bytes = b"") -> None:
        """Send a whole response: status, headers and ``body``, and end the stream."""
        body = bytes(check_buffer("body", body))
        if not body:
            await self.send_headers(status, headers, end_stream=True)
            return
        await self.send_headers(status, headers)
        await self.send(body, end_stream=True)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path} on stream {self.stream_id}>"


class Response(_Exchange):
    """The answer to :meth:`HTTP3Connection.request`: ``status`` (``int``), ``headers``
    (``list`` of ``(bytes, bytes)``), and ``body`` (``bytes``; empty with ``stream=True``,
    where the body is read with :meth:`receive` / :meth:`read` / ``async for``)."""

    def __init__(self, conn: _H3Connection, stream_id: int) -> None:
        super().__init__(conn, stream_id)
        self.status = 0
        self.headers: Headers = []
        self.body = b""
        self._have_headers = False

    def _on_headers(self, headers: Headers) -> None:
        if self._have_headers:
            self.trailers = list(headers)
            return
        status = _header(headers, b":status") or b"0"
        try:
            code = int(status)
        except ValueError:
            code = 0
        if 100 <= code < 200:
            return  # an interim answer
        self.status = code
        self.headers = list(headers)
        self._have_headers = True
        self._inbox.signal.fire()

    async def _wait_headers(self) -> None:
        inbox = self._inbox
        while not self._have_headers:
            if inbox.reset is not None:
                raise StreamResetError(self.stream_id, inbox.reset)
            if inbox.fin:
                raise ConnectionClosedError(
                    f"stream {self.stream_id} ended without a response", 0)
            if self._conn._quic.closed or self._conn._local_close:
                raise self._conn.closed_error()
            await inbox.signal.wait()

    def __repr__(self) -> str:
        return f"<Response {self.status} on stream {self.stream_id}>"


# ---------------------------------------------------------------------- WebTransport


class WebTransportStream(ByteStream):
    """One WebTransport stream as an :class:`anyio.abc.ByteStream` (payload only: the
    stream's WebTransport header is handled below).

    :meth:`receive` raises :class:`anyio.EndOfStream` after the peer's FIN,
    :class:`~aiopquic.anyio.StreamResetError` after its reset (``error_code`` is the
    WebTransport code), and :class:`WebTransportSessionClosed` / :class:`anyio.EndOfStream`
    when the session ended first.  :meth:`send` waits while earlier bytes are queued (so
    memory stays bounded) and raises :class:`~aiopquic.anyio.StreamStoppedError` after the
    peer's STOP_SENDING.  :meth:`reset` / :meth:`stop_sending` take WebTransport codes
    (32-bit)."""

    def __init__(self, session: WebTransportSession, stream_id: int, *, readable: bool,
                 writable: bool) -> None:
        self._session = session
        self._conn = session._conn
        self.stream_id = stream_id
        """The QUIC stream id."""
        self._readable = readable
        self._writable = writable
        self._inbox = _Inbox(self._credit)
        if not readable:
            self._inbox.fin = True
        self._tx_closed = not writable
        self._stopped: Optional[int] = None
        self._gone = False

    def _credit(self, nbytes: int) -> None:
        if not self._conn._quic.closed:
            self._conn.wt.consumed(self.stream_id, nbytes, session_id=self._session.session_id)

    @property
    def session(self) -> WebTransportSession:
        """The session this stream belongs to."""
        return self._session

    @property
    def is_unidirectional(self) -> bool:
        """True for a unidirectional stream."""
        return not (self._readable and self._writable)

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The connection's typed attributes."""
        return self._conn.extra_attributes

    def _on_session_gone(self) -> None:
        self._gone = True
        self._inbox.signal.fire()

    def _session_error(self) -> BaseException:
        return self._session._end_error()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """The next received bytes (at most ``max_bytes``), waiting for some if needed."""
        if not self._readable:
            raise StreamStateError(f"cannot receive on WebTransport stream {self.stream_id}:"
                                   " it is our unidirectional stream (send-only)")

        def gone() -> Optional[BaseException]:
            if self._gone or self._session.closed:
                return self._session_error()
            return None

        return await self._inbox.receive(self.stream_id, max_bytes, gone)

    async def send(self, item: _Bytes) -> None:
        """Send ``item`` (bytes-like, copied)."""
        item = check_buffer("item", item)
        if not self._writable:
            raise StreamStateError(f"cannot send on WebTransport stream {self.stream_id}: "
                                   "it is the peer's unidirectional stream (receive-only)")
        await self._wait_drained()
        if len(item):
            try:
                self._conn.wt.send_stream_data(self.stream_id, bytes(item))
            except RuntimeError:
                raise self._session_error() from None
            except QuicConnectionError:
                raise self._conn.closed_error() from None
        await checkpoint()

    def _check_send(self) -> None:
        if self._tx_closed:
            raise anyio.ClosedResourceError
        if self._stopped is not None:
            raise StreamStoppedError(self.stream_id, self._stopped)
        if self._gone or self._session.closed:
            raise self._session_error()

    async def _wait_drained(self) -> None:
        while True:
            self._check_send()
            event = anyio.Event()
            if not self._conn.wt.add_drain_waiter(self.stream_id, event.set):
                return
            await event.wait()

    async def send_eof(self) -> None:
        """Send FIN after the bytes already sent (no-op if sending is finished)."""
        await checkpoint()
        self._send_fin()

    def _send_fin(self) -> None:
        if self._tx_closed:
            return
        self._tx_closed = True
        if self._stopped is None and not self._gone and not self._session.closed:
            try:
                self._conn.wt.send_stream_data(self.stream_id, b"", end_stream=True)
            except (RuntimeError, QuicConnectionError):
                pass

    def reset(self, error_code: int = 0) -> None:
        """Abort sending with the WebTransport code ``error_code`` (0..2**32-1)."""
        error_code = check_int("error_code", error_code, 0, 1 << 32)
        if self._tx_closed:
            return
        self._tx_closed = True
        self._conn.wt.reset_stream(self.stream_id, error_code)

    def stop_sending(self, error_code: int = 0) -> None:
        """Ask the peer to stop sending (WebTransport code ``error_code``); buffered bytes
        are dropped."""
        error_code = check_int("error_code", error_code, 0, 1 << 32)
        inbox = self._inbox
        if inbox.closed:
            return
        inbox.closed = True
        inbox.drop()
        if not (inbox.fin or inbox.reset is not None):
            self._conn.wt.stop_stream(self.stream_id, error_code)
        inbox.signal.fire()

    async def aclose(self) -> None:
        """FIN after the bytes sent (unless finished), STOP_SENDING 0 if the peer has not
        finished sending."""
        self._send_fin()
        if self._readable and not self._inbox.done:
            self.stop_sending(0)
        await checkpoint()

    def __repr__(self) -> str:
        return f"<WebTransportStream {self.stream_id} of session {self._session.session_id}>"


class WebTransportSession:
    """One WebTransport session (server: given to the handler, accepted; client: from
    :meth:`HTTP3Connection.webtransport` or :func:`connect_webtransport`).

    Streams: :meth:`open_stream`, :meth:`accept_stream` (or ``async for stream in
    session``); datagrams: :meth:`send_datagram`, :meth:`receive_datagram`.  When the
    session ends, waiting and later calls raise :class:`anyio.EndOfStream` (accepting,
    receiving datagrams) after a close with code 0 by either side, and
    :class:`WebTransportSessionClosed` after a close with another code or when the
    connection went away; ``async for`` simply ends.  :attr:`close_code` and
    :attr:`close_reason` tell how it ended.
    """

    def __init__(self, conn: _H3Connection, session_id: int, path: str, headers: Headers,
                 protocol: Optional[str]) -> None:
        self._conn = conn
        self.session_id = session_id
        """The session id (the CONNECT stream's id)."""
        self.path = path
        """The request path."""
        self.headers: Headers = list(headers)
        """Request headers (server) or response headers (client)."""
        self.protocol = protocol
        """The negotiated WT-Protocol, or ``None``."""
        self._accept: deque[WebTransportStream] = deque()
        self._datagrams: deque[bytes] = deque()
        self._signal = _Signal()
        self._answer: Optional[Union[SessionEstablished, SessionRefused]] = None
        self._closed: Optional[SessionClosed] = None
        self._closing = False
        self.draining = False
        """True once the peer asked to end the session (DRAIN_WEBTRANSPORT_SESSION)."""
        self.streams_refused = 0
        """Peer streams refused because :data:`STREAM_BACKLOG` were not accepted."""
        self.datagrams_dropped = 0
        """Received datagrams dropped because :data:`~aiopquic.anyio.DATAGRAM_BACKLOG`
        were unread."""

    @property
    def connection(self) -> Connection:
        """The QUIC connection carrying the session."""
        return self._conn

    @property
    def closed(self) -> bool:
        """True once the session ended (either side) or its connection closed."""
        return self._closed is not None or self._conn._quic.closed

    @property
    def close_code(self) -> Optional[int]:
        """The session's close code once closed (``None`` while open)."""
        return self._closed.code if self._closed is not None else None

    @property
    def close_reason(self) -> Optional[str]:
        """The session's close reason once closed (``None`` while open)."""
        return self._closed.reason if self._closed is not None else None

    def _on_answer(self, event: Union[SessionEstablished, SessionRefused]) -> None:
        self._answer = event
        if isinstance(event, SessionEstablished):
            self.headers = list(event.headers)
            self.protocol = event.protocol
        self._signal.fire()

    def _on_datagram(self, data: bytes) -> None:
        if len(self._datagrams) >= DATAGRAM_BACKLOG:
            self._datagrams.popleft()
            self.datagrams_dropped += 1
        self._datagrams.append(data)
        self._signal.fire()

    def _on_closed(self, event: SessionClosed) -> None:
        self._closed = event
        self._signal.fire()
        for stream in list(self._conn.wt_streams.values()):
            if stream._session is self:
                stream._inbox.signal.fire()
        if not event.by_peer and not event.connection_gone:
            self._conn._schedule_expire(self.session_id)

    def _end_error(self) -> BaseException:
        ev = self._closed
        if ev is None:
            if self._conn._local_close:
                return anyio.ClosedResourceError()
            return WebTransportSessionClosed(0, self._conn._quic._close_message(), True)
        if ev.connection_gone:
            return WebTransportSessionClosed(ev.code, ev.reason or "connection closed",
                                             ev.by_peer)
        if ev.code == 0:
            return anyio.EndOfStream()
        return WebTransportSessionClosed(ev.code, ev.reason, ev.by_peer)

    async def _wait_answer(self) -> None:
        while self._answer is None:
            if self._conn._quic.closed or self._conn._local_close:
                raise self._conn.closed_error()
            if self._closed is not None:
                raise self._end_error()
            await self._signal.wait()
        if isinstance(self._answer, SessionRefused):
            raise WebTransportRejected(self._answer.status, self._answer.reason)

    async def open_stream(self, bidirectional: bool = True) -> WebTransportStream:
        """Open a stream of the session; waits while the peer's stream limit forbids it.
        Raises as :meth:`accept_stream` once the session ended."""
        wt = self._conn.wt
        while True:
            if self.closed:
                raise self._end_error()
            if wt.can_open_stream(self.session_id, bidirectional):
                break
            await self._signal.wait()
        try:
            stream_id = wt.create_stream(self.session_id, bidirectional)
        except RuntimeError:
            raise self._end_error() from None
        except QuicConnectionError:
            raise self._conn.closed_error() from None
        stream = WebTransportStream(self, stream_id, readable=bidirectional, writable=True)
        self._conn.wt_streams[stream_id] = stream
        await checkpoint()
        return stream

    async def accept_stream(self) -> WebTransportStream:
        """The next stream the peer opened, waiting for one if needed."""
        while True:
            if self._accept:
                stream = self._accept.popleft()
                await checkpoint()
                return stream
            if self.closed:
                raise self._end_error()
            await self._signal.wait()

    def __aiter__(self) -> WebTransportSession:
        return self

    async def __anext__(self) -> WebTransportStream:
        try:
            return await self.accept_stream()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        except WebTransportSessionClosed:
            raise StopAsyncIteration from None

    async def send_datagram(self, data: _Bytes) -> None:
        """Send an HTTP datagram of the session (unreliable: dropped when the queue is
        full).  Raises :class:`ValueError` when it cannot fit one packet."""
        data = check_buffer("data", data)
        if self.closed:
            raise self._end_error()
        try:
            self._conn.wt.send_datagram(self.session_id, bytes(data))
        except RuntimeError:
            raise self._end_error() from None
        await checkpoint()

    async def receive_datagram(self) -> bytes:
        """The next datagram of the session, waiting for one if needed."""
        while True:
            if self._datagrams:
                data = self._datagrams.popleft()
                await checkpoint()
                return data
            if self.closed:
                raise self._end_error()
            await self._signal.wait()

    async def aclose(self, code: int = 0, reason: str = "") -> None:
        """Close the session (CLOSE_WEBTRANSPORT_SESSION with ``code``, 32-bit, and
        ``reason``, at most 1024 UTF-8 bytes); idempotent.  Raises :class:`ValueError` for a
        bad code or reason."""
        code = check_int("code", code, 0, 1 << 32)
        if not self.closed:
            self._closing = True
            for event in self._conn.wt.close_session(self.session_id, code, reason):
                self._conn._dispatch(event)
        await checkpoint()

    async def wait_closed(self) -> None:
        """Wait until the session ended."""
        while not self.closed:
            await self._signal.wait()

    async def __aenter__(self) -> WebTransportSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<WebTransportSession {self.session_id} {self.path!r}>"


# ---------------------------------------------------------------------- server


async def _run_request(handler: RequestHandler, request: Request) -> None:
    try:
        await handler(request)
    except Exception as exc:
        if isinstance(exc, (ConnectionClosedError, anyio.ClosedResourceError)) and \
                request._conn._quic.closed:
            return
        _log.error("HTTP/3 handler failed for %s %s", request.method, request.path,
                   exc_info=exc)
        try:
            if not request.headers_sent:
                await request.respond(500, [(b"content-type", b"text/plain")],
                                      b"internal error in the handler\n")
            else:
                request.reset(ErrorCode.H3_INTERNAL_ERROR)
        except Exception:  # the connection is gone: nothing to answer on
            pass
        request.stop_receiving()
        return
    try:
        if not request.headers_sent:
            await request.respond(500, [(b"content-type", b"text/plain")],
                                  b"the handler sent no response\n")
        elif not request._send_done:
            await request.send_eof()
    except Exception:
        pass
    request.stop_receiving()


async def _run_session(handler: WebTransportHandler, session: WebTransportSession) -> None:
    code = 0
    try:
        await handler(session)
    except (anyio.EndOfStream, WebTransportSessionClosed):
        pass
    except Exception as exc:
        if not session.closed:
            _log.error("WebTransport handler failed for session %s %s", session.session_id,
                       session.path, exc_info=exc)
            code = 1
    if not session.closed:
        try:
            await session.aclose(code, "internal error in the handler" if code else "")
        except Exception:
            pass


def _connection_runner(handler: Optional[RequestHandler],
                       webtransport_handler: Optional[WebTransportHandler],
                       path: Optional[str]) -> Callable[[Connection], Awaitable[None]]:
    async def run(connection: Connection) -> None:
        assert isinstance(connection, _H3Connection)
        conn = connection
        async with anyio.create_task_group() as tg:
            conn._expire_group = tg
            while True:
                while conn.incoming:
                    item = conn.incoming.popleft()
                    if isinstance(item, Request):
                        if handler is None:
                            tg.start_soon(_not_found, item)
                        else:
                            tg.start_soon(_run_request, handler, item,
                                          name=f"aiopquic h3 {item.method} {item.path}")
                    else:
                        _start_session(conn, tg, item, webtransport_handler, path)
                if conn._quic.closed or conn._local_close:
                    break
                await conn._signal.wait()
            tg.cancel_scope.cancel()
        conn._expire_group = None

    return run


def _start_session(conn: _H3Connection, tg: TaskGroup, session: WebTransportSession,
                   handler: Optional[WebTransportHandler], path: Optional[str]) -> None:
    wt = conn.wt
    if handler is None or (path is not None and session.path.split("?", 1)[0] != path):
        conn.sessions.pop(session.session_id, None)
        for event in wt.reject_session(session.session_id, 404):
            conn._dispatch(event)
        return
    try:
        wt.accept_session(session.session_id)
    except (RuntimeError, QuicConnectionError):
        conn.sessions.pop(session.session_id, None)
        return
    tg.start_soon(_run_session, handler, session,
                  name=f"aiopquic webtransport {session.path}")


async def _not_found(request: Request) -> None:
    try:
        await request.respond(404, [(b"content-type", b"text/plain")], b"not found\n")
    except Exception:
        pass
    request.stop_receiving()


async def create_http3_listener(host: str, port: int, *,
                                configuration: QuicConfiguration,
                                webtransport: bool = True,
                                protocols: Optional[list[str]] = None,
                                workers: int = 1) -> Server:
    """Bind an HTTP/3 server endpoint (a :class:`~aiopquic.anyio.Server`); run it with
    :func:`serve_http3`'s arguments through ``server.serve(http3_handler(...))`` -- or
    simply use :func:`serve_http3`.  ``configuration`` gets ALPN ``h3`` when it has no ALPN
    list and, with ``webtransport``, QUIC datagrams (on a copy).  Raises as
    :func:`~aiopquic.anyio.create_listener`, and :class:`ValueError` when its ALPN list
    lacks ``h3``."""
    if not isinstance(configuration, QuicConfiguration):
        raise TypeError(f"serve_http3() configuration must be a QuicConfiguration, "
                        f"got {type(configuration).__name__}")
    cfg = h3_configuration(configuration, "serve_http3()", datagrams=webtransport)
    server = await create_listener(host, port, configuration=cfg, workers=workers)
    server._factory = functools.partial(_H3Connection, webtransport=webtransport,
                                        protocols=protocols)
    return server


def http3_handler(handler: Optional[RequestHandler] = None,
                  webtransport_handler: Optional[WebTransportHandler] = None,
                  path: Optional[str] = None) -> Callable[[Connection], Awaitable[None]]:
    """The connection handler :func:`serve_http3` runs on a listener made by
    :func:`create_http3_listener` (pass it to ``server.serve()``)."""
    return _connection_runner(handler, webtransport_handler, path)


async def serve_http3(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    handler: Optional[RequestHandler] = None,
    webtransport_handler: Optional[WebTransportHandler] = None,
    path: Optional[str] = None,
    protocols: Optional[list[str]] = None,
    task_status: TaskStatus[Server] = anyio.TASK_STATUS_IGNORED,
    workers: int = 1,
) -> None:
    """Serve HTTP/3 (and WebTransport) on ``host``:``port`` until cancelled.

    Every request runs ``await handler(request)`` (a :class:`Request`) in its own task;
    without ``handler`` every request gets 404.  Every WebTransport session request (an
    extended CONNECT) is accepted and runs ``await webtransport_handler(session)`` (a
    :class:`WebTransportSession`); without it, or when ``path`` is given and the request's
    path (without its query) differs, the session is refused with 404.  ``protocols`` is the
    WT-Protocol allowlist (the first protocol of the client's list on it is chosen; a client
    offering only others is refused with 400).  When a session handler returns, the session
    is closed with code 0; when it raises, the exception is logged and the session is closed
    with code 1.  A failing handler never affects other requests, sessions or connections.

    Start it with ``await task_group.start(functools.partial(serve_http3, ...))`` to get the
    :class:`~aiopquic.anyio.Server` (``server.local_port``) once it listens.  Raises as
    :func:`create_http3_listener`.
    """
    server = await create_http3_listener(host, port, configuration=configuration,
                                         webtransport=webtransport_handler is not None
                                         or bool(configuration.max_datagram_frame_size),
                                         protocols=protocols, workers=workers)
    try:
        task_status.started(server)
        await server.serve(http3_handler(handler, webtransport_handler, path))
    finally:
        if not server._closed:
            server._shutdown()


# ---------------------------------------------------------------------- client


class HTTP3Connection:
    """A client HTTP/3 connection (from :func:`connect_http3`): :meth:`request` and
    :meth:`webtransport`; :attr:`connection` is the QUIC :class:`~aiopquic.anyio.Connection`
    (addresses, ALPN, typed attributes)."""

    def __init__(self, conn: _H3Connection, authority: str) -> None:
        self._conn = conn
        self.authority = authority
        """The ``:authority`` sent with requests by default (``host:port``)."""

    @property
    def connection(self) -> Connection:
        """The QUIC connection."""
        return self._conn

    async def _settings(self) -> None:
        while not self._conn.wt.settings_received:
            if self._conn._quic.closed or self._conn._local_close:
                raise self._conn.closed_error()
            await self._conn._signal.wait()

    async def request(self, method: str, path: str, *, headers: _HeaderSeq = (),
                      body: _Bytes = b"", stream: bool = False,
                      limit: int = MAX_READ) -> Response:
        """Send a request and return its :class:`Response` once the answer's headers
        arrived; with ``stream=False`` (default) its whole body is read into
        ``response.body`` first (at most ``limit`` bytes, else :class:`ValueError`).
        ``headers`` are added after the pseudo-headers.  Raises
        :class:`~aiopquic.anyio.ConnectionClosedError` when the connection closes first and
        :class:`~aiopquic.anyio.StreamResetError` when the server resets the request."""
        if not isinstance(method, str) or not method:
            raise TypeError(f"method must be a non-empty str, got {method!r}")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"path must be a str starting with '/', got {path!r}")
        body = bytes(check_buffer("body", body))
        conn = self._conn
        if conn._quic.closed or conn._local_close:
            raise conn.closed_error()
        stream_id = conn._quic.get_next_available_stream_id()
        response = Response(conn, stream_id)
        conn.exchanges[stream_id] = response
        section: Headers = [(b":method", method.encode()), (b":scheme", b"https"),
                            (b":authority", self.authority.encode()),
                            (b":path", path.encode())] + list(headers)
        http = conn.wt.http
        await response._send(lambda: http.send_headers(stream_id, section, not body),
                             not body)
        if body:
            await response.send(body, end_stream=True)
        await response._wait_headers()
        if not stream:
            response.body = await response.read(limit)
        return response

    async def get(self, path: str, *, headers: _HeaderSeq = ()) -> Response:
        """``request("GET", path, headers=headers)``."""
        return await self.request("GET", path, headers=headers)

    async def webtransport(self, path: str, *, headers: _HeaderSeq = (),
                           protocols: Optional[list[str]] = None) -> WebTransportSession:
        """Open a WebTransport session on ``path`` and return it once the server accepted
        it.  Raises :class:`WebTransportRejected` when the server refuses (its status),
        :class:`RuntimeError` when the server does not offer WebTransport."""
        await self._settings()
        conn = self._conn
        session_id = conn.wt.open_session(self.authority, path, headers=list(headers),
                                          available_protocols=protocols)
        session = WebTransportSession(conn, session_id, path, [], None)
        conn.sessions[session_id] = session
        try:
            await session._wait_answer()
        except BaseException:
            conn.sessions.pop(session_id, None)
            for event in conn.wt.cancel_session(session_id):
                conn._dispatch(event)
            raise
        return session

    async def aclose(self) -> None:
        """Close the connection (H3_NO_ERROR) once what was sent is delivered."""
        await self._conn.aclose(H3_NO_ERROR)


def _client_config(configuration: Optional[QuicConfiguration], what: str,
                   webtransport: bool) -> QuicConfiguration:
    if configuration is not None and not isinstance(configuration, QuicConfiguration):
        raise TypeError(f"{what} configuration must be a QuicConfiguration, "
                        f"got {type(configuration).__name__}")
    cfg = configuration or QuicConfiguration(is_client=True)
    return h3_configuration(cfg, what, datagrams=webtransport)


@asynccontextmanager
async def connect_http3(host: str, port: int, *,
                        configuration: Optional[QuicConfiguration] = None,
                        local_port: int = 0,
                        webtransport: bool = True) -> AsyncIterator[HTTP3Connection]:
    """Connect to the HTTP/3 server at ``host``:``port`` and yield an
    :class:`HTTP3Connection` once the handshake completed.  ``configuration`` gets ALPN
    ``h3`` when it has none and, with ``webtransport``, QUIC datagrams (on a copy).
    Leaving the block closes the connection with H3_NO_ERROR.  Raises as
    :func:`aiopquic.anyio.connect`."""
    cfg = _client_config(configuration, "connect_http3()", webtransport)
    cfg = check_client_arguments("connect_http3()", host, cfg)
    factory = functools.partial(_H3Connection, webtransport=webtransport)
    async with open_connection(host, port, cfg, local_port, factory) as connection:
        assert isinstance(connection, _H3Connection)
        authority = host if port == 443 else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            authority = f"[{host}]" if port == 443 else f"[{host}]:{port}"
        body_error: Optional[BaseException] = None
        async with anyio.create_task_group() as tg:
            connection._expire_group = tg  # the session-close timers
            try:
                yield HTTP3Connection(connection, authority)
            except BaseException as exc:
                # re-raised outside the task group: trio would wrap it in an ExceptionGroup
                body_error = exc
            else:
                if not connection._local_close:
                    await connection.aclose(H3_NO_ERROR)
            finally:
                connection._expire_group = None
                tg.cancel_scope.cancel()
        if body_error is not None:
            try:
                raise body_error
            finally:
                body_error = None


@asynccontextmanager
async def connect_webtransport(url: str, *,
                               configuration: Optional[QuicConfiguration] = None,
                               headers: _HeaderSeq = (),
                               protocols: Optional[list[str]] = None,
                               local_port: int = 0) -> AsyncIterator[WebTransportSession]:
    """Open a WebTransport session to ``url`` (``https://host[:port]/path``) on a new
    connection and yield it; leaving the block closes the session (code 0) and the
    connection.  Raises :class:`ValueError` for a URL that is not https,
    :class:`WebTransportRejected` when the server refuses, and as :func:`connect_http3`."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"url must be https://host[:port]/path, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    async with connect_http3(parts.hostname, parts.port or 443, configuration=configuration,
                             local_port=local_port) as http:
        session = await http.webtransport(path, headers=headers, protocols=protocols)
        async with session:
            yield session

