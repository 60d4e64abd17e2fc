"""WebTransport over HTTP/3 for asyncio: :func:`serve_webtransport`,
:func:`connect_webtransport` and :class:`WebTransportSession`.

A server::

    async def handler(session: WebTransportSession) -> None:
        reader, writer = await session.accept_stream()   # accepts the session (200)
        ...

    server = await serve_webtransport("127.0.0.1", 4433, configuration=config,
                                      handler=handler, path="/echo")

A client::

    async with connect_webtransport("https://127.0.0.1:4433/echo") as session:
        reader, writer = await session.create_stream()
        writer.write(b"hello"); writer.write_eof()
        print(await reader.read())

Sessions follow draft-ietf-webtrans-http3 as browsers speak it: extended CONNECT with
``:protocol`` ``webtransport`` (``webtransport-h3`` is accepted too), every capability SETTINGS
codepoint browsers look for, streams with the 0x41 / 0x54 headers, HTTP/3 datagrams carrying
the quarter stream id, and the CLOSE_WEBTRANSPORT_SESSION capsule.  A server connection may
carry several sessions.  When a session ends, its streams are reset (``WT_SESSION_GONE``).

Receive flow control follows the reader: credit is returned to the peer as the application
reads a stream, so a slow reader slows the sender instead of growing memory.  The same holds
for plain HTTP/3 request and response bodies when a subclass sets
:attr:`WebTransportProtocol.http_credit_on_consume` (``python -m aiopquic serve`` does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Callable, Optional, Union, overload
from urllib.parse import urlsplit

from aiopquic.asyncio.client import connect
from aiopquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler, _StreamTransport
from aiopquic.asyncio.server import QuicServer, serve
from aiopquic.h3.capsule import encode_close_session
from aiopquic.h3.connection import (
    DEFAULT_MAX_FIELD_SECTION_SIZE,
    H3_ALPN,
    WT_SESSION_GONE,
    H3Connection,
)
from aiopquic.h3.events import DataReceived, H3Event, Headers, HeadersReceived
from aiopquic.h3.webtransport import (
    DEFAULT_DATAGRAM_FRAME_SIZE,
    WT_ALPN_ERROR,
    WT_PROTOCOL_TOKENS,
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
    WebTransportEvent,
    encode_sf_string_list,
    h3_configuration,
    parse_sf_string_list,
)
from aiopquic.quic import events as quic_events
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection

__all__ = [
    "WebTransportError",
    "WebTransportRejected",
    "WebTransportSessionClosed",
    "WebTransportSession",
    "WebTransportProtocol",
    "serve_webtransport",
    "connect_webtransport",
    "WEBTRANSPORT_PROTOCOLS",
    "WT_SESSION_GONE",
    "WT_ALPN_ERROR",
    "WebTransportSessionBase",
    "WebTransportClient",
    "WebTransportServerSession",
    "WebTransportSessionState",
    "WebTransportServer",
    "dispatch_protocol_factory",
    "connection_for_ptr",
]

logger = logging.getLogger("aiopquic.webtransport")

WEBTRANSPORT_PROTOCOLS = WT_PROTOCOL_TOKENS
"""``:protocol`` values accepted for a WebTransport extended CONNECT."""

_DATAGRAM_QUEUE = 1024  # datagrams kept per session before the oldest are dropped
_MAX_PENDING_STREAMS = 256  # peer streams waiting for accept_stream() before refusals
_DEFAULT_DATAGRAM_FRAME = DEFAULT_DATAGRAM_FRAME_SIZE
_RESET_DELAY = 3.0  # seconds a locally closed session waits for the peer's end of CONNECT

WebTransportHandler = Callable[["WebTransportSession"], Awaitable[None]]


class WebTransportError(ConnectionError):
    """Base class of WebTransport errors."""


class WebTransportRejected(WebTransportError):
    """The server answered the session request with a non-2xx HTTP status.

    A server handler may also raise it (before it accepted the session) to reject the
    session with ``status``."""

    def __init__(self, status: int, message: str = "") -> None:
        if not isinstance(status, int) or not 200 <= status <= 599 or 200 <= status <= 299:
            raise ValueError(f"rejection status must be an HTTP status 300..599, got {status!r}")
        super().__init__(message or f"WebTransport session rejected with HTTP status {status}")
        self.status = status


class WebTransportSessionClosed(WebTransportError):
    """The session is closed: ``code`` and ``reason`` are those of the CLOSE_WEBTRANSPORT_
    SESSION capsule (0 and "" when the session ended without one)."""

    def __init__(self, code: int = 0, reason: str = "", message: str = "") -> None:
        super().__init__(message or f"WebTransport session closed (code {code}"
                         + (f", reason {reason!r})" if reason else ")"))
        self.code = code
        self.reason = reason


# ---------------------------------------------------------------------- streams


class _WTReader(asyncio.StreamReader):
    """A StreamReader that returns receive credit (QUIC and the session's WT_MAX_DATA) as
    the application consumes bytes."""

    def __init__(self, core: WebTransportConnection, session_id: int, stream_id: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2 ** 16, loop=loop)
        self._wt_core = core
        self._wt_session_id = session_id
        self._wt_stream_id = stream_id
        self._wt_fed = 0
        self._wt_credited = 0

    def _wt_feed(self, data: bytes) -> None:
        self._wt_fed += len(data)
        self.feed_data(data)

    def _wt_discard(self) -> None:
        """The application will not read what is buffered (stream reset, session gone):
        return its credit, or the connection's window would shrink for good."""
        self._buffer.clear()  # type: ignore[attr-defined]
        self._maybe_resume_transport()

    def _maybe_resume_transport(self) -> None:  # asyncio calls this after every read
        buffered = len(self._buffer)  # type: ignore[attr-defined]
        consumed = self._wt_fed - buffered
        owed = consumed - self._wt_credited
        if owed > 0:
            self._wt_credited = consumed
            self._wt_core.consumed(self._wt_stream_id, owed, flush=not buffered,
                                   session_id=self._wt_session_id)


class _WTTransport(_StreamTransport):
    """The transport behind a WebTransport stream's StreamWriter: writes go through the
    WebTransport layer (which knows the stream's session and state)."""

    def __init__(self, session: WebTransportSession, stream_id: int) -> None:
        super().__init__(session._protocol, stream_id)
        self._session = session

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "session":
            return self._session
        return super().get_extra_info(name, default)

    def write(self, data: Any) -> None:
        if self._session._closed_info is not None:
            raise self._session._closed_error()
        if self._closing:
            raise ConnectionResetError(f"WebTransport stream {self._stream_id} is closed "
                                       "for writing")
        try:
            self._session._protocol._wt.send_stream_data(self._stream_id, data)
        except RuntimeError as exc:
            self._closing = True
            raise ConnectionResetError(str(exc)) from None

    def write_eof(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._session._closed_info is None:
            try:
                self._session._protocol._wt.send_stream_data(self._stream_id, b"", True)
            except RuntimeError:
                pass  # stopped by the peer, or the connection is gone

    def abort(self, code: int = 0) -> None:
        """Reset the stream with WebTransport application error ``code``."""
        if not self._closing:
            self._closing = True
            self._session._protocol._wt.reset_stream(self._stream_id, code)


class _WTFlow:
    """What StreamWriter calls on its "protocol": drain waits for the stream's send queue."""

    def __init__(self, session: WebTransportSession, stream_id: int) -> None:
        self._session = session
        self._stream_id = stream_id

    async def _drain_helper(self) -> None:
        await self._session._protocol._wait_writable(self._stream_id)
        if self._session._closed_info is not None:
            raise self._session._closed_error()

    async def _get_close_waiter(self, stream: Any) -> None:
        await self._session.wait_closed()


class _StreamEntry:
    """The asyncio objects of one WebTransport stream (its state lives in the core)."""

    __slots__ = ("stream_id", "reader", "transport", "writer", "session")

    def __init__(self, stream_id: int, reader: _WTReader,
                 session: WebTransportSession) -> None:
        self.stream_id = stream_id
        self.reader = reader
        self.transport: Optional[_WTTransport] = None
        self.writer: Optional[asyncio.StreamWriter] = None
        self.session = session


# ---------------------------------------------------------------------- session

_PENDING, _OPEN, _CLOSED = "pending", "open", "closed"


class WebTransportSession:
    """One WebTransport session (an extended CONNECT stream and everything tied to it).

    Server side, the session starts *pending*: the handler accepts it explicitly with
    :meth:`accept` or implicitly by using it (streams, datagrams, :meth:`close`), or rejects
    it with :meth:`reject` (or by raising :class:`WebTransportRejected`).  Once the session
    is closed, every method raises :class:`WebTransportSessionClosed` (queued incoming streams
    and datagrams are still handed out first).
    """

    def __init__(self, protocol: WebTransportProtocol, session_id: int, headers: Headers,
                 pending: bool) -> None:
        self._protocol = protocol
        self._session_id = session_id
        self._headers = headers
        self._state = _PENDING if pending else _OPEN
        self._closed_info: Optional[tuple[int, str]] = None
        self._closed_event = asyncio.Event()
        self._drain_event = asyncio.Event()
        self._incoming: deque[tuple[asyncio.StreamReader, Optional[asyncio.StreamWriter]]] = \
            deque()
        self._incoming_waiter: Optional[asyncio.Future[None]] = None
        self._datagrams: deque[bytes] = deque(maxlen=_DATAGRAM_QUEUE)
        self._datagram_waiter: Optional[asyncio.Future[None]] = None
        self._request_path = ""
        self._protocol_name: Optional[str] = None
        self.datagrams_dropped = 0
        """Datagrams dropped because :meth:`receive_datagram` was not called fast enough."""
        self.streams_refused = 0
        """Peer streams refused (WT_BUFFERED_STREAM_REJECTED) because 256 were already
        waiting for :meth:`accept_stream`."""

    # ------------------------------------------------------------------ properties

    @property
    def session_id(self) -> int:
        """The session id (the stream id of its CONNECT request)."""
        return self._session_id

    @property
    def headers(self) -> Headers:
        """The request headers of the CONNECT (server) or the response headers (client)."""
        return self._headers

    @property
    def path(self) -> str:
        """The request ``:path`` (server: as sent by the client; client: as requested)."""
        for name, value in self._headers:
            if name == b":path":
                return value.decode("utf-8", "replace")
        return self._request_path

    @property
    def protocol(self) -> Optional[str]:
        """The negotiated WebTransport subprotocol (WT-Protocol), or ``None``."""
        return self._protocol_name

    @property
    def available_protocols(self) -> list[str]:
        """Server: the client's WT-Available-Protocols, in its order of preference."""
        value = next((v for k, v in self._headers if k == b"wt-available-protocols"), None)
        if value is None:
            return []
        return parse_sf_string_list(value) or []

    @property
    def closed(self) -> bool:
        """True once the session is closed (by either side, or with the connection)."""
        return self._closed_info is not None

    @property
    def close_code(self) -> Optional[int]:
        """The session's close code once closed (ours or the peer's), else ``None``."""
        return None if self._closed_info is None else self._closed_info[0]

    @property
    def close_reason(self) -> Optional[str]:
        """The session's close reason once closed, else ``None``."""
        return None if self._closed_info is None else self._closed_info[1]

    @property
    def draining(self) -> bool:
        """True once the peer sent DRAIN_WEBTRANSPORT_SESSION (it wants the session to end
        soon)."""
        return self._drain_event.is_set()

    @property
    def max_datagram_size(self) -> int:
        """Largest payload :meth:`send_datagram` accepts now."""
        return max(0, self._protocol._quic.max_datagram_size - 8)

    def _closed_error(self) -> WebTransportSessionClosed:
        code, reason = self._closed_info or (0, "")
        return WebTransportSessionClosed(code, reason)

    def _check_open(self) -> None:
        if self._closed_info is not None:
            raise self._closed_error()
        if self._state == _PENDING:
            self.accept()

    # ------------------------------------------------------------------ server decision

    def accept(self) -> None:
        """Server: accept the session (responds 200).  Idempotent; a no-op on a client.
        Raises :class:`WebTransportSessionClosed` if it was rejected or closed."""
        if self._closed_info is not None:
            raise self._closed_error()
        if self._state != _PENDING:
            return
        self._state = _OPEN
        self._protocol._wt.accept_session(self._session_id)
        self._protocol._flush_core()

    def reject(self, status: int = 403) -> None:
        """Server: refuse the session with HTTP ``status`` (300..599) and end its stream.
        Raises :class:`RuntimeError` if the session was already accepted, :class:`ValueError`
        for a bad status."""
        if not isinstance(status, int) or not 300 <= status <= 599:
            raise ValueError(f"rejection status must be 300..599, got {status!r}")
        if self._state != _PENDING:
            raise RuntimeError("the session was already accepted (or closed): use close()")
        self._state = _CLOSED
        self._protocol._handle(self._protocol._wt.reject_session(self._session_id, status))

    # ------------------------------------------------------------------ streams

    async def create_stream(
        self, bidirectional: bool = True
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a stream and return ``(reader, writer)``.  For a unidirectional stream the
        reader is already at EOF.  ``writer.drain()`` waits while the send buffer is full;
        ``writer.transport.abort(code)`` resets the stream with a WebTransport error code.

        Waits while the peer's WT_MAX_STREAMS forbids another stream.  Raises
        :class:`WebTransportSessionClosed` when the session is closed."""
        self._check_open()
        protocol = self._protocol
        await protocol._wait_stream_credit(self, bidirectional)
        stream_id = protocol._wt.create_stream(self._session_id, bidirectional)
        reader, writer = protocol._new_stream(self, stream_id, readable=bidirectional,
                                              writable=True)
        assert writer is not None
        if not bidirectional:
            reader.feed_eof()
        return reader, writer

    async def accept_stream(self) -> tuple[asyncio.StreamReader, Optional[asyncio.StreamWriter]]:
        """Wait for the next stream the peer opens; returns ``(reader, writer)``, with
        ``writer`` ``None`` for a unidirectional stream.

        Raises :class:`WebTransportSessionClosed` once the session is closed and no opened
        stream is left to hand out."""
        if self._state == _PENDING and self._closed_info is None:
            self.accept()
        while True:
            if self._incoming:
                return self._incoming.popleft()
            if self._closed_info is not None:
                raise self._closed_error()
            fut = self._protocol._loop.create_future()
            self._incoming_waiter = fut
            try:
                await fut
            finally:
                self._incoming_waiter = None

    # ------------------------------------------------------------------ datagrams

    def send_datagram(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Send an unreliable datagram.  Raises :class:`WebTransportSessionClosed` when
        closed, :class:`ValueError` when larger than :attr:`max_datagram_size`."""
        self._check_open()
        self._protocol._wt.send_datagram(self._session_id, data)

    async def receive_datagram(self) -> bytes:
        """Wait for the next datagram.  At most 1024 are queued (then the oldest are dropped,
        see :attr:`datagrams_dropped`).  Raises :class:`WebTransportSessionClosed` once the
        session is closed and the queue is empty."""
        if self._state == _PENDING and self._closed_info is None:
            self.accept()
        while True:
            if self._datagrams:
                return self._datagrams.popleft()
            if self._closed_info is not None:
                raise self._closed_error()
            fut = self._protocol._loop.create_future()
            self._datagram_waiter = fut
            try:
                await fut
            finally:
                self._datagram_waiter = None

    # ------------------------------------------------------------------ closing

    def close(self, code: int = 0, reason: str = "") -> None:
        """Close the session: send CLOSE_WEBTRANSPORT_SESSION with ``code`` (32-bit) and
        ``reason`` (at most 1024 UTF-8 bytes), end the CONNECT stream and finish every stream
        of the session (local readers raise :class:`WebTransportSessionClosed`; on the wire
        the streams are reset with WT_SESSION_GONE once the peer ends the CONNECT stream, or
        after 3 s).  Idempotent.  Raises :class:`ValueError` for a bad code or reason."""
        encode_close_session(code, reason)  # checks the arguments first
        if self._closed_info is not None:
            return
        if self._state == _PENDING:
            self.accept()
        self._state = _CLOSED
        protocol = self._protocol
        if protocol._quic.closed:
            self._terminate(code, reason, [])
            return
        protocol._handle(protocol._wt.close_session(self._session_id, code, reason))
        if self._closed_info is None:  # the core no longer knew the session
            self._terminate(code, reason, [])

    def drain(self) -> None:
        """Send DRAIN_WEBTRANSPORT_SESSION: ask the peer to end the session soon."""
        if self._closed_info is None and self._state != _PENDING:
            self._protocol._wt.drain_session(self._session_id)

    async def wait_closed(self) -> None:
        """Wait until the session is closed (by either side, or with the connection)."""
        await self._closed_event.wait()

    async def wait_draining(self) -> None:
        """Wait until the peer asks to drain the session (or the session closes)."""
        waiter = asyncio.ensure_future(self._drain_event.wait())
        closer = asyncio.ensure_future(self._closed_event.wait())
        try:
            await asyncio.wait((waiter, closer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closer.cancel()

    # ------------------------------------------------------------------ internals

    def _add_incoming(self, reader: asyncio.StreamReader,
                      writer: Optional[asyncio.StreamWriter]) -> None:
        self._incoming.append((reader, writer))
        if self._incoming_waiter is not None and not self._incoming_waiter.done():
            self._incoming_waiter.set_result(None)

    def _on_datagram(self, data: bytes) -> None:
        if self._closed_info is not None:
            return
        if len(self._datagrams) == self._datagrams.maxlen:
            self.datagrams_dropped += 1
        self._datagrams.append(data)
        if self._datagram_waiter is not None and not self._datagram_waiter.done():
            self._datagram_waiter.set_result(None)

    def _on_draining(self) -> None:
        self._drain_event.set()

    def _terminate(self, code: int, reason: str, streams: list[int]) -> None:
        if self._closed_info is not None:
            return
        self._state = _CLOSED
        self._closed_info = (code, reason)
        err = self._closed_error()
        protocol = self._protocol
        for stream_id in streams:
            entry = protocol._streams.pop(stream_id, None)
            if entry is None:
                continue
            if entry.transport is not None:
                entry.transport._closing = True
            reader = entry.reader
            if not reader.at_eof() and reader.exception() is None:
                reader.set_exception(err)
                reader._wt_discard()
        for waiter in (self._incoming_waiter, self._datagram_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if protocol._sessions.get(self._session_id) is self:
            del protocol._sessions[self._session_id]
        self._closed_event.set()


# ---------------------------------------------------------------------- protocol


class WebTransportProtocol(QuicConnectionProtocol):
    """A :class:`QuicConnectionProtocol` speaking HTTP/3 with WebTransport sessions: an
    asyncio adapter over the sans-IO :class:`~aiopquic.h3.webtransport.WebTransportConnection`
    (which tracks the sessions and their streams).

    WebTransport needs QUIC datagrams: without ``max_datagram_frame_size`` in the
    configuration it is turned off for the connection (with a logged warning) and only plain
    HTTP/3 is spoken.

    Server side, each WebTransport CONNECT to ``path`` (any path if ``None``) becomes a
    :class:`WebTransportSession` passed to ``await handler(session)``; the session is closed
    when the handler returns.  Other requests go to :meth:`http_event_received`, which
    answers 404 by default: subclass it to serve plain HTTP/3 on the same connection.
    ``supported_protocols`` is the WT-Protocol allowlist (the server picks the client's
    first offer on it; an offer with none on it is refused with 400).

    Receive credit follows consumption: WebTransport streams return it as their readers are
    read, and the session capsules as they are parsed.  The credit of the ``DataReceived``
    events given to :meth:`http_event_received` returns when it returns, unless the subclass
    sets :attr:`http_credit_on_consume`.  ``max_field_section_size`` (default: the class
    attribute, 64 KiB) is the largest request/response header section accepted.
    """

    http_credit_on_consume = False
    """When True, the subclass returns the flow-control credit of each ``DataReceived``
    passed to :meth:`http_event_received` itself, with ``self.http.consumed(stream_id,
    len(event.data))`` once it has used the bytes: a body nobody reads then stops its sender
    after the flow-control window instead of piling up in memory."""

    max_field_section_size = DEFAULT_MAX_FIELD_SECTION_SIZE

    def __init__(self, quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None,
                 *, handler: Optional[WebTransportHandler] = None, path: Optional[str] = None,
                 enable_webtransport: bool = True,
                 max_field_section_size: Optional[int] = None,
                 supported_protocols: Optional[list[str]] = None,
                 compat: Optional[_CompatServer] = None) -> None:
        super().__init__(quic, stream_handler=stream_handler)
        if enable_webtransport and not quic.configuration.max_datagram_frame_size:
            logger.warning("WebTransport disabled on this connection: the QUIC configuration "
                           "has no max_datagram_frame_size (browsers need datagrams)")
            enable_webtransport = False
        self._wt = WebTransportConnection(
            quic, enable_webtransport=enable_webtransport,
            max_field_section_size=max_field_section_size or self.max_field_section_size,
            supported_protocols=supported_protocols)
        self._http = self._wt.http
        self._handler = handler
        self._path = path
        self._sessions: dict[int, WebTransportSession] = {}
        self._streams: dict[int, _StreamEntry] = {}
        self._response_waiters: dict[int, asyncio.Future[H3Event]] = {}
        self._close_timers: dict[int, asyncio.TimerHandle] = {}
        self._credit_waiters: list[asyncio.Future[None]] = []
        self._settings_waiter: asyncio.Future[None] = self._loop.create_future()
        self._tasks: set[asyncio.Task[Any]] = set()
        # sessions of aiopquic 0.6.1's API (WebTransportClient / WebTransportServerSession)
        self._compat: dict[int, WebTransportSessionBase] = {}
        self._compat_server = compat
        _PROTOCOLS[id(self)] = self

    # ------------------------------------------------------------------ helpers

    @property
    def http(self) -> H3Connection:
        """The underlying sans-IO :class:`H3Connection`."""
        return self._http

    @property
    def webtransport(self) -> WebTransportConnection:
        """The underlying sans-IO :class:`WebTransportConnection`."""
        return self._wt

    @property
    def sessions(self) -> list[WebTransportSession]:
        """The sessions currently known on this connection."""
        return list(self._sessions.values())

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_settings(self) -> None:
        """Wait for the peer's SETTINGS; raises :class:`ConnectionError` if the connection
        closes first."""
        await asyncio.shield(self._settings_waiter)

    async def _wait_writable(self, stream_id: int) -> None:
        """Wait until ``stream_id``'s Python-side send queue is empty (back-pressure)."""
        quic = self._quic
        while True:
            if quic.closed:
                raise ConnectionError(f"connection closed: {self._wt.close_message()}")
            if not quic.stream_send_pending(stream_id):
                return  # the usual case: no future, no callback
            fut = self._loop.create_future()

            def wake(fut: asyncio.Future[None] = fut) -> None:
                if not fut.done():
                    fut.set_result(None)

            if not self._wt.add_drain_waiter(stream_id, wake):
                return
            await fut

    async def _wait_stream_credit(self, session: WebTransportSession,
                                  bidirectional: bool) -> None:
        """Wait while the peer's WT_MAX_STREAMS forbids another stream (a capsule raising
        it, the session's end or the connection's end wakes us)."""
        while not self._wt.can_open_stream(session._session_id, bidirectional):
            if session._closed_info is not None:
                raise session._closed_error()
            fut = self._loop.create_future()
            self._credit_waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._credit_waiters:
                    self._credit_waiters.remove(fut)
        if session._closed_info is not None:
            raise session._closed_error()

    def _new_stream(self, session: WebTransportSession, stream_id: int, readable: bool,
                    writable: bool) -> tuple[_WTReader, Optional[asyncio.StreamWriter]]:
        reader = _WTReader(self._wt, session._session_id, stream_id, self._loop)
        entry = _StreamEntry(stream_id, reader, session)
        self._streams[stream_id] = entry
        writer: Optional[asyncio.StreamWriter] = None
        if writable:
            transport = _WTTransport(session, stream_id)
            flow: Any = _WTFlow(session, stream_id)
            entry.transport = transport
            writer = asyncio.StreamWriter(transport, flow, reader, self._loop)
            entry.writer = writer
        return reader, writer

    # ------------------------------------------------------------------ events

    def quic_event_received(self, event: quic_events.QuicEvent) -> None:
        """Feed every QUIC event to the WebTransport layer and dispatch what it reports."""
        self._handle(self._wt.handle_event(event))
        if isinstance(event, quic_events.ConnectionTerminated):
            self._on_connection_terminated()
        if self._http.received_settings is not None and not self._settings_waiter.done():
            self._settings_waiter.set_result(None)
        if self._credit_waiters:
            for fut in self._credit_waiters:
                if not fut.done():
                    fut.set_result(None)

    def _flush_core(self) -> None:
        """Dispatch events a core call produced outside handle_event."""
        self._handle(self._wt._take())

    def _handle(self, events: list[H3Event]) -> None:
        for event in events:
            self._dispatch(event)

    def _dispatch(self, event: H3Event) -> None:
        if self._compat and isinstance(event, WebTransportEvent) and \
                getattr(event, "session_id", -1) in self._compat:
            self._compat_dispatch(event)
            return
        if isinstance(event, HeadersReceived):  # the most frequent events first
            self.http_event_received(event)
            return
        if isinstance(event, DataReceived):
            self.http_event_received(event)
            if not self.http_credit_on_consume:
                self._http.consumed(event.stream_id, len(event.data))
            return
        if isinstance(event, StreamData):
            entry = self._streams.get(event.stream_id)
            if entry is None:  # nobody will read it: return the credit
                self._wt.consumed(event.stream_id, len(event.data),
                                  session_id=event.session_id)
                return
            if event.data:
                entry.reader._wt_feed(event.data)
            if event.ended:
                entry.reader.feed_eof()
        elif isinstance(event, StreamOpened):
            session = self._sessions.get(event.session_id)
            if session is None:
                return
            if len(session._incoming) >= _MAX_PENDING_STREAMS:
                # the application does not accept streams this fast: refuse, do not pile up
                session.streams_refused += 1
                self._wt.refuse_stream(event.stream_id)
                return
            reader, writer = self._new_stream(session, event.stream_id, readable=True,
                                              writable=event.bidirectional)
            session._add_incoming(reader, writer)
        elif isinstance(event, StreamFinished):
            self._streams.pop(event.stream_id, None)
        elif isinstance(event, StreamResetByPeer):
            entry = self._streams.get(event.stream_id)
            if entry is not None:
                what = f"WebTransport code {event.error_code}" \
                    if event.error_code is not None else f"HTTP/3 code {event.http3_code:#x}"
                entry.reader.set_exception(ConnectionResetError(
                    f"stream {event.stream_id} reset by the peer ({what})"))
                entry.reader._wt_discard()
        elif isinstance(event, StreamStopped):
            entry = self._streams.get(event.stream_id)
            if entry is not None and entry.transport is not None:
                entry.transport._closing = True
        elif isinstance(event, SessionDatagram):
            session = self._sessions.get(event.session_id)
            if session is not None and session._state != _PENDING:
                session._on_datagram(event.data)
        elif isinstance(event, SessionClosed):
            timer = self._close_timers.pop(event.session_id, None)
            if timer is not None:
                timer.cancel()
            if not event.by_peer and not event.connection_gone:
                self._close_timers[event.session_id] = self._loop.call_later(
                    _RESET_DELAY, self._expire_close, event.session_id)
            session = self._sessions.get(event.session_id)
            if session is not None:
                session._terminate(event.code, event.reason, event.streams)
            else:
                for stream_id in event.streams:
                    self._streams.pop(stream_id, None)
        elif isinstance(event, SessionDraining):
            session = self._sessions.get(event.session_id)
            if session is not None:
                session._on_draining()
        elif isinstance(event, SessionRequested):
            self._on_session_request(event)
        elif isinstance(event, (SessionEstablished, SessionRefused)):
            waiter = self._response_waiters.pop(event.session_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
            if isinstance(event, SessionRefused):
                self._sessions.pop(event.session_id, None)
        else:
            self.http_event_received(event)

    def _compat_dispatch(self, event: WebTransportEvent) -> None:
        """Route a core event of a 0.6.1-style session to its ``_on_event`` hook, as 0.6.1's
        event tuples ``(type, stream_id, data, fin, error_code, cnx_ptr, session_ptr,
        stream_ptr)``."""
        sid = getattr(event, "session_id", -1)
        compat = self._compat[sid]
        cnx = id(self)
        ptr = compat._state.session_ptr
        if isinstance(event, StreamData):
            kind = _EVT_WT_STREAM_FIN if event.ended else _EVT_WT_STREAM_DATA
            held = compat._wt6_held
            compat._wt6_deliver((kind, event.stream_id, event.data, event.ended, 0, cnx, ptr,
                                 event.stream_id + 1))
            # what the hook did not keep for receive_stream_data() is the application's now
            kept = compat._wt6_held - held
            if len(event.data) > kept:
                self._wt.consumed(event.stream_id, len(event.data) - kept, session_id=sid)
        elif isinstance(event, StreamOpened):
            compat._wt6_deliver((_EVT_WT_NEW_STREAM, event.stream_id, None, False, 0, cnx, ptr,
                                 event.stream_id + 1))
        elif isinstance(event, StreamResetByPeer):
            code = event.error_code if event.error_code is not None else event.http3_code
            compat._wt6_deliver((_EVT_WT_STREAM_RESET, event.stream_id, None, False, code, cnx,
                                 ptr, event.stream_id + 1))
        elif isinstance(event, StreamStopped):
            code = event.error_code if event.error_code is not None else event.http3_code
            compat._wt6_deliver((_EVT_WT_STOP_SENDING, event.stream_id, None, False, code, cnx,
                                 ptr, event.stream_id + 1))
        elif isinstance(event, StreamFinished):
            compat._wt6_deliver((_EVT_WT_STREAM_DESTROY, event.stream_id, None, False, 0, cnx,
                                 ptr, 0))
        elif isinstance(event, SessionDatagram):
            compat._wt6_deliver((_EVT_WT_DATAGRAM, sid, event.data, False, 0, cnx, ptr, 0))
        elif isinstance(event, SessionDraining):
            compat._wt6_deliver((_EVT_WT_SESSION_DRAINING, sid, None, False, 0, cnx, ptr, 0))
        elif isinstance(event, SessionEstablished):
            compat._state._protocol_name = event.protocol
            compat._wt6_deliver((_EVT_WT_SESSION_READY, sid, None, False, 0, cnx, ptr, 0))
        elif isinstance(event, SessionRefused):
            del self._compat[sid]
            code = event.status
            if code == 400 and compat._wt6_offered:
                code = WT_ALPN_ERROR  # refused for its WT-Available-Protocols
            compat._wt6_deliver((_EVT_WT_SESSION_REFUSED, sid, None, False, code, cnx, ptr, 0))
            compat._wt6_connection_done()
        elif isinstance(event, SessionClosed):
            if event.connection_gone:
                return  # _EVT_WT_CNX_CLOSED follows, for every session still registered
            if not compat.is_client:
                del self._compat[sid]
            if not compat.session_closed:  # not our own close(): the peer's, or an error
                compat._wt6_deliver((_EVT_WT_SESSION_CLOSED, sid, event.reason.encode(),
                                     False, event.code, cnx, ptr, 0))
            compat._wt6_connection_done()

    def _expire_close(self, session_id: int) -> None:
        self._close_timers.pop(session_id, None)
        self._wt.expire_close(session_id)

    def http_event_received(self, event: H3Event) -> None:
        """Called for HTTP/3 events that are not WebTransport's (plain requests and
        responses, GOAWAY ...).  The default answers every new request with 404 (501 for an
        extended CONNECT of another protocol) on a server and ignores events on a client."""
        if self._quic.configuration.is_client or not isinstance(event, HeadersReceived):
            return
        method = protocol = None
        for name, value in event.headers:
            if name == b":method":
                method = value
            elif name == b":protocol":
                protocol = value
        status = b"501" if method == b"CONNECT" and protocol is not None else b"404"
        try:
            self._http.send_headers(event.stream_id, [(b":status", status),
                                                      (b"content-length", b"0")],
                                    end_stream=True)
        except Exception as exc:
            logger.debug("cannot answer stream %d: %s", event.stream_id, exc)

    # ---- server: new session

    def _on_session_request(self, event: SessionRequested) -> None:
        session_id = event.session_id
        if self._compat_server is not None:
            self._compat_server.on_request(self, event)
            return
        session = self._new_server_session(event)
        if session is None:
            return
        self._sessions[session_id] = session

    def _new_server_session(self, event: SessionRequested) -> Optional[WebTransportSession]:
        session = WebTransportSession(self, event.session_id, event.headers, pending=True)
        session._protocol_name = self._wt.session_protocol(event.session_id)
        self._sessions[event.session_id] = session
        if self._handler is None or (self._path is not None and
                                     event.path.split("?", 1)[0] != self._path):
            session.reject(404)
            return None
        self._spawn(self._run_handler(session))
        return session

    async def _run_handler(self, session: WebTransportSession) -> None:
        assert self._handler is not None
        try:
            await self._handler(session)
        except WebTransportRejected as exc:
            if session._state == _PENDING:
                session.reject(exc.status)
            else:
                session.close(0, "")
        except WebTransportSessionClosed:
            pass
        except Exception:
            logger.exception("WebTransport handler failed for %s", session.path)
            if session._state == _PENDING:
                session.reject(500)
            else:
                session.close(1, "internal error")
        except asyncio.CancelledError:
            if session._closed_info is None and not self._quic.closed:
                session.close(0, "")
            raise
        if session._closed_info is None and not self._quic.closed:
            session.close(0, "")

    def _on_connection_terminated(self) -> None:
        message = self._wt.close_message()
        _PROTOCOLS.pop(id(self), None)
        code = self._quic.close_event.error_code if self._quic.close_event else 0
        for compat in list(self._compat.values()):
            compat._wt6_deliver((_EVT_WT_CNX_CLOSED, compat.control_stream_id, None, False,
                                 code, 0, compat._state.session_ptr, 0))
        self._compat.clear()
        for waiter in self._response_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"connection closed: {message}"))
        self._response_waiters.clear()
        if not self._settings_waiter.done():
            self._settings_waiter.set_exception(ConnectionError(
                f"connection closed before HTTP/3 SETTINGS: {message}"))
            self._settings_waiter.exception()
        for session in list(self._sessions.values()):
            session._terminate(0, f"connection closed: {message}", [])
        self._sessions.clear()
        for entry in self._streams.values():
            if not entry.reader.at_eof() and entry.reader.exception() is None:
                entry.reader.set_exception(ConnectionError(f"connection closed: {message}"))
        self._streams.clear()
        for timer in self._close_timers.values():
            timer.cancel()
        self._close_timers.clear()

    # ---- client: open a session

    async def open_session(self, authority: str, path: str, *,
                           headers: Optional[Headers] = None,
                           protocol: Optional[str] = None,
                           protocols: Optional[list[str]] = None,
                           timeout: float = 30.0) -> WebTransportSession:
        """Client: send a WebTransport CONNECT for ``path`` and wait for the answer.

        ``protocol`` is the ``:protocol`` token (default: ``webtransport-h3`` when the server
        speaks draft-15, else ``webtransport``); ``protocols`` is offered as
        WT-Available-Protocols (the server's choice is :attr:`WebTransportSession.protocol`;
        a choice we never offered closes the session with WT_ALPN_ERROR).

        Raises :class:`WebTransportError` if the server does not support WebTransport,
        :class:`WebTransportRejected` for a non-2xx answer, :class:`WebTransportSessionClosed`
        if the session closed at once (e.g. WT_ALPN_ERROR), :class:`ConnectionError` if the
        connection closes, :class:`TimeoutError` after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.wait_settings(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no HTTP/3 SETTINGS from the server within {timeout:g} s") \
                from None
        try:
            stream_id = self._wt.open_session(authority, path, headers=headers,
                                              protocol=protocol,
                                              available_protocols=protocols)
        except RuntimeError as exc:
            raise WebTransportError(str(exc)) from None
        session = WebTransportSession(self, stream_id, [], pending=False)
        session._request_path = path
        self._sessions[stream_id] = session
        fut: asyncio.Future[H3Event] = self._loop.create_future()
        self._response_waiters[stream_id] = fut
        try:
            answer = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            self._sessions.pop(stream_id, None)
            self._response_waiters.pop(stream_id, None)
            self._handle(self._wt.cancel_session(stream_id))
            raise TimeoutError(f"no answer to the WebTransport request within {timeout:g} s") \
                from None
        except BaseException:
            self._sessions.pop(stream_id, None)
            raise
        if isinstance(answer, SessionRefused):
            self._sessions.pop(stream_id, None)
            session._headers = answer.headers
            session._closed_info = (0, answer.reason)
            session._closed_event.set()
            if answer.status:
                raise WebTransportRejected(answer.status)
            if self._quic.closed:
                raise ConnectionError(answer.reason)
            raise WebTransportError(answer.reason)
        assert isinstance(answer, SessionEstablished)
        session._headers = answer.headers
        session._protocol_name = answer.protocol
        if session._closed_info is not None:
            raise session._closed_error()
        return session


# ---------------------------------------------------------------------- aiopquic 0.6.1's API
#
# WebTransportClient / WebTransportServerSession (and their base, 0.6.1's
# ``WebTransportSession``, named WebTransportSessionBase here because WebTransportSession is
# this module's stream-object session): sessions with stream ids, an ``_on_event`` hook fed
# 0.6.1's event tuples, drain events and datagram counts, on the same sans-IO core as the
# API above (WebTransportProtocol routes a 0.6.1-style session's events to its hook).

_EVT_STREAM_TX_DRAINED = 15
_EVT_STREAM_DESTROY = 17
_EVT_WT_STREAM_DESTROY = 18
_EVT_DATAGRAM_TX_DRAINED = 19
_EVT_WT_SESSION_READY = 64
_EVT_WT_SESSION_REFUSED = 65
_EVT_WT_SESSION_CLOSED = 66
_EVT_WT_SESSION_DRAINING = 67
_EVT_WT_STREAM_DATA = 68
_EVT_WT_STREAM_FIN = 69
_EVT_WT_STREAM_RESET = 70
_EVT_WT_STOP_SENDING = 71
_EVT_WT_DATAGRAM = 72
_EVT_WT_NEW_STREAM = 73
_EVT_WT_STREAM_CREATED = 74
_EVT_WT_NEW_SESSION = 75
_EVT_WT_CNX_CLOSED = 77

EventTuple = tuple[int, int, Optional[bytes], bool, int, int, int, int]
"""0.6.1's event tuple: (type, stream_id, data, fin, error_code, cnx_ptr, session_ptr,
stream_ptr)."""

_MAX_QUEUED_EVENTS = 1024  # events waiting in events() before new ones are dropped
_MAX_INBOXES = 1024  # streams with unread data before new peer streams are refused
_MAX_RESETS = 1024  # resets of streams nobody reads yet, remembered for receive_stream_data()

# live WebTransport connections by the "cnx_ptr" 0.6.1-style sessions report (id of the
# protocol); entries leave when the connection ends
_PROTOCOLS: dict[int, WebTransportProtocol] = {}


def connection_for_ptr(cnx_ptr: int) -> Optional[QuicConnection]:
    """The :class:`QuicConnection` of a 0.6.1-style session's ``cnx_ptr`` while the
    connection lives, else ``None`` (for transports answering ``peer_address(cnx_ptr)``
    and the like)."""
    proto = _PROTOCOLS.get(cnx_ptr)
    return proto._quic if proto is not None else None


class WebTransportSessionState:
    """Where a 0.6.1-style session lives: its connection and session id (0.6.1's
    ``_binding._transport.WebTransportSessionState``, here a plain object)."""

    def __init__(self, protocol: Optional[WebTransportProtocol] = None,
                 session_id: int = -1) -> None:
        self._protocol = protocol
        self._session_id = session_id
        self._protocol_name: Optional[str] = None

    @property
    def session_ptr(self) -> int:
        """A non-zero id of this session (0.6.1: the C session pointer)."""
        return id(self)

    @property
    def cnx_ptr(self) -> int:
        """A non-zero id of the connection while it lives (0 before and after)."""
        proto = self._protocol
        if proto is None or proto._quic.closed:
            return 0
        return id(proto)

    @property
    def control_stream_id(self) -> int:
        """The session id (the CONNECT stream's id); -1 before the request is sent."""
        return self._session_id

    @property
    def negotiated_wt_protocol(self) -> Optional[str]:
        """The WT-Protocol negotiated for the session, or ``None``."""
        return self._protocol_name


class _ContextShim:
    """What a server hands 0.6.1-style sessions as their ``transport`` when no
    TransportContext was given: the per-connection queries of 0.6.1's TransportContext,
    keyed by ``cnx_ptr``."""

    tx_event_ring_capacity = 0
    tx_event_ring_count = 0

    def __init__(self) -> None:
        self._ring_event: Optional[asyncio.Event] = None

    @property
    def tx_event_ring_drain_event(self) -> asyncio.Event:
        """Always set: commands never wait for room in Python here."""
        if self._ring_event is None:
            self._ring_event = asyncio.Event()
            self._ring_event.set()
        return self._ring_event

    def arm_tx_event_ring_drain_pending(self) -> bool:
        """Nothing to arm (the command ring is never full from Python's view)."""
        return False

    def peer_address(self, cnx_ptr: int) -> Optional[tuple[str, int]]:
        """The peer's (host, port) of the connection ``cnx_ptr``."""
        quic = connection_for_ptr(cnx_ptr)
        addr = getattr(quic, "peer_address", None) if quic is not None else None
        if callable(addr):
            addr = addr()
        return (str(addr[0]), int(addr[1])) if addr else None

    def local_address(self, cnx_ptr: int) -> Optional[tuple[str, int]]:
        """This side's (host, port) of the connection ``cnx_ptr`` (when known)."""
        quic = connection_for_ptr(cnx_ptr)
        fn = getattr(quic, "local_address", None)
        return fn() if callable(fn) else None

    def path_quality(self, cnx_ptr: int) -> dict[str, Any]:
        """0.6.1's path-quality dict for the connection (empty when unknown)."""
        quic = connection_for_ptr(cnx_ptr)
        fn = getattr(quic, "path_quality", None)
        return dict(fn()) if callable(fn) else {}

    def transport_parameters(self, cnx_ptr: int, local: bool = False
                             ) -> Optional[dict[str, Any]]:
        """The connection's transport parameters, the peer's (default) or ours (``local``);
        None when unknown."""
        quic = connection_for_ptr(cnx_ptr)
        if quic is None:
            return None
        return getattr(quic, "local_transport_parameters" if local
                       else "peer_transport_parameters", None)

    def connection_ids(self, cnx_ptr: int) -> Optional[dict[str, bytes]]:
        """The connection's ``{'local', 'remote', 'initial'}`` connection IDs, or None."""
        quic = connection_for_ptr(cnx_ptr)
        return getattr(quic, "connection_ids", None) if quic is not None else None


def _ensure_bytes(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"data must be bytes-like, got {type(data).__name__}")


class WebTransportSessionBase:
    """An established WebTransport session, aiopquic 0.6.1's way (0.6.1 called this base
    class ``WebTransportSession``; see docs/migrating.md): streams are ids, data arrives
    through :meth:`_on_event` (which subclasses override, as aiomoqt does) into
    :meth:`receive_stream_data` and :meth:`events`.

    ``transport`` is what the session reports as ``_transport`` (0.6.1's TransportContext,
    or the object a server hands its sessions); ``role`` is ``"client"`` or ``"server"``.
    Call it from the event loop's thread.
    """

    tx_max_queued_bytes: Optional[int] = 4 * 1024 * 1024
    """Accepted for 0.6.1 compatibility: the send buffers bound memory by themselves."""
    stream_ring_cap: int = 4 * 1024 * 1024
    """Accepted for 0.6.1 compatibility (the stream ring size is the configuration's)."""

    def __init__(self, transport: Any, role: str,
                 state: Optional[WebTransportSessionState] = None) -> None:
        if role not in ("client", "server"):
            raise ValueError(f"role must be 'client' or 'server', got {role!r}")
        self._transport = transport
        self._role = role
        self._state = state if state is not None else WebTransportSessionState()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._dispatcher_attached = False
        """0.6.1's flag: True while the session holds its connection (between a client's
        :meth:`WebTransportClient.open` and :meth:`detach`, or a server session's life)."""
        self._session_ready: Optional[asyncio.Future[None]] = None
        # the _session_ready future already seen established (a ready session stays ready
        # until it closes; a client's open() makes a new future)
        self._wt6_ready_ok: Optional[asyncio.Future[None]] = None
        self._session_closed = asyncio.Event()
        self._cnx_closed = asyncio.Event()
        self._fin_sent = False
        self._session_close_event: Optional[quic_events.WebTransportSessionClosed] = None
        self._draining = False
        self._stream_inbox: dict[int, asyncio.Queue[quic_events.QuicEvent]] = {}
        self._stream_tx_drain_events: dict[int, asyncio.Event] = {}
        self._event_queue: asyncio.Queue[quic_events.QuicEvent] = asyncio.Queue()
        self._dgram_tx_drain_event = asyncio.Event()
        self._dgram_tx_drain_event.set()
        self._wt6_held = 0  # stream bytes kept in inboxes (credited as they are read)
        self._wt6_offered: list[str] = []
        self._wt6_resets: dict[int, int] = {}
        self.events_dropped = 0
        """Events (datagrams, new streams, ...) dropped because :meth:`events` was not read
        and 1024 were waiting."""
        self.streams_refused = 0
        """Peer streams refused (WT_BUFFERED_STREAM_REJECTED) because 1024 streams with
        unread data were waiting for :meth:`receive_stream_data`."""

    # ------------------------------------------------------------------ state

    @property
    def role(self) -> str:
        """``"client"`` for the initiating side, ``"server"`` for the accepting side."""
        return self._role

    @property
    def is_client(self) -> bool:
        """True on the initiating side."""
        return self._role == "client"

    @property
    def is_server(self) -> bool:
        """True on the accepting side."""
        return self._role == "server"

    @property
    def negotiated_protocol(self) -> Optional[str]:
        """The WT-Protocol negotiated for this session (the server's choice from the
        client's WT-Available-Protocols), or ``None``."""
        return self._state.negotiated_wt_protocol

    @property
    def session_ready(self) -> bool:
        """True once the session is established."""
        return self._session_ready is not None and self._session_ready.done() and \
            not self._session_ready.cancelled() and self._session_ready.exception() is None

    @property
    def session_closed(self) -> bool:
        """True once the session is closed (either side, or with the connection)."""
        return self._session_closed.is_set()

    @property
    def is_draining(self) -> bool:
        """True once either side asked to drain the session."""
        return self._draining

    @property
    def control_stream_id(self) -> int:
        """The session id (the CONNECT stream's id)."""
        return self._state.control_stream_id

    @property
    def cnx_ptr(self) -> int:
        """A non-zero id of the connection while the session is open; 0 after it closed."""
        if self._session_closed.is_set():
            return 0
        return self._state.cnx_ptr

    def _wt6_proto(self) -> WebTransportProtocol:
        proto = self._state._protocol
        if proto is None:
            raise WebTransportError("session not open")
        return proto

    def _wt6_check(self) -> WebTransportProtocol:
        if self._session_closed.is_set():
            raise WebTransportError("WT session closed")
        ready = self._session_ready
        if ready is None or ready is not self._wt6_ready_ok:
            if not self.session_ready:
                raise WebTransportError("session not ready")
            self._wt6_ready_ok = ready
        return self._wt6_proto()

    # ------------------------------------------------------------------ streams

    async def create_stream(self, bidir: bool = True, timeout: float = 5.0) -> int:
        """Open a stream and return its id.  Waits (at most ``timeout`` seconds, then
        :class:`asyncio.TimeoutError`) while the peer's WT_MAX_STREAMS allows no more.
        Raises :class:`WebTransportError` when the session is not open."""
        proto = self._wt6_check()
        sid = self._state.control_stream_id
        if not proto._wt.can_open_stream(sid, bidir):
            await asyncio.wait_for(self._wt6_wait_credit(proto, bidir), timeout)
        if self.session_closed:
            raise WebTransportError("WT session closed")
        try:
            return proto._wt.create_stream(sid, bidir)
        except RuntimeError as exc:
            raise WebTransportError(str(exc)) from None

    async def _wt6_wait_credit(self, proto: WebTransportProtocol, bidir: bool) -> None:
        while not proto._wt.can_open_stream(self._state.control_stream_id, bidir):
            if self.session_closed:
                return
            fut = proto._loop.create_future()
            proto._credit_waiters.append(fut)
            try:
                await fut
            finally:
                if fut in proto._credit_waiters:
                    proto._credit_waiters.remove(fut)

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Write ``data`` (and FIN with ``end_stream``) on a stream of the session.  Never
        raises for a full buffer (the excess waits in Python; pace with
        :meth:`send_stream_data_drained`).  Raises :class:`ConnectionError` once the session
        is closed and :class:`WebTransportError` for a stream not open for sending."""
        if self._session_closed.is_set():
            raise ConnectionError("WT session closed")
        self._wt6_send(self._wt6_check(), stream_id, data, end_stream)

    def _wt6_send(self, proto: WebTransportProtocol, stream_id: int, data: Any,
                  end_stream: bool) -> None:
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
            if isinstance(data, memoryview) and (data.itemsize != 1 or not data.c_contiguous):
                data = bytes(data)  # len() must count bytes
        try:  # (a bytearray or memoryview is copied into the stream's ring, not kept)
            proto._wt.send_stream_data(stream_id, data, end_stream)
        except RuntimeError as exc:
            raise WebTransportError(
                f"WT stream {stream_id} not available (never opened, closed, or reset): "
                f"{exc}") from None

    async def send_stream_data_drained(self, stream_id: int, data: bytes,
                                       end_stream: bool = False, *,
                                       soft_yield_at: float = 0.5,
                                       hard_wait_at: float = 0.9) -> None:
        """Send with backpressure: waits while earlier bytes of the stream still queue in
        Python, writes, then waits until this write has left the Python queue.  It yields
        to the event loop on a stream's first write and when the connection's command ring
        is over ``soft_yield_at`` full (as 0.6.1 did), not after every write: a producer
        writing many small objects keeps the loop for a batch of them.  Returns quietly once
        the session is closed (as 0.6.1 did); ``hard_wait_at`` is accepted for 0.6.1
        compatibility."""
        if self._session_closed.is_set():
            return
        proto = self._wt6_check()
        quic = proto._quic
        st = None if end_stream else proto._wt._send_now(stream_id, data)
        if st is not None:
            # the common case (an open stream, nothing queued anywhere): written; wait only
            # if part of it had to queue in Python
            if st.spill or quic._closed:
                await proto._wait_writable(stream_id)
            elif quic._endpoint._deferred:
                await asyncio.sleep(0)  # the command ring filled: let the loop run
            return
        if quic.closed or quic.stream_send_pending(stream_id):
            await proto._wait_writable(stream_id)  # (raises if the connection is closed)
            if self.session_closed:
                return
        first = quic._tx.get(stream_id) is None
        self.send_stream_data(stream_id, data, end_stream)
        if quic.closed or quic.stream_send_pending(stream_id):
            await proto._wait_writable(stream_id)
        if not end_stream and (first or quic.tx_event_ring_fill() > soft_yield_at):
            await asyncio.sleep(0)  # a new stream, or a busy ring: let the loop run

    def _wt6_quic(self) -> Optional[QuicConnection]:
        proto = self._state._protocol
        return proto._quic if proto is not None else None

    def get_tx_data_drain_event(self, stream_id: int) -> asyncio.Event:
        """The event set when ``stream_id``'s send buffer drains after
        :meth:`set_tx_data_drain_pending` (and when the session ends)."""
        quic = self._wt6_quic()
        fn = getattr(quic, "get_tx_data_drain_event", None)
        if fn is not None and not self.session_closed:
            ev: asyncio.Event = fn(stream_id)
            self._stream_tx_drain_events[stream_id] = ev
            return ev
        ev = self._stream_tx_drain_events.get(stream_id) or asyncio.Event()
        self._stream_tx_drain_events[stream_id] = ev
        if self.session_closed:
            ev.set()
        return ev

    def tx_data_ring_used(self, stream_id: int) -> int:
        """Bytes of ``stream_id`` still buffered for sending (0 for an unknown stream)."""
        quic = self._wt6_quic()
        return 0 if quic is None else quic.tx_data_ring_used(stream_id)

    def tx_sent_bytes(self, stream_id: int) -> int:
        """Bytes of ``stream_id`` that have left the send buffer for good."""
        quic = self._wt6_quic()
        fn = getattr(quic, "tx_sent_bytes", None)
        return int(fn(stream_id)) if fn is not None else 0

    def set_tx_data_drain_pending(self, stream_id: int) -> None:
        """Ask for :meth:`get_tx_data_drain_event` to be set at the next drain of
        ``stream_id``'s buffer (at once when nothing waits)."""
        quic = self._wt6_quic()
        fn = getattr(quic, "set_tx_data_drain_pending", None)
        if fn is not None:
            fn(stream_id)
            return
        ev = self.get_tx_data_drain_event(stream_id)
        proto = self._state._protocol
        if proto is None or not proto._wt.add_drain_waiter(stream_id, ev.set):
            ev.set()

    def clear_tx_data_drain_pending(self, stream_id: int) -> None:
        """Withdraw :meth:`set_tx_data_drain_pending`."""
        quic = self._wt6_quic()
        fn = getattr(quic, "clear_tx_data_drain_pending", None)
        if fn is not None:
            fn(stream_id)

    def tx_event_ring_fill(self) -> float:
        """How full the command ring to the network thread is (0.0 .. 1.0)."""
        quic = self._wt6_quic()
        fn = getattr(quic, "tx_event_ring_fill", None)
        return float(fn()) if fn is not None else 0.0

    def path_quality(self) -> dict[str, Any]:
        """The connection's path-quality figures (empty when unknown or closed)."""
        quic = self._wt6_quic()
        fn = getattr(quic, "path_quality", None)
        if fn is None or self.session_closed:
            return {}
        return dict(fn())

    def peer_address(self) -> Optional[tuple[str, int]]:
        """The peer's (host, port), or ``None`` before it is known / after the close."""
        quic = self._wt6_quic()
        if quic is None or self.session_closed:
            return None
        addr: Any = quic.peer_address
        if callable(addr):
            addr = addr()
        return (str(addr[0]), int(addr[1])) if addr else None

    def local_address(self) -> Optional[tuple[str, int]]:
        """This side's (host, port) when the connection reports it."""
        quic = self._wt6_quic()
        fn = getattr(quic, "local_address", None)
        if fn is None or self.session_closed:
            return None
        result: Optional[tuple[str, int]] = fn()
        return result

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        """Reset a stream we send on with WebTransport code ``error_code`` (32-bit; larger
        values are HTTP/3 codes such as WT_SESSION_GONE and go out unchanged).  A stream we
        cannot send on is left alone."""
        proto = self._state._protocol
        if proto is None or self.session_closed:
            return
        if error_code > 0xFFFFFFFF:
            if not proto._quic.closed and proto._wt.stream_session(stream_id) is not None:
                proto._quic.reset_stream(stream_id, error_code)
            return
        proto._wt.reset_stream(stream_id, error_code)
        ev = self._stream_tx_drain_events.pop(stream_id, None)
        if ev is not None:
            ev.set()

    def stop_stream(self, stream_id: int, error_code: int = 0) -> None:
        """STOP_SENDING on a stream we receive on (``error_code`` as in
        :meth:`reset_stream`)."""
        proto = self._state._protocol
        if proto is None or self.session_closed:
            return
        proto._wt.stop_stream(stream_id, min(error_code, 0xFFFFFFFF))

    def set_stream_priority(self, stream_id: int, priority: int) -> int:
        """Send priority of one stream (0 highest .. 255); returns 0 (posted).  Raises
        :class:`ConnectionError` once the session is closed."""
        if self.session_closed:
            raise ConnectionError("set_stream_priority: session closed")
        return self._wt6_proto()._quic.set_stream_priority(stream_id, priority)

    def set_default_stream_priority(self, priority: int) -> None:
        """Priority of streams created from now on, on this session's connection."""
        self._wt6_proto()._quic.set_default_stream_priority(priority)

    # ------------------------------------------------------------------ datagrams

    def send_datagram_frame(self, data: bytes) -> int:
        """Send one datagram of the session: returns ``len(data)``, or 0 when the datagram
        queue is full (wait on :meth:`get_datagram_tx_drain_event`, resend the same payload).
        Raises :class:`ValueError` when it cannot fit a packet, :class:`ConnectionError`
        once the session is closed."""
        if self.session_closed:
            raise ConnectionError("send_datagram_frame: session closed")
        proto = self._wt6_check()
        payload = _ensure_bytes(data)
        try:
            if not proto._wt.send_datagram(self._state.control_stream_id, payload):
                self._dgram_tx_drain_event.clear()
                return 0
        except RuntimeError as exc:
            raise ConnectionError(f"send_datagram_frame: {exc}") from None
        return len(payload)

    def get_datagram_tx_drain_event(self) -> asyncio.Event:
        """Set while datagrams can be queued; cleared when :meth:`send_datagram_frame`
        returned 0, set again when there is room (and at the close)."""
        quic = self._wt6_quic()
        fn = getattr(quic, "get_datagram_tx_drain_event", None)
        if fn is not None and not self.session_closed:
            ev: asyncio.Event = fn()
            return ev
        return self._dgram_tx_drain_event

    def max_datagram_payload(self) -> int:
        """The largest datagram payload that fits one packet now."""
        quic = self._wt6_quic()
        return max(0, quic.max_datagram_size - 8) if quic is not None else 0

    # ------------------------------------------------------------------ receiving

    async def receive_stream_data(self, stream_id: int) -> AsyncIterator[quic_events.QuicEvent]:
        """Yield the stream's :class:`~aiopquic.quic.events.WebTransportStreamDataReceived`
        events (and a final :class:`~aiopquic.quic.events.WebTransportStreamReset`), ending
        on FIN or reset.  Receive credit returns as the events are taken."""
        q = self._stream_inbox.get(stream_id)
        if q is None and stream_id in self._wt6_resets:
            yield quic_events.WebTransportStreamReset(
                stream_id=stream_id, error_code=self._wt6_resets.pop(stream_id))
            return
        if q is None:
            if self._session_closed.is_set():
                yield quic_events.WebTransportStreamReset(stream_id=stream_id,
                                                          error_code=WT_SESSION_GONE)
                return
            q = self._stream_inbox[stream_id] = asyncio.Queue()
        while True:
            ev = await q.get()
            if isinstance(ev, quic_events.WebTransportStreamDataReceived) and ev.data:
                self._wt6_credit(stream_id, len(ev.data))
            yield ev
            if isinstance(ev, quic_events.WebTransportStreamDataReceived) and ev.end_stream:
                self._stream_inbox.pop(stream_id, None)
                return
            if isinstance(ev, quic_events.WebTransportStreamReset):
                self._stream_inbox.pop(stream_id, None)
                return

    def _wt6_credit(self, stream_id: int, n: int) -> None:
        self._wt6_held -= n
        proto = self._state._protocol
        if proto is not None:
            proto._wt.consumed(stream_id, n, session_id=self._state.control_stream_id)

    async def events(self) -> AsyncIterator[quic_events.QuicEvent]:
        """Yield the session's other events (new streams, datagrams, draining, stop-sending,
        refusal), ending with its :class:`~aiopquic.quic.events.WebTransportSessionClosed`."""
        while True:
            if self._session_closed.is_set() and self._event_queue.empty():
                return
            ev = await self._event_queue.get()
            yield ev
            if isinstance(ev, quic_events.WebTransportSessionClosed):
                return

    # ------------------------------------------------------------------ closing

    def close(self, error_code: int = 0, reason: bytes = b"") -> None:
        """Close the session with ``error_code`` (32-bit) and ``reason`` (UTF-8 bytes, at
        most 1024): CLOSE_WEBTRANSPORT_SESSION, then its streams end with WT_SESSION_GONE.
        Idempotent."""
        if self.session_closed:
            return
        text = reason.decode("utf-8", "replace") if isinstance(reason, (bytes, bytearray)) \
            else str(reason)
        self._session_closed.set()
        self._fin_sent = True
        proto = self._state._protocol
        if proto is not None and not proto._quic.closed and self._session_ready is not None:
            proto._handle(proto._wt.close_session(self._state.control_stream_id,
                                                  error_code & 0xFFFFFFFF, text[:1024]))
        self._wt6_release()
        self._event_queue.put_nowait(quic_events.WebTransportSessionClosed(
            error_code=error_code, reason=bytes(reason) if isinstance(
                reason, (bytes, bytearray)) else text.encode()))
        self._wt6_connection_done()

    def drain(self) -> None:
        """Send DRAIN_WEBTRANSPORT_SESSION: ask the peer to end the session soon."""
        proto = self._state._protocol
        if proto is not None and not self.session_closed:
            proto._wt.drain_session(self._state.control_stream_id)
        self._draining = True

    async def wait_closed(self, timeout: Optional[float] = None) -> None:
        """Wait until the session is closed (``timeout``: :class:`asyncio.TimeoutError`)."""
        if timeout is None:
            await self._session_closed.wait()
        else:
            await asyncio.wait_for(self._session_closed.wait(), timeout)

    async def aclose(self, error_code: int = 0, reason: bytes = b"", *,
                     timeout: float = 2.0) -> None:
        """Close the session and, on a client, wait (at most ``timeout``) for its connection
        to end.  A server returns once the close is queued."""
        if not self.session_closed:
            self.close(error_code, reason)
        if self._role == "server" or not self.session_ready:
            return
        try:
            await asyncio.wait_for(self._cnx_closed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def detach(self) -> None:
        """Release what the session holds (a client: its connection).  Idempotent."""

    def _wt6_connection_done(self) -> None:
        """The session ended: a client's connection (it owns it) is closed."""

    def _wt6_release(self) -> None:
        self._dgram_tx_drain_event.set()
        for drain in self._stream_tx_drain_events.values():
            drain.set()
        for sid, q in self._stream_inbox.items():
            while not q.empty():
                ev = q.get_nowait()
                if isinstance(ev, quic_events.WebTransportStreamDataReceived) and ev.data:
                    self._wt6_credit(sid, len(ev.data))  # never read: credit it back
            q.put_nowait(quic_events.WebTransportStreamReset(stream_id=sid,
                                                             error_code=WT_SESSION_GONE))
        self._stream_inbox.clear()

    # ------------------------------------------------------------------ the event hook

    def _wt6_queue(self, ev: quic_events.QuicEvent) -> None:
        if self._event_queue.qsize() >= _MAX_QUEUED_EVENTS:
            self.events_dropped += 1
            return
        self._event_queue.put_nowait(ev)

    def _wt6_deliver(self, ev_tuple: EventTuple) -> None:
        try:
            self._on_event(ev_tuple)
        except Exception:
            logger.exception("WebTransport session event handler failed (%r)", ev_tuple[0])

    def _on_session_closed(self, error_code: int, data: Optional[bytes]) -> None:
        ev = quic_events.WebTransportSessionClosed(error_code=error_code,
                                                   reason=bytes(data or b""))
        self._session_close_event = ev
        self._session_closed.set()
        self._wt6_release()
        if self._session_ready is not None and not self._session_ready.done():
            self._session_ready.set_exception(WebTransportError(
                "WT session closed before READY"))
            self._session_ready.exception()
        self._event_queue.put_nowait(ev)
        self._fin_sent = True

    def _on_event(self, ev_tuple: EventTuple) -> None:
        """Called for every event of this session, as 0.6.1's tuple ``(type, stream_id,
        data, fin, error_code, cnx_ptr, session_ptr, stream_ptr)``; ``type`` is one of the
        module's ``_EVT_*`` codes.  Subclasses override it (calling this one for what they
        do not handle); bytes a subclass takes from ``_EVT_WT_STREAM_DATA`` /
        ``_EVT_WT_STREAM_FIN`` events are the application's once it returns (their receive
        credit goes back then), those this base queues for :meth:`receive_stream_data`
        when they are read."""
        evt_type, sid, data, _fin, error_code = ev_tuple[:5]
        if evt_type in (_EVT_WT_STREAM_DATA, _EVT_WT_STREAM_FIN):
            if self._session_closed.is_set():
                return
            payload = bytes(data or b"")
            q = self._stream_inbox.get(sid)
            if q is None:
                proto = self._state._protocol
                if len(self._stream_inbox) >= _MAX_INBOXES and proto is not None:
                    self.streams_refused += 1  # nobody reads: refuse rather than pile up
                    proto._wt.refuse_stream(sid)
                    return
                q = self._stream_inbox[sid] = asyncio.Queue()
            self._wt6_held += len(payload)
            q.put_nowait(quic_events.WebTransportStreamDataReceived(
                stream_id=sid, data=payload, end_stream=evt_type == _EVT_WT_STREAM_FIN))
        elif evt_type == _EVT_WT_SESSION_READY:
            if self._session_ready is not None and not self._session_ready.done():
                self._session_ready.set_result(None)
        elif evt_type == _EVT_WT_SESSION_REFUSED:
            if self._session_ready is not None and not self._session_ready.done():
                # 0.6.1's wording ("refused (HTTP 400)"), which callers match on.
                if error_code == WT_ALPN_ERROR:  # the server answered 400 to our offer
                    why = "HTTP 400) - no WT-Protocol in common (WT_ALPN_ERROR"
                elif error_code >= 100:
                    why = f"HTTP {error_code}"
                else:
                    why = f"code={error_code}"
                self._session_ready.set_exception(WebTransportError(
                    f"WT CONNECT refused ({why})"))
                self._session_ready.exception()
            self._event_queue.put_nowait(
                quic_events.WebTransportSessionRefused(error_code=error_code))
        elif evt_type == _EVT_WT_SESSION_CLOSED:
            self._on_session_closed(error_code, data)
        elif evt_type == _EVT_WT_CNX_CLOSED:
            if not self.session_closed:
                self._on_session_closed(error_code, None)
            self._cnx_closed.set()
        elif evt_type == _EVT_WT_SESSION_DRAINING:
            self._draining = True
            self._wt6_queue(quic_events.WebTransportSessionDraining())
        elif evt_type == _EVT_WT_STREAM_RESET:
            if self._session_closed.is_set():
                return
            q = self._stream_inbox.get(sid)
            if q is not None:
                q.put_nowait(quic_events.WebTransportStreamReset(stream_id=sid,
                                                                 error_code=error_code))
            else:  # nobody reads it yet: remember the code (a bounded number of them)
                self._wt6_resets[sid] = error_code
                if len(self._wt6_resets) > _MAX_RESETS:
                    del self._wt6_resets[next(iter(self._wt6_resets))]
            ev = self._stream_tx_drain_events.pop(sid, None)
            if ev is not None:
                ev.set()
        elif evt_type == _EVT_WT_STOP_SENDING:
            self._wt6_queue(quic_events.WebTransportStopSending(stream_id=sid,
                                                                error_code=error_code))
            ev = self._stream_tx_drain_events.pop(sid, None)
            if ev is not None:
                ev.set()
        elif evt_type == _EVT_WT_DATAGRAM:
            self._wt6_queue(quic_events.WebTransportDatagramReceived(data=bytes(data or b"")))
        elif evt_type == _EVT_WT_NEW_STREAM:
            if not self._session_closed.is_set():
                self._wt6_queue(quic_events.WebTransportNewStream(stream_id=sid))
        elif evt_type == _EVT_WT_STREAM_DESTROY:
            ev = self._stream_tx_drain_events.pop(sid, None)
            if ev is not None:
                ev.set()


def _sf_list(items: list[str]) -> str:
    return encode_sf_string_list(items).decode("ascii")


def _client_configuration(transport: Any, host: str, sni: Optional[str],
                          configuration: Optional[QuicConfiguration] = None,
                          verify_peer: Optional[bool] = None,
                          ca_file: Optional[str] = None) -> QuicConfiguration:
    """The QUIC client configuration of a 0.6.1-style session: ``configuration``, else the
    transport's (``transport.configuration`` when it is a QuicConfiguration), else the
    defaults; with ALPN h3, datagrams, SNI and the verification overrides applied."""
    base = configuration
    if base is None:
        candidate = getattr(transport, "configuration", None)
        if isinstance(candidate, QuicConfiguration):
            base = candidate
    cfg = dataclasses.replace(base) if base is not None else QuicConfiguration(is_client=True)
    changes: dict[str, Any] = {"is_client": True, "alpn_protocols": list(H3_ALPN)}
    if not cfg.max_datagram_frame_size:
        changes["max_datagram_frame_size"] = _DEFAULT_DATAGRAM_FRAME
    if sni is not None:
        changes["server_name"] = sni
    elif cfg.server_name is None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            changes["server_name"] = host
    if verify_peer is False:
        import ssl

        changes["verify_mode"] = ssl.CERT_NONE
    if ca_file is not None:
        changes["cafile"] = ca_file
    return dataclasses.replace(cfg, **changes)


class WebTransportClient(WebTransportSessionBase):
    """The initiating side of a 0.6.1-style session: ``await open()`` connects to
    ``host``:``port`` and sends the CONNECT for ``path``, offering ``wt_available_protocols``
    as WT-Available-Protocols.

    ``transport`` is kept as ``_transport``; its ``configuration`` attribute, when it is a
    :class:`~aiopquic.quic.configuration.QuicConfiguration`, configures the connection (else
    a default client configuration verifying the server).  The session owns its connection:
    it closes with the session; :meth:`detach` releases it."""

    def __init__(self, transport: Any, host: str, port: int, path: str,
                 sni: Optional[str] = None,
                 wt_available_protocols: Optional[list[str]] = None) -> None:
        super().__init__(transport, role="client")
        self._host = host
        self._port = port
        self._path = path or "/"
        self._sni = sni or host
        self._wt_protocols = list(wt_available_protocols or [])
        self._wt6_offered = list(self._wt_protocols)
        self._wt6_stack: Optional[AsyncExitStack] = None
        self._wt6_configuration: Optional[QuicConfiguration] = None
        self._wt6_close_task: Optional[asyncio.Task[None]] = None
        self._wt6_observed: Optional[WebTransportProtocol] = None

    async def open(self, timeout: float = 10.0) -> None:
        """Connect and establish the session; raises :class:`WebTransportError` when the
        server refuses it or ``timeout`` passes, :class:`ConnectionError` when the
        connection fails."""
        self._loop = asyncio.get_running_loop()
        self._session_ready = self._loop.create_future()
        cfg = _client_configuration(self._transport, self._host, self._sni,
                                    self._wt6_configuration)
        stack = AsyncExitStack()
        self._wt6_stack = stack
        self._dispatcher_attached = True
        try:
            proto = await asyncio.wait_for(stack.enter_async_context(connect(
                self._host, self._port, configuration=cfg,
                create_protocol=WebTransportProtocol)), timeout)
            assert isinstance(proto, WebTransportProtocol)
            self._wt6_observed = proto
            self._wt6_observe(proto, True)
            await asyncio.wait_for(proto.wait_settings(), timeout)
            authority = f"{self._host}:{self._port}"
            try:
                sid = proto._wt.open_session(
                    authority, self._path, available_protocols=self._wt_protocols or None)
            except RuntimeError as exc:
                raise WebTransportError(str(exc)) from None
            self._state = WebTransportSessionState(proto, sid)
            proto._compat[sid] = self
            await asyncio.wait_for(asyncio.shield(self._session_ready), timeout)
        except asyncio.TimeoutError:
            await self._wt6_abandon()
            raise WebTransportError(f"WT CONNECT timed out after {timeout}s") from None
        except WebTransportError:
            await self._wt6_abandon()
            raise
        except ConnectionError as exc:  # the QUIC connection failed: 0.6.1 said so this way
            await self._wt6_abandon()
            raise WebTransportError(f"WT CONNECT failed: {exc}") from exc
        except BaseException:
            await self._wt6_abandon()
            raise

    def _wt6_observe(self, proto: WebTransportProtocol, add: bool) -> None:
        """Count the connection's endpoint in a 0.6.1 ``TransportContext``'s counters."""
        observe = getattr(self._transport, "_observe", None)
        endpoint = getattr(proto._quic, "_endpoint", None)
        if observe is not None and endpoint is not None:
            observe(endpoint, add)

    async def _wt6_abandon(self) -> None:
        self._dispatcher_attached = False
        proto, self._wt6_observed = self._wt6_observed, None
        if proto is not None:
            self._wt6_observe(proto, False)
        stack, self._wt6_stack = self._wt6_stack, None
        if stack is not None:
            try:
                await stack.aclose()
            except Exception as exc:
                logger.debug("closing an abandoned WebTransport connection: %s", exc)

    def _wt6_connection_done(self) -> None:
        proto = self._state._protocol
        if proto is not None and not proto._quic.closed:
            proto.close()

    async def detach(self) -> None:
        """Release the connection (closing it if still open).  Idempotent."""
        await self._wt6_abandon()


class WebTransportServerSession(WebTransportSessionBase):
    """The accepting side of a 0.6.1-style session, built by the server (or its
    ``session_factory``) as ``WebTransportServerSession(transport, state)`` once the
    CONNECT is accepted: it is open from the start."""

    def __init__(self, transport: Any, state: WebTransportSessionState) -> None:
        super().__init__(transport, role="server", state=state)
        self._loop = asyncio.get_running_loop()
        self._session_ready = self._loop.create_future()
        self._session_ready.set_result(None)


SessionFactory = Callable[[Any, WebTransportSessionState], WebTransportSessionBase]


class _CompatServer:
    """How a server connection builds 0.6.1-style sessions."""

    def __init__(self, handler: Callable[[Any], Any], path: str,
                 session_factory: Optional[SessionFactory], transport: Any) -> None:
        self.handler = handler
        self.path = path or "/"
        self.session_factory = session_factory
        self.transport = transport if transport is not None else _ContextShim()
        self.sessions: set[WebTransportSessionBase] = set()

    def on_request(self, proto: WebTransportProtocol, event: SessionRequested) -> None:
        sid = event.session_id
        if event.path.split("?", 1)[0] != self.path:
            proto._handle(proto._wt.reject_session(sid, 404))
            return
        proto._wt.accept_session(sid)
        state = WebTransportSessionState(proto, sid)
        state._protocol_name = proto._wt.session_protocol(sid)
        try:
            if self.session_factory is not None:
                session = self.session_factory(self.transport, state)
            else:
                session = WebTransportServerSession(self.transport, state)
        except Exception:
            logger.exception("WebTransport session_factory failed")
            proto._handle(proto._wt.close_session(sid, 1, "session factory failed"))
            return
        proto._compat[sid] = session
        self.sessions.add(session)
        proto._spawn(self._forget_when_closed(session))
        proto._flush_core()  # streams and datagrams that arrived before the session
        try:
            result = self.handler(session)
        except Exception:
            logger.exception("WebTransport handler failed for %s", event.path)
            session.close(1, b"internal error")
            return
        if asyncio.iscoroutine(result):
            proto._spawn(self._run(session, result))

    async def _forget_when_closed(self, session: WebTransportSessionBase) -> None:
        await session._session_closed.wait()
        self.sessions.discard(session)

    async def _run(self, session: WebTransportSessionBase, coro: Awaitable[Any]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("WebTransport handler failed")
            session.close(1, b"internal error")


def dispatch_protocol_factory(
    *,
    handler: Callable[[Any], Any],
    path: str,
    session_factory: Optional[SessionFactory] = None,
    supported_protocols: Optional[list[str]] = None,
    transport: Any = None,
    web_folder: Optional[str] = None,
) -> Callable[..., QuicConnectionProtocol]:
    """A ``create_protocol`` for servers of 0.6.1-style WebTransport sessions (used by
    :func:`serve_webtransport` in its 0.6.1 form and by ``serve_dispatch``): CONNECTs to
    ``path`` become ``session_factory(transport, state)`` (default
    :class:`WebTransportServerSession`) passed to ``handler(session)``; other paths get 404,
    plain HTTP/3 GETs are answered from ``web_folder`` when given."""
    compat = _CompatServer(handler, path, session_factory, transport)
    protocols = list(supported_protocols) if supported_protocols else None
    cls: type[WebTransportProtocol] = WebTransportProtocol
    if web_folder is not None:
        if not os.path.isdir(web_folder):
            raise ValueError(f"web_folder {web_folder!r} is not a directory")
        from aiopquic.http3_tools import HttpServerProtocol

        cls = type("WebFolderProtocol", (HttpServerProtocol,),
                   {"root": web_folder, "log": None})

    def make(quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None
             ) -> QuicConnectionProtocol:
        return cls(quic, stream_handler, supported_protocols=protocols, compat=compat)

    make.compat = compat  # type: ignore[attr-defined]
    return make


class WebTransportServer:
    """What :func:`serve_webtransport` returns in its 0.6.1 form: ``close()`` /
    ``aclose()`` and the listening port."""

    def __init__(self, server: QuicServer, compat: _CompatServer) -> None:
        self._server = server
        self._compat = compat

    @property
    def local_port(self) -> int:
        """The UDP port (useful with port 0)."""
        return self._server.local_port

    @property
    def server(self) -> QuicServer:
        """The underlying :class:`QuicServer`."""
        return self._server

    @property
    def _transport(self) -> Any:
        """0.6.1's ``handle._transport``: the server's transport view (``counters``,
        ``eventfd``, ``started``; see :class:`QuicServer`)."""
        return self._server._transport

    async def aclose(self) -> None:
        """Close every live session (code 0), then the server."""
        for session in list(self._compat.sessions):
            if not session.session_closed:
                session.close(0, b"")
        await asyncio.sleep(0)
        self.close()

    def close(self) -> None:
        """Stop serving and close every connection."""
        self._server.close()


# ---------------------------------------------------------------------- entry points


def _with_h3(configuration: QuicConfiguration, what: str) -> QuicConfiguration:
    return h3_configuration(configuration, what)


async def _serve_url_api(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    handler: WebTransportHandler,
    path: Optional[str] = None,
    create_protocol: Optional[Callable[..., WebTransportProtocol]] = None,
    max_field_section_size: Optional[int] = None,
    supported_protocols: Optional[list[str]] = None,
) -> QuicServer:
    """Serve WebTransport on ``host``:``port`` (UDP); returns the :class:`QuicServer`
    (``.local_port``, ``.close()``).

    ``await handler(session)`` runs for every session request to ``path`` (any path when
    ``None``; other paths get 404).  The handler accepts the session by using it or calling
    :meth:`WebTransportSession.accept`, rejects it with ``session.reject(status)`` or by
    raising :class:`WebTransportRejected`; the session is closed when the handler returns
    (an exception closes it with code 1, or rejects it with 500 if not yet accepted).

    ``configuration`` must be a server configuration with a certificate; ALPN ``h3`` and
    QUIC datagrams are added when not set (the object passed in is not modified).  Raises
    :class:`ValueError` if its ALPN list excludes ``h3``.  ``create_protocol`` may name a
    :class:`WebTransportProtocol` subclass (for plain HTTP/3 on the same server).
    ``max_field_section_size`` bounds received header sections (advertised in SETTINGS;
    default 64 KiB): a larger request is answered 431.  ``supported_protocols`` is the
    WT-Protocol allowlist: the first protocol of a client's WT-Available-Protocols on it is
    chosen (:attr:`WebTransportSession.protocol`); a client offering none of them is refused
    with 400 (its session ends with WT_ALPN_ERROR).
    """
    if not callable(handler):
        raise TypeError(f"handler must be an async callable, got {handler!r}")
    if path is not None and not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    cfg = _with_h3(configuration, "serve_webtransport")
    cls = create_protocol or WebTransportProtocol
    extra: dict[str, Any] = {}
    if max_field_section_size is not None:
        extra["max_field_section_size"] = max_field_section_size
    if supported_protocols is not None:
        extra["supported_protocols"] = list(supported_protocols)

    def factory(quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None
                ) -> QuicConnectionProtocol:
        return cls(quic, stream_handler, handler=handler, path=path, **extra)

    return await serve(host, port, configuration=cfg, create_protocol=factory)


@asynccontextmanager
async def _connect_url(
    url: str,
    *,
    configuration: Optional[QuicConfiguration] = None,
    headers: Optional[Headers] = None,
    protocol: Optional[str] = None,
    protocols: Optional[list[str]] = None,
) -> AsyncIterator[WebTransportSession]:
    """Open a WebTransport session to ``url`` (``https://host:port/path``) on a new QUIC
    connection and yield it; on exit the session and the connection are closed gracefully.

    ``configuration`` defaults to a client configuration verifying the server against the
    system trust store; ALPN ``h3`` and datagrams are added when not set (the object is not
    modified).  Extra request ``headers`` may be given.  ``protocol`` is the ``:protocol``
    token (default: ``webtransport-h3`` when the server sends draft-15's WT_ENABLED, else
    ``webtransport``); ``protocols`` is offered as WT-Available-Protocols.  Raises
    :class:`ValueError` for a bad URL, :class:`ConnectionError` if the connection fails,
    :class:`WebTransportRejected` for a non-2xx answer, :class:`WebTransportError` if the
    server lacks WebTransport.
    """
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError(f"WebTransport URL must be https://..., got {url!r}")
    if not parts.hostname:
        raise ValueError(f"WebTransport URL has no host: {url!r}")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise ValueError(f"WebTransport URL has a bad port: {url!r}") from exc
    host = parts.hostname
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    authority = parts.netloc.rsplit("@", 1)[-1]
    cfg = _with_h3(configuration or QuicConfiguration(is_client=True), "connect_webtransport")
    if not cfg.is_client:
        raise ValueError("connect_webtransport needs a client configuration (is_client=True)")
    if cfg.server_name is None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            cfg = dataclasses.replace(cfg, server_name=host)

    def factory(quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None
                ) -> QuicConnectionProtocol:
        return WebTransportProtocol(quic, stream_handler)

    async with connect(host, port, configuration=cfg, create_protocol=factory) as proto:
        assert isinstance(proto, WebTransportProtocol)
        session = await proto.open_session(
            authority, path, headers=headers, protocol=protocol, protocols=protocols,
            timeout=max(cfg.handshake_timeout, 10.0))
        try:
            yield session
        finally:
            if session._closed_info is None and not proto._quic.closed:
                session.close()


async def _serve_061(
    host: str, port: int, path: str, *, handler: Callable[[Any], Any],
    cert_file: Optional[str], key_file: Optional[str], transport: Any,
    session_factory: Optional[SessionFactory], configuration: Optional[QuicConfiguration],
    wt_supported_protocols: Optional[list[str]], web_folder: Optional[str],
) -> WebTransportServer:
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {handler!r}")
    path = path or "/"
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    cfg = dataclasses.replace(configuration) if configuration is not None else \
        QuicConfiguration(is_client=False)
    cfg = dataclasses.replace(cfg, is_client=False, alpn_protocols=list(H3_ALPN))
    if cert_file is not None:
        cfg.load_cert_chain(cert_file, key_file)
    cfg = _with_h3(cfg, "serve_webtransport")
    factory = dispatch_protocol_factory(
        handler=handler, path=path, session_factory=session_factory,
        supported_protocols=wt_supported_protocols, transport=transport,
        web_folder=web_folder)
    server = await serve(host, port, configuration=cfg, create_protocol=factory)
    return WebTransportServer(server, factory.compat)  # type: ignore[attr-defined]


@overload
async def serve_webtransport(
    host: str, port: int, *, configuration: QuicConfiguration,
    handler: WebTransportHandler, path: Optional[str] = None,
    create_protocol: Optional[Callable[..., WebTransportProtocol]] = None,
    max_field_section_size: Optional[int] = None,
    supported_protocols: Optional[list[str]] = None,
) -> QuicServer: ...


@overload
async def serve_webtransport(
    host: str, port: int, path: str, *, handler: Callable[[Any], Any],
    cert_file: str, key_file: str, transport: Any = None,
    session_factory: Optional[SessionFactory] = None,
    configuration: Optional[QuicConfiguration] = None,
    wt_supported_protocols: Optional[list[str]] = None,
    web_folder: Optional[str] = None,
) -> WebTransportServer: ...


async def serve_webtransport(
    host: str,
    port: int,
    path: Optional[str] = None,
    *,
    handler: Any,
    configuration: Optional[QuicConfiguration] = None,
    create_protocol: Optional[Callable[..., WebTransportProtocol]] = None,
    max_field_section_size: Optional[int] = None,
    supported_protocols: Optional[list[str]] = None,
    cert_file: Optional[str] = None,
    key_file: Optional[str] = None,
    transport: Any = None,
    session_factory: Optional[SessionFactory] = None,
    wt_supported_protocols: Optional[list[str]] = None,
    web_folder: Optional[str] = None,
) -> Union[QuicServer, WebTransportServer]:
    """Serve WebTransport on ``host``:``port`` (UDP), in one of two forms.

    **This library's form** -- ``serve_webtransport(host, port, *, configuration, handler,
    path=None, create_protocol=None, max_field_section_size=None, supported_protocols=None)``
    returns the :class:`QuicServer`; ``await handler(session)`` gets a
    :class:`WebTransportSession` (streams as reader/writer pairs).

    **aiopquic 0.6.1's form** -- ``serve_webtransport(host, port, path, *, handler, cert_file,
    key_file, transport=None, session_factory=None, configuration=None,
    wt_supported_protocols=None, web_folder=None)`` returns a :class:`WebTransportServer`;
    ``handler(session)`` gets a :class:`WebTransportServerSession` (or what
    ``session_factory(transport, state)`` builds), open from the start.  ``""`` means
    ``"/"``; ``web_folder`` serves files to HTTP/3 GETs of other paths; ``transport`` is
    handed to the sessions (a server shim answering per-connection queries otherwise).

    The 0.6.1 form is chosen when ``cert_file``, ``session_factory``,
    ``wt_supported_protocols``, ``web_folder`` or ``transport`` is given.  Both take the
    WT-Protocol allowlist (``supported_protocols`` / ``wt_supported_protocols``): the first
    protocol of a client's offer on it is chosen, an offer with none is refused with 400.
    """
    if cert_file is not None or session_factory is not None or \
            wt_supported_protocols is not None or web_folder is not None or \
            transport is not None:
        if create_protocol is not None or max_field_section_size is not None:
            raise TypeError("serve_webtransport: create_protocol / max_field_section_size "
                            "belong to the configuration form, not 0.6.1's cert_file form")
        return await _serve_061(
            host, port, path if path is not None else "/", handler=handler,
            cert_file=cert_file, key_file=key_file, transport=transport,
            session_factory=session_factory, configuration=configuration,
            wt_supported_protocols=wt_supported_protocols or supported_protocols,
            web_folder=web_folder)
    if configuration is None:
        raise TypeError("serve_webtransport needs configuration= (a server configuration "
                        "with a certificate), or 0.6.1's cert_file= and key_file=")
    return await _serve_url_api(
        host, port, configuration=configuration, handler=handler, path=path,
        create_protocol=create_protocol, max_field_section_size=max_field_section_size,
        supported_protocols=supported_protocols)


@asynccontextmanager
async def _connect_061(
    host: str, port: int, path: str, *, sni: Optional[str],
    wt_available_protocols: Optional[list[str]], transport: Any, timeout: float,
    configuration: Optional[QuicConfiguration], verify_peer: Optional[bool],
    ca_file: Optional[str],
) -> AsyncIterator[WebTransportClient]:
    client = WebTransportClient(transport, host, port, path or "/", sni=sni,
                                wt_available_protocols=wt_available_protocols)
    client._wt6_configuration = _client_configuration(transport, host, sni, configuration,
                                                      verify_peer, ca_file)
    try:
        await client.open(timeout=timeout)
        yield client
    finally:
        try:
            await client.aclose(0, b"")
        except Exception as exc:
            logger.debug("closing the WebTransport client: %s", exc)
        await client.detach()


@overload
def connect_webtransport(
    url: str, *, configuration: Optional[QuicConfiguration] = None,
    headers: Optional[Headers] = None, protocol: Optional[str] = None,
    protocols: Optional[list[str]] = None,
) -> AbstractAsyncContextManager[WebTransportSession]: ...


@overload
def connect_webtransport(
    url: str, port: int, path: str = "/", *, sni: Optional[str] = None,
    wt_available_protocols: Optional[list[str]] = None, transport: Any = None,
    timeout: float = 10.0, configuration: Optional[QuicConfiguration] = None,
    verify_peer: Optional[bool] = None, ca_file: Optional[str] = None,
) -> AbstractAsyncContextManager[WebTransportClient]: ...


def connect_webtransport(
    url: str,
    port: Optional[int] = None,
    path: str = "/",
    *,
    configuration: Optional[QuicConfiguration] = None,
    headers: Optional[Headers] = None,
    protocol: Optional[str] = None,
    protocols: Optional[list[str]] = None,
    sni: Optional[str] = None,
    wt_available_protocols: Optional[list[str]] = None,
    transport: Any = None,
    timeout: float = 10.0,
    verify_peer: Optional[bool] = None,
    ca_file: Optional[str] = None,
) -> Union[AbstractAsyncContextManager[WebTransportSession],
           AbstractAsyncContextManager[WebTransportClient]]:
    """Open a WebTransport session on a new QUIC connection (an async context manager), in
    one of two forms.

    **This library's form** -- ``connect_webtransport(url, *, configuration=None,
    headers=None, protocol=None, protocols=None)`` with ``url`` ``https://host[:port]/path``
    yields a :class:`WebTransportSession`.  ``configuration`` defaults to a client
    configuration verifying the server against the system trust store; ALPN ``h3`` and
    datagrams are added when missing (the object is not modified).  Extra request
    ``headers`` may be given.  ``protocol`` is the ``:protocol`` token (default:
    ``webtransport-h3`` when the server sends draft-15's WT_ENABLED, else ``webtransport``);
    ``protocols`` is offered as WT-Available-Protocols.  On exit the session and the
    connection are closed gracefully.  Raises :class:`ValueError` for a bad URL,
    :class:`ConnectionError` if the connection fails, :class:`WebTransportRejected` for a
    non-2xx answer, :class:`WebTransportError` if the server lacks WebTransport.

    **aiopquic 0.6.1's form** -- ``connect_webtransport(host, port, path, *, sni=None,
    wt_available_protocols=None, transport=None, timeout=10.0, configuration=None,
    verify_peer=None, ca_file=None)`` yields an opened :class:`WebTransportClient`; ``""``
    means ``"/"``; ``verify_peer=False`` skips certificate verification, ``ca_file`` names
    the trusted roots.  On exit: ``aclose()``, then ``detach()``.  Raises
    :class:`WebTransportError` when the session is refused or ``timeout`` passes.

    The 0.6.1 form is chosen when ``port`` is given.
    """
    if port is not None:
        return _connect_061(url, port, path, sni=sni,
                            wt_available_protocols=wt_available_protocols,
                            transport=transport, timeout=timeout,
                            configuration=configuration, verify_peer=verify_peer,
                            ca_file=ca_file)
    return _connect_url(url, configuration=configuration, headers=headers, protocol=protocol,
                        protocols=protocols)
