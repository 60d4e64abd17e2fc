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
reads a stream, so a slow reader slows the sender instead of growing memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, Callable, Optional, Union
from urllib.parse import urlsplit

from aiopquic.asyncio.client import connect
from aiopquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler, _StreamTransport
from aiopquic.asyncio.server import QuicServer, serve
from aiopquic.h3.capsule import (
    CLOSE_WEBTRANSPORT_SESSION,
    DRAIN_WEBTRANSPORT_SESSION,
    CapsuleBuffer,
    decode_close_session,
    encode_close_session,
)
from aiopquic.h3.connection import (
    H3_ALPN,
    WT_BUFFERED_STREAM_REJECTED,
    WT_SESSION_GONE,
    ErrorCode,
    H3Connection,
    http3_error_to_webtransport,
    webtransport_error_to_http3,
)
from aiopquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    Headers,
    HeadersReceived,
    WebTransportStreamDataReceived,
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
]

logger = logging.getLogger("aiopquic.webtransport")

WEBTRANSPORT_PROTOCOLS = (b"webtransport", b"webtransport-h3")
"""``:protocol`` values accepted for a WebTransport extended CONNECT."""

_DATAGRAM_QUEUE = 1024  # datagrams kept per session before the oldest are dropped
_MAX_ORPHAN_STREAMS = 32  # streams buffered for sessions not known yet (per connection)
_DEFAULT_DATAGRAM_FRAME = 65535
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
    """A StreamReader that returns QUIC receive credit as the application consumes bytes."""

    def __init__(self, quic: QuicConnection, stream_id: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2 ** 16, loop=loop)
        self._wt_quic = quic
        self._wt_stream_id = stream_id
        self._wt_fed = 0
        self._wt_precredited = 0  # leading bytes whose credit was returned on arrival
        self._wt_credited = 0

    def _wt_feed(self, data: bytes, precredited: bool) -> None:
        self._wt_fed += len(data)
        if precredited:
            self._wt_precredited = self._wt_fed
        self.feed_data(data)

    def _maybe_resume_transport(self) -> None:  # asyncio calls this after every read
        buffered = len(self._buffer)  # type: ignore[attr-defined]
        consumed = self._wt_fed - buffered - self._wt_precredited
        owed = consumed - self._wt_credited
        if owed > 0:
            self._wt_credited = consumed
            quic = self._wt_quic
            if not quic.closed:
                quic._consumed(self._wt_stream_id, owed)
                if not buffered:
                    quic._flush_credit(self._wt_stream_id)


class _WTTransport(_StreamTransport):
    """The transport behind a WebTransport stream's StreamWriter (raw bytes on the QUIC
    stream; the WebTransport header is already written).  A QUIC stream transport that also
    knows its session: writes fail once the session is closed."""

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
        super().write(data)

    def write_eof(self) -> None:
        if self._closing:
            return
        if self._session._closed_info is not None:
            self._closing = True  # the session is gone: no FIN to send
        else:
            super().write_eof()
        self._session._protocol._maybe_forget(self._stream_id)

    def abort(self, code: int = 0) -> None:
        """Reset the stream with WebTransport application error ``code``."""
        if not self._closing:
            self._closing = True
            quic = self._session._protocol._quic
            if not quic.closed:
                quic.reset_stream(self._stream_id, webtransport_error_to_http3(code))
            self._session._protocol._maybe_forget(self._stream_id)


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
    """Bookkeeping of one WebTransport stream."""

    __slots__ = ("stream_id", "reader", "transport", "writer", "session_id", "send_side",
                 "recv_side", "fin_received")

    def __init__(self, stream_id: int, reader: _WTReader, session_id: int, send_side: bool,
                 recv_side: bool) -> None:
        self.stream_id = stream_id
        self.reader = reader
        self.transport: Optional[_WTTransport] = None
        self.writer: Optional[asyncio.StreamWriter] = None
        self.session_id = session_id
        self.send_side = send_side
        self.recv_side = recv_side
        self.fin_received = not recv_side

    @property
    def send_done(self) -> bool:
        return not self.send_side or (self.transport is not None and self.transport._closing)

    @property
    def recv_done(self) -> bool:
        return self.fin_received or self.reader.exception() is not None


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
        self._streams: dict[int, _StreamEntry] = {}
        self._capsules = CapsuleBuffer()
        self._send_ended = False
        self._request_path = ""
        self.datagrams_dropped = 0
        """Datagrams dropped because :meth:`receive_datagram` was not called fast enough."""

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
        self._protocol._http.send_headers(self._session_id, [
            (b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")])

    def reject(self, status: int = 403) -> None:
        """Server: refuse the session with HTTP ``status`` (300..599) and end its stream.
        Raises :class:`RuntimeError` if the session was already accepted, :class:`ValueError`
        for a bad status."""
        if not isinstance(status, int) or not 300 <= status <= 599:
            raise ValueError(f"rejection status must be 300..599, got {status!r}")
        if self._state != _PENDING:
            raise RuntimeError("the session was already accepted (or closed): use close()")
        self._state = _CLOSED
        self._send_ended = True
        self._protocol._http.send_headers(self._session_id,
                                          [(b":status", str(status).encode())],
                                          end_stream=True)
        self._terminate(0, f"rejected with HTTP status {status}")

    # ------------------------------------------------------------------ streams

    async def create_stream(
        self, bidirectional: bool = True
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a stream and return ``(reader, writer)``.  For a unidirectional stream the
        reader is already at EOF.  ``writer.drain()`` waits while the send buffer is full;
        ``writer.transport.abort(code)`` resets the stream with a WebTransport error code.

        Raises :class:`WebTransportSessionClosed` when the session is closed."""
        self._check_open()
        protocol = self._protocol
        stream_id = protocol._http.create_webtransport_stream(
            self._session_id, is_unidirectional=not bidirectional)
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
        self._protocol._http.send_datagram(self._session_id, bytes(data))

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
        capsule = encode_close_session(code, reason)
        if self._closed_info is not None:
            return
        if self._state == _PENDING:
            self.accept()
        self._state = _CLOSED
        if not self._send_ended and not self._protocol._quic.closed:
            self._send_ended = True
            try:
                self._protocol._http.send_data(self._session_id, capsule, end_stream=True)
            except Exception as exc:  # the stream may already be gone
                logger.debug("cannot send the session close capsule: %s", exc)
        # the streams are reset on the wire once the peer has ended the CONNECT stream too
        # (as quiche does): resetting them together with the capsule makes Chromium report
        # "Connection lost" now and then instead of the close code
        self._terminate(code, reason, defer_resets=True)

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

    def _on_capsule_data(self, data: bytes) -> None:
        if not data or self._closed_info is not None:
            return
        try:
            capsules = self._capsules.feed(data)
        except ValueError:
            self._protocol._quic.stop_stream(self._session_id, ErrorCode.H3_MESSAGE_ERROR)
            self._terminate(0, "malformed capsule")
            return
        for ctype, value in capsules:
            if ctype == CLOSE_WEBTRANSPORT_SESSION:
                info = decode_close_session(value)
                code, reason = info if info is not None else (0, "malformed close capsule")
                self._peer_closed(code, reason)
                return
            if ctype == DRAIN_WEBTRANSPORT_SESSION:
                self._drain_event.set()

    def _peer_closed(self, code: int, reason: str) -> None:
        """The peer closed the session (capsule, FIN or reset of the CONNECT stream)."""
        if self._closed_info is not None:
            return
        self._state = _CLOSED
        if not self._send_ended and not self._protocol._quic.closed:
            self._send_ended = True
            try:
                self._protocol._http.send_data(self._session_id, b"", end_stream=True)
            except Exception as exc:
                logger.debug("cannot end the CONNECT stream: %s", exc)
        self._terminate(code, reason)

    def _terminate(self, code: int, reason: str, connection_gone: bool = False,
                   defer_resets: bool = False) -> None:
        if self._closed_info is not None:
            return
        self._state = _CLOSED
        self._closed_info = (code, reason)
        protocol = self._protocol
        gone = connection_gone or protocol._quic.closed
        err = self._closed_error()
        pending: list[tuple[int, bool, bool]] = []
        for entry in list(self._streams.values()):
            need_reset = entry.send_side and not entry.send_done
            need_stop = not entry.recv_done
            if entry.transport is not None:
                entry.transport._closing = True
            if need_stop:
                entry.reader.set_exception(err)
            pending.append((entry.stream_id, need_reset, need_stop))
        self._streams.clear()
        if gone:
            for stream_id, _, _ in pending:
                protocol._wt_streams.pop(stream_id, None)
        elif defer_resets and pending:
            protocol._defer_resets(self._session_id, pending)
        else:
            protocol._reset_streams(pending)
        for waiter in (self._incoming_waiter, self._datagram_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        protocol._session_ended(self)
        self._closed_event.set()


# ---------------------------------------------------------------------- protocol


class WebTransportProtocol(QuicConnectionProtocol):
    """A :class:`QuicConnectionProtocol` speaking HTTP/3 with WebTransport sessions.

    WebTransport needs QUIC datagrams: without ``max_datagram_frame_size`` in the
    configuration it is turned off for the connection (with a logged warning) and only plain
    HTTP/3 is spoken.

    Server side, each WebTransport CONNECT to ``path`` (any path if ``None``) becomes a
    :class:`WebTransportSession` passed to ``await handler(session)``; the session is closed
    when the handler returns.  Other requests go to :meth:`http_event_received`, which
    answers 404 by default: subclass it to serve plain HTTP/3 on the same connection.
    """

    def __init__(self, quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None,
                 *, handler: Optional[WebTransportHandler] = None, path: Optional[str] = None,
                 enable_webtransport: bool = True) -> None:
        super().__init__(quic, stream_handler=stream_handler)
        if enable_webtransport and not quic.configuration.max_datagram_frame_size:
            logger.warning("WebTransport disabled on this connection: the QUIC configuration "
                           "has no max_datagram_frame_size (browsers need datagrams)")
            enable_webtransport = False
        self._http = H3Connection(quic, enable_webtransport=enable_webtransport)
        self._handler = handler
        self._path = path
        self._sessions: dict[int, WebTransportSession] = {}
        self._response_waiters: dict[int, asyncio.Future[Headers]] = {}
        self._wt_streams: dict[int, _StreamEntry] = {}
        self._orphans: dict[int, list[_StreamEntry]] = {}
        self._orphan_count = 0
        self._closed_sessions: set[int] = set()
        # locally closed sessions whose streams are reset once the peer ends the CONNECT stream
        self._closing_sessions: dict[int, tuple[list[tuple[int, bool, bool]],
                                                asyncio.TimerHandle]] = {}
        self._settings_waiter: asyncio.Future[None] = self._loop.create_future()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ helpers

    @property
    def http(self) -> H3Connection:
        """The underlying sans-IO :class:`H3Connection`."""
        return self._http

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
                raise ConnectionError(f"connection closed: {quic._close_message()}")
            fut = self._loop.create_future()

            def wake(fut: asyncio.Future[None] = fut) -> None:
                if not fut.done():
                    fut.set_result(None)

            if not quic._add_drain_waiter(stream_id, wake):
                return
            await fut

    def _new_stream(self, session: WebTransportSession, stream_id: int, readable: bool,
                    writable: bool) -> tuple[_WTReader, Optional[asyncio.StreamWriter]]:
        entry = self._new_entry(session._session_id, stream_id, readable, writable)
        session._streams[stream_id] = entry
        return entry.reader, self._attach_writer(session, entry)

    def _new_entry(self, session_id: int, stream_id: int, readable: bool,
                   writable: bool) -> _StreamEntry:
        reader = _WTReader(self._quic, stream_id, self._loop)
        if readable:
            self._quic._set_manual_credit(stream_id)
        entry = _StreamEntry(stream_id, reader, session_id, writable, readable)
        self._wt_streams[stream_id] = entry
        return entry

    def _attach_writer(self, session: WebTransportSession,
                       entry: _StreamEntry) -> Optional[asyncio.StreamWriter]:
        if not entry.send_side:
            return None
        transport = _WTTransport(session, entry.stream_id)
        flow: Any = _WTFlow(session, entry.stream_id)
        entry.transport = transport
        entry.writer = asyncio.StreamWriter(transport, flow, entry.reader, self._loop)
        return entry.writer

    def _maybe_forget(self, stream_id: int) -> None:
        """Drop a stream's bookkeeping once both directions are finished."""
        entry = self._wt_streams.get(stream_id)
        if entry is not None and entry.send_done and entry.recv_done:
            del self._wt_streams[stream_id]
            session = self._sessions.get(entry.session_id)
            if session is not None:
                session._streams.pop(stream_id, None)

    def _reset_streams(self, pending: list[tuple[int, bool, bool]]) -> None:
        """Reset (send side) and stop (receive side) streams of a terminated session with
        WT_SESSION_GONE."""
        quic = self._quic
        for stream_id, need_reset, need_stop in pending:
            entry = self._wt_streams.pop(stream_id, None)
            if quic.closed:
                continue
            if need_reset:
                quic.reset_stream(stream_id, WT_SESSION_GONE)
            if need_stop and not (entry is not None and entry.fin_received):
                quic.stop_stream(stream_id, WT_SESSION_GONE)

    def _defer_resets(self, session_id: int, pending: list[tuple[int, bool, bool]]) -> None:
        timer = self._loop.call_later(_RESET_DELAY, self._flush_resets, session_id)
        self._closing_sessions[session_id] = (pending, timer)

    def _flush_resets(self, session_id: int) -> None:
        item = self._closing_sessions.pop(session_id, None)
        if item is not None:
            item[1].cancel()
            self._reset_streams(item[0])

    def _session_ended(self, session: WebTransportSession) -> None:
        self._closed_sessions.add(session._session_id)
        if self._sessions.get(session._session_id) is session:
            del self._sessions[session._session_id]
        for entry in self._orphans.pop(session._session_id, []):
            self._orphan_count -= 1
            self._wt_streams.pop(entry.stream_id, None)

    # ------------------------------------------------------------------ events

    def quic_event_received(self, event: quic_events.QuicEvent) -> None:
        """Feed every QUIC event to HTTP/3 and dispatch the HTTP/3 events."""
        if isinstance(event, quic_events.StreamDataReceived):
            stream_id = event.stream_id
            manual = stream_id in self._quic._manual_credit
            h3_events = self._http.handle_event(event)
            payload = 0
            for h3_event in h3_events:
                if isinstance(h3_event, WebTransportStreamDataReceived) and \
                        h3_event.stream_id == stream_id:
                    payload += len(h3_event.data)
                    self._on_wt_data(h3_event, precredited=not manual)
                else:
                    self._dispatch(h3_event)
            if manual and len(event.data) > payload and not self._quic.closed:
                self._quic._consumed(stream_id, len(event.data) - payload)
        elif isinstance(event, quic_events.StreamReset):
            self._http.handle_event(event)
            self._on_stream_reset(event.stream_id, event.error_code)
        elif isinstance(event, quic_events.ConnectionTerminated):
            self._http.handle_event(event)
            self._on_connection_terminated(event)
        else:
            for h3_event in self._http.handle_event(event):
                self._dispatch(h3_event)
        if self._http.received_settings is not None and not self._settings_waiter.done():
            self._settings_waiter.set_result(None)

    def _dispatch(self, event: H3Event) -> None:
        if isinstance(event, WebTransportStreamDataReceived):
            self._on_wt_data(event, precredited=True)
        elif isinstance(event, DatagramReceived):
            session = self._sessions.get(event.stream_id)
            if session is not None and session._state != _PENDING:
                session._on_datagram(event.data)
            elif session is None:
                self.http_event_received(event)
        elif isinstance(event, HeadersReceived):
            waiter = self._response_waiters.pop(event.stream_id, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(event.headers)
                if event.stream_ended:
                    session = self._sessions.get(event.stream_id)
                    if session is not None:
                        self._sessions.pop(event.stream_id, None)
                return
            if event.stream_id in self._sessions:
                if event.stream_ended:  # trailers ending the CONNECT stream
                    self._on_session_stream_end(event.stream_id)
                return
            if event.stream_id in self._closing_sessions:
                if event.stream_ended:
                    self._flush_resets(event.stream_id)
                return
            if not self._quic.configuration.is_client and \
                    self._is_webtransport_request(event.headers):
                self._on_session_request(event)
            else:
                self.http_event_received(event)
        elif isinstance(event, DataReceived):
            session = self._sessions.get(event.stream_id)
            if session is None:
                if event.stream_id in self._closing_sessions:
                    if event.stream_ended:
                        self._flush_resets(event.stream_id)
                    return
                self.http_event_received(event)
                return
            session._on_capsule_data(event.data)
            if event.stream_ended:
                self._on_session_stream_end(event.stream_id)
        else:
            self.http_event_received(event)

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

    @staticmethod
    def _is_webtransport_request(headers: Headers) -> bool:
        method = protocol = None
        for name, value in headers:
            if name == b":method":
                method = value
            elif name == b":protocol":
                protocol = value
        return method == b"CONNECT" and protocol in WEBTRANSPORT_PROTOCOLS

    # ---- server: new session

    def _on_session_request(self, event: HeadersReceived) -> None:
        session_id = event.stream_id
        session = WebTransportSession(self, session_id, event.headers, pending=True)
        self._sessions[session_id] = session
        if self._handler is None or (self._path is not None and
                                     session.path.split("?", 1)[0] != self._path):
            session.reject(404)
            return
        if event.stream_ended:
            session.reject(400)
            return
        self._adopt_orphans(session)
        self._spawn(self._run_handler(session))

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

    def _adopt_orphans(self, session: WebTransportSession) -> None:
        for entry in self._orphans.pop(session._session_id, []):
            self._orphan_count -= 1
            if self._wt_streams.get(entry.stream_id) is not entry:
                continue
            session._streams[entry.stream_id] = entry
            session._add_incoming(entry.reader, self._attach_writer(session, entry))
            self._maybe_forget(entry.stream_id)

    # ---- streams

    def _on_wt_data(self, event: WebTransportStreamDataReceived, precredited: bool) -> None:
        stream_id = event.stream_id
        entry = self._wt_streams.get(stream_id)
        if entry is None:
            entry = self._open_peer_stream(stream_id, event.session_id)
        if entry is None or entry.recv_done:
            # refused or finished stream: return the credit, drop the bytes
            if not precredited and event.data and not self._quic.closed:
                self._quic._consumed(stream_id, len(event.data))
            return
        if event.data:
            entry.reader._wt_feed(event.data, precredited)
        if event.stream_ended:
            entry.fin_received = True
            entry.reader.feed_eof()
            self._maybe_forget(stream_id)

    def _open_peer_stream(self, stream_id: int, session_id: int) -> Optional[_StreamEntry]:
        bidi = not stream_id & 2
        session = self._sessions.get(session_id)
        if session is not None and session._closed_info is not None or \
                session is None and session_id in self._closed_sessions:
            self._refuse_stream(stream_id, bidi, WT_SESSION_GONE)
            return None
        if session is None:
            if self._orphan_count >= _MAX_ORPHAN_STREAMS:
                self._refuse_stream(stream_id, bidi, WT_BUFFERED_STREAM_REJECTED)
                return None
            # a stream of a session whose CONNECT is not processed yet: buffer it
            entry = self._new_entry(session_id, stream_id, True, bidi)
            self._orphans.setdefault(session_id, []).append(entry)
            self._orphan_count += 1
            return entry
        reader, writer = self._new_stream(session, stream_id, readable=True, writable=bidi)
        session._add_incoming(reader, writer)
        return self._wt_streams[stream_id]

    def _refuse_stream(self, stream_id: int, bidi: bool, code: int) -> None:
        quic = self._quic
        if quic.closed:
            return
        quic.stop_stream(stream_id, code)
        if bidi:
            quic.reset_stream(stream_id, code)

    def _on_stream_reset(self, stream_id: int, error_code: int) -> None:
        entry = self._wt_streams.get(stream_id)
        if entry is not None:
            reader = entry.reader
            if not entry.recv_done:
                app = http3_error_to_webtransport(error_code)
                what = f"WebTransport code {app}" if app is not None else \
                    f"HTTP/3 code {error_code:#x}"
                reader.set_exception(ConnectionResetError(
                    f"stream {stream_id} reset by the peer ({what})"))
            self._maybe_forget(stream_id)
            return
        if stream_id in self._closing_sessions:
            self._flush_resets(stream_id)
            return
        session = self._sessions.get(stream_id)
        if session is not None:
            waiter = self._response_waiters.pop(stream_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(WebTransportError(
                    f"the server reset the session request (code {error_code:#x})"))
            del self._sessions[stream_id]
            session._send_ended = True
            session._peer_closed(0, f"session stream reset (code {error_code:#x})")

    def _on_session_stream_end(self, session_id: int) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session._peer_closed(0, "")

    def _on_connection_terminated(self, event: quic_events.ConnectionTerminated) -> None:
        for waiter in self._response_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(
                    f"connection closed: {self._quic._close_message()}"))
        self._response_waiters.clear()
        if not self._settings_waiter.done():
            self._settings_waiter.set_exception(ConnectionError(
                f"connection closed before HTTP/3 SETTINGS: {self._quic._close_message()}"))
            self._settings_waiter.exception()
        for session in list(self._sessions.values()):
            session._terminate(0, f"connection closed: {self._quic._close_message()}",
                               connection_gone=True)
        self._sessions.clear()
        for entry in self._wt_streams.values():
            if not entry.reader.at_eof() and entry.reader.exception() is None:
                entry.reader.set_exception(ConnectionError(
                    f"connection closed: {self._quic._close_message()}"))
        self._wt_streams.clear()
        self._orphans.clear()
        for _, timer in self._closing_sessions.values():
            timer.cancel()
        self._closing_sessions.clear()

    # ---- client: open a session

    async def open_session(self, authority: str, path: str, *,
                           headers: Optional[Headers] = None,
                           protocol: str = "webtransport",
                           timeout: float = 30.0) -> WebTransportSession:
        """Client: send a WebTransport CONNECT for ``path`` and wait for the answer.

        Raises :class:`WebTransportError` if the server does not support WebTransport,
        :class:`WebTransportRejected` for a non-2xx answer, :class:`ConnectionError` if the
        connection closes, :class:`TimeoutError` after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.wait_settings(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no HTTP/3 SETTINGS from the server within {timeout:g} s") \
                from None
        if not self._http.peer_supports_webtransport:
            raise WebTransportError(
                "the server does not support WebTransport (its SETTINGS lack extended "
                "CONNECT, H3_DATAGRAM or a WebTransport capability)")
        stream_id = self._quic.get_next_available_stream_id()
        request: Headers = [
            (b":method", b"CONNECT"),
            (b":protocol", protocol.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        names = {name for name, _ in headers or []}
        if b"origin" not in names:
            request.append((b"origin", b"https://" + authority.encode()))
        request.extend(headers or [])
        session = WebTransportSession(self, stream_id, [], pending=False)
        session._request_path = path
        self._sessions[stream_id] = session
        fut: asyncio.Future[Headers] = self._loop.create_future()
        self._response_waiters[stream_id] = fut
        self._http.send_headers(stream_id, request)
        try:
            response = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            self._sessions.pop(stream_id, None)
            self._response_waiters.pop(stream_id, None)
            self._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            raise TimeoutError(f"no answer to the WebTransport request within {timeout:g} s") \
                from None
        except BaseException:
            self._sessions.pop(stream_id, None)
            raise
        status = dict(response).get(b":status", b"")
        session._headers = response
        if not status.startswith(b"2"):
            self._sessions.pop(stream_id, None)
            session._closed_info = (0, f"rejected with HTTP status {status.decode()}")
            session._closed_event.set()
            raise WebTransportRejected(int(status) if status.isdigit() else 500)
        self._adopt_orphans(session)
        return session


# ---------------------------------------------------------------------- entry points


def _with_h3(configuration: QuicConfiguration, what: str) -> QuicConfiguration:
    changes: dict[str, Any] = {}
    alpn = configuration.alpn_protocols
    if alpn is None:
        changes["alpn_protocols"] = list(H3_ALPN)
    elif "h3" not in alpn:
        raise ValueError(f"{what}: configuration.alpn_protocols {alpn!r} lacks 'h3'")
    if not configuration.max_datagram_frame_size:
        changes["max_datagram_frame_size"] = _DEFAULT_DATAGRAM_FRAME
    return dataclasses.replace(configuration, **changes) if changes else configuration


async def serve_webtransport(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    handler: WebTransportHandler,
    path: Optional[str] = None,
    create_protocol: Optional[Callable[..., WebTransportProtocol]] = None,
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
    """
    if not callable(handler):
        raise TypeError(f"handler must be an async callable, got {handler!r}")
    if path is not None and not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    cfg = _with_h3(configuration, "serve_webtransport")
    cls = create_protocol or WebTransportProtocol

    def factory(quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None
                ) -> QuicConnectionProtocol:
        return cls(quic, stream_handler, handler=handler, path=path)

    return await serve(host, port, configuration=cfg, create_protocol=factory)


@asynccontextmanager
async def connect_webtransport(
    url: str,
    *,
    configuration: Optional[QuicConfiguration] = None,
    headers: Optional[Headers] = None,
    protocol: str = "webtransport",
) -> AsyncIterator[WebTransportSession]:
    """Open a WebTransport session to ``url`` (``https://host:port/path``) on a new QUIC
    connection and yield it; on exit the session and the connection are closed gracefully.

    ``configuration`` defaults to a client configuration verifying the server against the
    system trust store; ALPN ``h3`` and datagrams are added when not set (the object is not
    modified).  Extra request ``headers`` may be given.  Raises :class:`ValueError` for a bad
    URL, :class:`ConnectionError` if the connection fails, :class:`WebTransportRejected` for
    a non-2xx answer, :class:`WebTransportError` if the server lacks WebTransport.
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
            authority, path, headers=headers, protocol=protocol,
            timeout=max(cfg.handshake_timeout, 10.0))
        try:
            yield session
        finally:
            if session._closed_info is None and not proto._quic.closed:
                session.close()
