"""asyncio protocol for one QUIC connection, shaped like aioquic's ``QuicConnectionProtocol``."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, Optional

from aiopquic.asyncio._transport import transport_for
from aiopquic.quic import events
from aiopquic.quic.connection import (
    QuicConnection,
    QuicConnectionError,
    QuicConnectionStats,
    StreamFinishedError,
)

__all__ = ["QuicConnectionProtocol", "QuicStreamAdapter", "QuicStreamHandler"]

QuicStreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]

_log = logging.getLogger("aiopquic.asyncio")

_NO_DATAGRAM_PROTOCOL = (
    "QuicConnectionProtocol.{}(): aiopquic's protocol is not an asyncio.DatagramProtocol: "
    "the UDP socket and its timers belong to the native network thread (use connect() / "
    "serve(), wait_closed(), writer.drain())")


class _StreamReader(asyncio.StreamReader):
    """A StreamReader that returns receive credit to the peer as the application consumes,
    and hands received chunks to ``read()`` without copying them.

    Chunks wait in a deque; only ``readline``/``readuntil``/``readexactly`` need asyncio's
    contiguous buffer, and they get it (the chunks are moved there first).

    End of stream: the reads return EOF (``b""``, :class:`asyncio.IncompleteReadError`) only
    after the peer's FIN.  If the connection ends first (the peer closed it or vanished, an
    idle timeout, a stateless reset, our endpoint was closed), the bytes already received
    are still returned, then the reads raise
    :class:`~aiopquic.quic.connection.QuicConnectionError` (a :class:`ConnectionError`), so a
    truncated transfer never looks complete.  A peer's RESET_STREAM raises
    :class:`ConnectionResetError` at once.
    """

    def __init__(self, quic: QuicConnection, stream_id: int, loop: asyncio.AbstractEventLoop):
        super().__init__(limit=2 ** 16, loop=loop)
        self._aq_quic = quic
        self._aq_stream_id = stream_id
        self._aq_fed = 0  # bytes received
        self._aq_credited = 0  # bytes whose credit went back to the peer
        self._aq_chunks: deque[bytes] = deque()
        self._aq_off = 0  # bytes of _aq_chunks[0] already read
        self._aq_pending = 0  # bytes in _aq_chunks not yet read
        self._aq_direct = 0  # >0 while a buffer-based read runs: feed asyncio's buffer
        self._aq_error: Optional[Exception] = None  # raised at EOF: no FIN came

    def _aq_abort(self, exc: Exception) -> None:
        """The connection ended before the peer's FIN: once the buffered bytes are read,
        reads raise ``exc`` instead of returning EOF."""
        if self._eof or self._exception is not None:  # type: ignore[attr-defined]
            return
        self._aq_error = exc
        self.feed_eof()

    def exception(self) -> Optional[Exception]:
        return self._exception or self._aq_error  # type: ignore[attr-defined]

    def feed_data(self, data: bytes) -> None:  # type: ignore[override]
        assert not self._eof, "feed_data after feed_eof"  # type: ignore[attr-defined]
        if not data:
            return
        self._aq_fed += len(data)
        if self._aq_direct or self._buffer:  # type: ignore[attr-defined]
            self._buffer.extend(data)  # type: ignore[attr-defined]
        else:
            self._aq_chunks.append(data)
            self._aq_pending += len(data)
        self._wakeup_waiter()  # type: ignore[attr-defined]

    def _aq_materialize(self) -> None:
        chunks = self._aq_chunks
        if chunks:
            buf = self._buffer  # type: ignore[attr-defined]
            first = chunks.popleft()
            buf.extend(memoryview(first)[self._aq_off:])
            for chunk in chunks:
                buf.extend(chunk)
            chunks.clear()
            self._aq_off = 0
            self._aq_pending = 0

    def at_eof(self) -> bool:
        return bool(self._eof and not self._buffer  # type: ignore[attr-defined]
                    and not self._aq_pending)

    async def read(self, n: int = -1) -> bytes:
        if self._exception is not None:  # type: ignore[attr-defined]
            raise self._exception  # type: ignore[attr-defined]
        if n == 0:
            return b""
        if n < 0:
            blocks: list[bytes] = []
            while True:
                block = await self.read(self._limit)  # type: ignore[attr-defined]
                if not block:
                    return b"".join(blocks)
                blocks.append(block)
        if self._buffer:  # type: ignore[attr-defined]
            return await super().read(n)
        if not self._aq_pending and not self._eof:  # type: ignore[attr-defined]
            await self._wait_for_data("read")  # type: ignore[attr-defined]
            if self._buffer:  # type: ignore[attr-defined]
                return await super().read(n)
        if not self._aq_pending:
            if self._aq_error is not None and not self._buffer:  # type: ignore[attr-defined]
                raise self._aq_error
            return b""
        chunk = self._aq_chunks[0]
        off = self._aq_off
        left = len(chunk) - off
        if n >= left:
            self._aq_chunks.popleft()
            self._aq_off = 0
            data = chunk if off == 0 else chunk[off:]
        else:
            data = chunk[off:off + n]
            self._aq_off = off + n
        self._aq_pending -= len(data)
        self._maybe_resume_transport()
        return data

    async def readline(self) -> bytes:
        self._aq_materialize()
        self._aq_direct += 1
        try:
            line = await super().readline()
        finally:
            self._aq_direct -= 1
        if self._aq_error is not None and not line.endswith(b"\n") and self.at_eof():
            raise self._aq_error  # the line was cut short by the connection's end
        return line

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        self._aq_materialize()
        self._aq_direct += 1
        try:
            return await super().readuntil(separator)
        except asyncio.IncompleteReadError as exc:
            if self._aq_error is not None:
                raise self._aq_error from exc
            raise
        finally:
            self._aq_direct -= 1

    async def readexactly(self, n: int) -> bytes:
        self._aq_materialize()
        self._aq_direct += 1
        try:
            return await super().readexactly(n)
        except asyncio.IncompleteReadError as exc:
            if self._aq_error is not None:
                raise self._aq_error from exc
            raise
        finally:
            self._aq_direct -= 1

    def _maybe_resume_transport(self) -> None:  # called after every read
        consumed = self._aq_fed - len(self._buffer) - self._aq_pending  # type: ignore[attr-defined]
        n = consumed - self._aq_credited
        if n > 0:
            self._aq_credited = consumed
            self._aq_quic._consumed(self._aq_stream_id, n)
            if not self._buffer and not self._aq_pending:  # type: ignore[attr-defined]
                self._aq_quic._flush_credit(self._aq_stream_id)


class _StreamWriter(asyncio.StreamWriter):
    """StreamWriter whose ``drain()`` returns at once while nothing waits in Python."""

    _aq_quic: QuicConnection
    _aq_stream_id: int

    async def drain(self) -> None:
        quic = self._aq_quic
        st = quic._tx.get(self._aq_stream_id)
        if st is not None and not st.spill and not quic._closed:
            reader = self._reader  # type: ignore[attr-defined]
            if reader is None or reader._exception is None:
                return
        await super().drain()


class _StreamTransport(asyncio.Transport):
    """The per-stream transport behind a StreamWriter (aioquic's ``QuicStreamAdapter``)."""

    def __init__(self, protocol: QuicConnectionProtocol, stream_id: int) -> None:
        super().__init__()
        self._protocol = protocol
        self._stream_id = stream_id
        self._closing = False

    @property
    def protocol(self) -> QuicConnectionProtocol:
        """The connection's protocol (aioquic's attribute)."""
        return self._protocol

    @property
    def stream_id(self) -> int:
        """The QUIC stream id (aioquic's attribute)."""
        return self._stream_id

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "stream_id":
            return self._stream_id
        if name == "connection":
            return self._protocol._quic
        if name == "peername":
            return self._protocol._quic.peer_address
        return default

    def write(self, data: Any) -> None:
        if self._closing:
            raise StreamFinishedError(
                f"cannot write on stream {self._stream_id} after write_eof()/close()")
        self._protocol._quic.send_stream_data(self._stream_id, data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        if self._closing:
            return
        self._closing = True
        quic = self._protocol._quic
        if not quic.closed:
            quic.send_stream_data(self._stream_id, b"", end_stream=True)

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self._closing or self._protocol._quic.closed

    def close(self) -> None:
        try:
            self.write_eof()
        except (ValueError, ConnectionError):
            self._closing = True

    def abort(self) -> None:
        if not self._closing:
            self._closing = True
            if not self._protocol._quic.closed:
                self._protocol._quic.reset_stream(self._stream_id, 0)


QuicStreamAdapter = _StreamTransport
"""aioquic's name for the transport behind a stream's ``StreamWriter``
(``writer.transport``)."""


class _StreamFlow:
    """What StreamWriter calls on its "protocol": drain waits for the stream's queue."""

    def __init__(self, protocol: QuicConnectionProtocol, stream_id: int) -> None:
        self._protocol = protocol
        self._stream_id = stream_id

    async def _drain_helper(self) -> None:
        quic = self._protocol._quic
        if not quic._closed and not quic.stream_send_pending(self._stream_id):
            return  # fast path: nothing queued in Python
        loop = self._protocol._loop
        while True:
            if quic.closed:
                ev = quic.close_event
                raise QuicConnectionError(
                    f"connection closed: {quic._close_message()}",
                    ev.error_code if ev else 0, ev.reason_phrase if ev else "")
            fut = loop.create_future()

            def wake(fut: asyncio.Future[None] = fut) -> None:
                if not fut.done():
                    fut.set_result(None)

            if not quic._add_drain_waiter(self._stream_id, wake):
                return
            await fut

    async def _get_close_waiter(self, stream: Any) -> None:
        """``writer.wait_closed()``: returns once everything written (and the FIN that
        ``close()`` sends) has left the Python queue; the connection stays open."""
        try:
            await self._drain_helper()
        except ConnectionError:
            pass


class QuicConnectionProtocol:
    """The asyncio face of one QUIC connection (aioquic's ``QuicConnectionProtocol``).

    Subclass it and override :meth:`quic_event_received` to handle events yourself, or use
    :meth:`create_stream` / ``stream_handler`` for asyncio streams.  Data is sent by the
    endpoint's network thread: :meth:`transmit` exists for compatibility and does nothing.
    """

    # What __init__ sets, as slots (a server holds thousands of idle protocols); __dict__
    # stays for subclasses and attributes set from outside.  The close event and the
    # transport view are made on first use: an idle connection needs neither.
    __slots__ = ("_loop", "_quic", "_stream_handler", "_stream_readers", "_connected",
                 "_connected_waiter", "_closed_event", "_ping_waiters", "_ping_next",
                 "_transport_view", "_foreign_transports", "_stats_waiters", "__dict__",
                 "__weakref__")

    def __init__(self, quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None):
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._quic = quic
        self._stream_handler = stream_handler
        self._stream_readers: dict[int, asyncio.StreamReader] = {}
        self._connected = False
        self._connected_waiter: Optional[asyncio.Future[None]] = loop.create_future()
        self._closed_event: Optional[asyncio.Event] = None  # see _closed
        self._ping_waiters: dict[int, asyncio.Future[None]] = {}
        self._ping_next = 0
        quic._track_finished = True
        self._transport_view: Optional[asyncio.DatagramTransport] = None  # see _transport
        self._foreign_transports: list[Any] = []  # see connection_made
        self._stats_waiters: list[asyncio.Future[QuicConnectionStats]] = []

    @property
    def _closed(self) -> asyncio.Event:
        """Set once the connection is closed (aioquic's attribute; made on first use)."""
        event = self._closed_event
        if event is None:
            event = self._closed_event = asyncio.Event()
        return event

    @_closed.setter
    def _closed(self, value: Any) -> None:
        # assignable, as the plain attribute it was: subclasses written for aiopquic 0.6.1
        # (aiomoqt's tests among them) set their own value under this name
        self._closed_event = value

    @property
    def _transport(self) -> asyncio.DatagramTransport:
        """aioquic programs read ``protocol._transport.get_extra_info("sockname")``; made on
        first use."""
        view = self._transport_view
        if view is None:
            quic = self._quic
            view = self._transport_view = transport_for(
                quic._endpoint, quic.peer_address, quic if quic._is_client else None)
        return view

    @_transport.setter
    def _transport(self, transport: asyncio.DatagramTransport) -> None:
        self._transport_view = transport

    # ------------------------------------------------------------------ public API

    def close(self, error_code: int = 0, reason_phrase: str = "") -> None:
        """Close the connection (application close) after queued data is delivered.

        Raises :class:`TypeError` / :class:`ValueError` when ``error_code`` is not an
        integer in [0, 2**62) or ``reason_phrase`` is not a str; the connection then stays
        open (and can be closed with valid arguments)."""
        self._quic.close(error_code=error_code, reason_phrase=reason_phrase)

    def change_connection_id(self) -> None:
        """aioquic's call to switch to a new connection ID: on a client, a move to a new
        local port (see :meth:`QuicConnection.change_connection_id`); on a server it raises
        :class:`NotImplementedError`."""
        self._quic.change_connection_id()

    async def migrate(self, local_port: int = 0) -> int:
        """*(aiopquic)* Client: move the connection to a new local UDP port (0: any free one)
        and return it once the engine switched (see :meth:`QuicConnection.migrate`).
        Raises :class:`OSError` when the move failed (the connection stays on its path),
        :class:`RuntimeError` on a server, :class:`QuicConnectionError` once closed."""
        fut: asyncio.Future[int] = self._loop.create_future()

        def done(port: int, error: Optional[str]) -> None:
            if fut.done():
                return
            if error is None:
                fut.set_result(port)
            else:
                fut.set_exception(OSError(f"migration failed: {error}"))

        self._quic.migrate(local_port, done)
        self._stats_waiters.append(fut)  # type: ignore[arg-type]  # failed on close
        try:
            return await fut
        finally:
            self._stats_waiters.remove(fut)  # type: ignore[arg-type]

    # aioquic's protocol is an asyncio.DatagramProtocol; here the UDP socket belongs to the
    # network thread, so these entry points exist only to say so -- except the one way
    # aioquic programs move a client to a new socket.

    def connection_made(self, transport: Any) -> None:
        """aioquic's way to move a client to a new UDP socket, as its interop.py does for
        NAT rebinding and address mobility: ``protocol._transport.close()``, then
        ``await loop.create_datagram_endpoint(lambda: protocol, local_addr=(host, 0))``.
        The network thread owns the connection's sockets, so the new asyncio socket is
        closed at once and the connection moves to a new local port of its own, as
        :meth:`migrate` does (new connection ID, path validated; a failure is logged and
        the connection stays on its path).  Anywhere else -- a server's protocol, a closed
        connection -- raises :class:`NotImplementedError`."""
        quic = self._quic
        if not quic._is_client or quic.closed or not hasattr(transport, "close"):
            raise NotImplementedError(_NO_DATAGRAM_PROTOCOL.format("connection_made"))
        self._foreign_transports.append(transport)
        transport.close()

        def moved(port: int, error: Optional[str]) -> None:
            if error is not None:
                _log.warning("moving to a new socket failed: %s", error)

        quic.migrate(0, moved)
        self._transport = transport_for(quic._endpoint, quic.peer_address, quic)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """Called by asyncio when a socket handed to :meth:`connection_made` is closed:
        nothing to do.  Otherwise not available: raises :class:`NotImplementedError`; use
        :meth:`wait_closed` or the ``ConnectionTerminated`` event."""
        if self._foreign_transports:
            self._foreign_transports.pop(0)
            return
        raise NotImplementedError(_NO_DATAGRAM_PROTOCOL.format("connection_lost"))

    def datagram_received(self, data: Any, addr: Any) -> None:
        """Not available: always raises :class:`NotImplementedError`.  aiopquic's network
        thread owns the UDP socket and feeds the engine itself, so a protocol cannot be
        driven with datagrams from a socket of your own."""
        raise NotImplementedError(_NO_DATAGRAM_PROTOCOL.format("datagram_received"))

    def error_received(self, exc: Exception) -> None:
        """Not available: always raises :class:`NotImplementedError`."""
        raise NotImplementedError(_NO_DATAGRAM_PROTOCOL.format("error_received"))

    def pause_writing(self) -> None:
        """Not available: always raises :class:`NotImplementedError`; per-stream flow is
        ``await writer.drain()``."""
        raise NotImplementedError(_NO_DATAGRAM_PROTOCOL.format("pause_writing"))

    def resume_writing(self) -> None:
        """Not available: always raises :class:`NotImplementedError`; per-stream flow is
        ``await writer.drain()``."""
        raise NotImplementedError(_NO_DATAGRAM_PROTOCOL.format("resume_writing"))

    def connect(self, addr: Any) -> None:
        """Compatibility no-op: :func:`aiopquic.asyncio.connect` starts the handshake."""

    async def create_stream(
        self, is_unidirectional: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a stream and return its (reader, writer).

        ``writer.drain()`` waits while the stream's send buffer is full, so memory stays
        bounded.  For a unidirectional stream the reader never receives data.
        """
        if self._quic.closed:
            raise QuicConnectionError(f"connection closed: {self._quic._close_message()}")
        stream_id = self._quic.get_next_available_stream_id(is_unidirectional=is_unidirectional)
        self._quic._mark_used(stream_id)
        return self._create_stream(stream_id)

    async def get_stats(self) -> QuicConnectionStats:
        """A snapshot of RTT, congestion window, packet size and counters (aiopquic)."""
        fut: asyncio.Future[QuicConnectionStats] = self._loop.create_future()

        def done(stats: QuicConnectionStats) -> None:
            if not fut.done():
                fut.set_result(stats)

        self._quic.request_stats(done)
        self._stats_waiters.append(fut)
        try:
            return await fut
        finally:
            self._stats_waiters.remove(fut)

    def request_key_update(self) -> None:
        """Start a 1-RTT key update (see :meth:`QuicConnection.request_key_update`)."""
        self._quic.request_key_update()

    async def ping(self) -> None:
        """Send a PING and wait for the peer to acknowledge it."""
        uid = self._ping_next
        self._ping_next += 1
        fut = self._loop.create_future()
        self._ping_waiters[uid] = fut
        self._quic.send_ping(uid)
        await asyncio.shield(fut)

    def transmit(self) -> None:
        """Compatibility no-op: the network thread sends as soon as data is queued."""

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        await self._closed.wait()

    async def wait_connected(self) -> None:
        """Wait for the handshake to complete; raises :class:`ConnectionError` if the
        connection closes first (refused, timed out, ALPN mismatch, bad certificate)."""
        if self._connected_waiter is not None:
            await asyncio.shield(self._connected_waiter)

    # ------------------------------------------------------------------ events

    def quic_event_received(self, event: events.QuicEvent) -> None:
        """Called for every event; the default feeds asyncio stream readers."""
        if isinstance(event, events.StreamDataReceived):
            reader = self._stream_readers.get(event.stream_id)
            if reader is None:
                reader, writer = self._create_stream(event.stream_id)
                # next_event() already returned this first chunk's credit
                if isinstance(reader, _StreamReader):
                    reader._aq_credited = len(event.data)
                if self._stream_handler is not None:
                    self._stream_handler(reader, writer)
            reader.feed_data(event.data)
            if event.end_stream:
                reader.feed_eof()
        elif isinstance(event, events.StreamReset):
            reader = self._stream_readers.get(event.stream_id)
            if reader is not None:
                reader.set_exception(ConnectionResetError(
                    f"stream {event.stream_id} reset by the peer (code {event.error_code})"))
        elif isinstance(event, events.ConnectionTerminated):
            # EOF only after the peer's FIN: a stream the connection's end cut short raises
            # the connection error (after its buffered bytes), so truncation never looks
            # like a complete transfer.
            exc = self._connection_error()
            for stream_id, reader in self._stream_readers.items():
                if bool(stream_id & 2) and \
                        bool(stream_id & 1) == (not self._quic.configuration.is_client):
                    reader.feed_eof()  # our unidirectional stream: nothing to receive
                elif isinstance(reader, _StreamReader):
                    reader._aq_abort(exc)
                elif not reader.at_eof() and reader.exception() is None:
                    reader.set_exception(exc)

    def _create_stream(self, stream_id: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader = _StreamReader(self._quic, stream_id, self._loop)
        self._quic._set_manual_credit(stream_id)
        self._stream_readers[stream_id] = reader
        transport = _StreamTransport(self, stream_id)
        flow: Any = _StreamFlow(self, stream_id)  # duck-types the protocol StreamWriter needs
        writer = _StreamWriter(transport, flow, reader, self._loop)
        writer._aq_quic = self._quic
        writer._aq_stream_id = stream_id
        return reader, writer

    def _process_events(self) -> None:
        quic = self._quic
        next_event = quic.next_event
        event = next_event()
        while event is not None:
            kind = type(event)
            if kind is events.StreamDataReceived or kind is events.DatagramFrameReceived:
                self.quic_event_received(event)  # the common case: nothing else to do
                event = next_event()
                continue
            if isinstance(event, events.HandshakeCompleted):
                self._connected = True
                if self._connected_waiter is not None and not self._connected_waiter.done():
                    self._connected_waiter.set_result(None)
                self._connected_waiter = None
            elif isinstance(event, events.PingAcknowledged):
                fut = self._ping_waiters.pop(event.uid, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            self.quic_event_received(event)
            if isinstance(event, events.ConnectionTerminated):
                self._on_terminated()
            event = next_event()
        # streams finished in both directions: their readers have seen everything
        for stream_id in quic._take_finished_streams():
            self._stream_readers.pop(stream_id, None)

    def _connection_error(self) -> QuicConnectionError:
        ev = self._quic.close_event
        return QuicConnectionError(self._quic._close_message(),
                                   ev.error_code if ev else 0, ev.reason_phrase if ev else "")

    def _on_terminated(self) -> None:
        exc = self._connection_error()
        if self._connected_waiter is not None and not self._connected_waiter.done():
            self._connected_waiter.set_exception(exc)
            self._connected_waiter.exception()  # retrieved: no "never retrieved" warning
        self._connected_waiter = None
        for fut in self._ping_waiters.values():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()
        self._ping_waiters.clear()
        for stats_fut in self._stats_waiters:
            if not stats_fut.done():
                stats_fut.set_exception(exc)
                stats_fut.exception()
        self._closed.set()

    # ------------------------------------------------------------------ aiopquic 0.6.1 extras

    async def aclose(self, error_code: int = 0, *, timeout: float = 2.0) -> None:
        """Close the connection with ``error_code`` and wait, at most ``timeout`` seconds,
        until it is closed (aiopquic 0.6.1).  Returns at once when it already is, or when
        no handshake ever completed.  Raises :class:`TypeError` / :class:`ValueError` for
        an ``error_code`` outside [0, 2**62)."""
        if self._closed.is_set():
            return
        self._quic.close(error_code=error_code)
        if not self._connected:
            return
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def wait_created(self, timeout: float = 5.0) -> None:
        """Wait until the connection exists in the engine, so writes reach it before the
        handshake (aiopquic 0.6.1).  Here a connection exists as soon as its protocol does,
        so this returns at once; it raises :class:`ConnectionError` when the connection is
        already closed.  ``timeout`` is accepted for 0.6.1 compatibility."""
        if self._quic.closed and not self._connected:
            raise self._connection_error()

    async def __aenter__(self) -> QuicConnectionProtocol:
        """``async with protocol:`` closes the connection on exit (aiopquic 0.6.1)."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the connection and wait for it, at most 2 seconds."""
        self.close()
        try:
            await asyncio.wait_for(self.wait_closed(), 2.0)
        except asyncio.TimeoutError:
            pass
