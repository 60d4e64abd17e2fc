"""Structured-concurrency QUIC connections and streams on anyio."""

from __future__ import annotations

import ipaddress
import itertools
import socket
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import anyio
from anyio import TypedAttributeProvider, TypedAttributeSet, typed_attribute
from anyio.abc import ByteStream, SocketAttribute
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from aiopquic.quic import events
from aiopquic.quic._checks import check_buffer, check_error_code, check_int, check_reason
from aiopquic.quic.connection import (
    QuicConnection,
    QuicConnectionError,
    QuicConnectionStats,
    StreamStateError,
)

if TYPE_CHECKING:
    from aiopquic.quic.connection import QuicEndpoint

__all__ = [
    "H3_NO_ERROR",
    "Connection",
    "ConnectionClosedError",
    "QuicAttribute",
    "QuicStream",
    "StreamResetError",
    "StreamStateError",
    "StreamStoppedError",
]

#: Incoming streams waiting for :meth:`Connection.accept_stream`; past this, new peer
#: streams are refused (STOP_SENDING, plus RESET_STREAM for bidirectional ones, code 0).
ACCEPT_BACKLOG = 1024
#: Received datagrams waiting for :meth:`Connection.receive_datagram`; past this the oldest
#: is dropped (datagrams are unreliable anyway).
DATAGRAM_BACKLOG = 1024

_Bytes = Union[bytes, bytearray, memoryview]

#: HTTP/3's "no error" application code (RFC 9114): on a connection whose ALPN is HTTP/3
#: (``h3`` ...), a close with this code ends :meth:`Connection.accept_stream` and
#: :meth:`Connection.receive_datagram` cleanly, as code 0 does everywhere.
H3_NO_ERROR = 0x100


class QuicAttribute(TypedAttributeSet):
    """Typed attributes of aiopquic's anyio objects (besides anyio's
    :class:`~anyio.abc.SocketAttribute` ``local_address``, ``local_port``,
    ``remote_address``, ``remote_port`` and ``family``)::

        alpn = connection.extra(QuicAttribute.alpn_protocol)
        sid = stream.extra(QuicAttribute.stream_id)
    """

    #: the negotiated ALPN protocol (None if none was negotiated)
    alpn_protocol: Optional[str] = typed_attribute()
    #: the server name (SNI) a client asked for; the configured one on a server
    server_name: Optional[str] = typed_attribute()
    #: the QUIC stream id (streams only)
    stream_id: int = typed_attribute()
    #: the aioquic-shaped :class:`~aiopquic.quic.connection.QuicConnection`
    quic_connection: QuicConnection = typed_attribute()


class ConnectionClosedError(anyio.BrokenResourceError, QuicConnectionError):
    """The connection was closed by the peer, timed out, or failed.

    Both an :class:`anyio.BrokenResourceError` and a :class:`ConnectionError`
    (:class:`~aiopquic.quic.connection.QuicConnectionError`): ``error_code`` and
    ``reason_phrase`` are the peer's CONNECTION_CLOSE values (0 and ``"idle timeout"`` for
    an idle timeout)."""

    def __init__(self, message: str, error_code: int = 0, reason_phrase: str = "") -> None:
        QuicConnectionError.__init__(self, message, error_code, reason_phrase)


class StreamResetError(anyio.BrokenResourceError):
    """The peer abandoned sending on the stream (RESET_STREAM with ``error_code``)."""

    def __init__(self, stream_id: int, error_code: int) -> None:
        super().__init__(f"stream {stream_id} was reset by the peer (code {error_code})")
        self.stream_id = stream_id
        self.error_code = error_code


class StreamStoppedError(anyio.BrokenResourceError):
    """The peer asked us to stop sending on the stream (STOP_SENDING with ``error_code``)."""

    def __init__(self, stream_id: int, error_code: int) -> None:
        super().__init__(f"the peer stopped stream {stream_id} (STOP_SENDING code "
                         f"{error_code})")
        self.stream_id = stream_id
        self.error_code = error_code


class _Signal:
    """Wake every task waiting for "something changed" (no lost wake-ups: callers check
    their condition, then wait, with no checkpoint in between)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: Optional[anyio.Event] = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()

    def fire(self) -> None:
        event = self._event
        if event is not None:
            self._event = None
            event.set()


class _SeenIds:
    """Which peer-initiated stream ids of one type were already seen (a floor below which
    all were seen, plus a small set above it), so late frames of a forgotten stream are
    not mistaken for a new stream."""

    __slots__ = ("floor", "above")

    def __init__(self) -> None:
        self.floor = 0  # every index < floor was seen
        self.above: set[int] = set()

    def add(self, index: int) -> bool:
        """Record ``index``; return True if it was new."""
        if index < self.floor or index in self.above:
            return False
        self.above.add(index)
        while self.floor in self.above:
            self.above.discard(self.floor)
            self.floor += 1
        return True


class QuicStream(ByteStream):
    """One QUIC stream as an :class:`anyio.abc.ByteStream`.

    * :meth:`send` copies the bytes into the stream's send buffer and returns when they fit
      in it (it waits while earlier bytes are still queued, so memory stays bounded).
    * :meth:`receive` returns the next bytes received, at most ``max_bytes``; flow-control
      credit is returned to the peer only as data is returned here, so a slow reader slows
      the sender down.
    * :meth:`send_eof` sends FIN; :meth:`aclose` sends FIN (if not yet sent) and, if the
      peer's side is not finished, STOP_SENDING with code 0.
    * :meth:`reset` / :meth:`stop_sending` abort one direction with an application error
      code.

    Errors: after our own :meth:`aclose` / :meth:`send_eof` / :meth:`reset` /
    :meth:`stop_sending`, using that direction raises :class:`anyio.ClosedResourceError`.
    :meth:`receive` raises :class:`anyio.EndOfStream` after the peer's FIN,
    :class:`StreamResetError` after the peer's RESET_STREAM (buffered data is discarded).
    :meth:`send` raises :class:`StreamStoppedError` after the peer's STOP_SENDING.  Both raise
    :class:`ConnectionClosedError` once the connection is gone (our own
    :meth:`Connection.aclose`: :class:`anyio.ClosedResourceError`), and
    :class:`StreamStateError` in the wrong direction (receiving on our unidirectional
    stream, sending on the peer's).
    """

    def __init__(self, connection: Connection, stream_id: int) -> None:
        self._conn = connection
        self._quic = connection._quic
        self._stream_id = stream_id
        local = bool(stream_id & 1) == (not self._quic.configuration.is_client)
        uni = bool(stream_id & 2)
        self._readable = not (uni and local)
        self._writable = not (uni and not local)
        self._rx: deque[Union[bytes, memoryview]] = deque()
        self._rx_bytes = 0
        self._rx_fin = False
        self._rx_reset: Optional[int] = None
        self._rx_closed = not self._readable  # locally: aclose() / stop_sending()
        self._tx_closed = not self._writable  # locally: send_eof() / aclose() / reset()
        self._tx_stopped: Optional[int] = None
        self._signal = _Signal()

    # ------------------------------------------------------------------ properties

    @property
    def stream_id(self) -> int:
        """The QUIC stream id."""
        return self._stream_id

    @property
    def is_unidirectional(self) -> bool:
        """True for a unidirectional stream (send-only if we opened it, receive-only if the
        peer did)."""
        return bool(self._stream_id & 2)

    @property
    def connection(self) -> Connection:
        """The :class:`Connection` this stream belongs to."""
        return self._conn

    @property
    def receive_buffered(self) -> int:
        """Bytes received and not yet returned by :meth:`receive` (bounded by the
        configuration's ``max_stream_data``)."""
        return self._rx_bytes

    @property
    def send_buffered(self) -> int:
        """Bytes given to :meth:`send` that the peer has not acknowledged yet."""
        return self._quic.get_stream_buffered_bytes(self._stream_id)

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The connection's typed attributes plus :attr:`QuicAttribute.stream_id`."""
        attributes = dict(self._conn.extra_attributes)
        attributes[QuicAttribute.stream_id] = lambda: self._stream_id
        return attributes

    # ------------------------------------------------------------------ receiving

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Return up to ``max_bytes`` (>= 1) received bytes, waiting for some if needed.

        Raises :class:`anyio.EndOfStream` only after the peer's FIN,
        :class:`StreamResetError` after its RESET_STREAM, :class:`ConnectionClosedError`
        when the connection ended first (bytes received before are returned first, so a
        truncated transfer never looks complete), :class:`anyio.ClosedResourceError` after
        our own :meth:`aclose` / :meth:`stop_sending` (or our :meth:`Connection.aclose`).
        :class:`ValueError` / :class:`TypeError` unless ``max_bytes`` is a positive
        integer.  Cancellation never loses data: bytes not returned stay buffered.
        """
        max_bytes = check_int("max_bytes", max_bytes, 1, 1 << 63, high_text="2**63")
        if not self._readable:
            raise StreamStateError(
                f"cannot receive on stream {self._stream_id}: it is our unidirectional "
                "stream (send-only)")
        await checkpoint_if_cancelled()
        waited = False
        while True:
            if self._rx_closed or self._conn._local_close:
                raise anyio.ClosedResourceError
            if self._rx_reset is not None:
                raise StreamResetError(self._stream_id, self._rx_reset)
            if self._rx:
                data = self._take(max_bytes)
                if not waited:
                    await cancel_shielded_checkpoint()
                return data
            if self._rx_fin:
                raise anyio.EndOfStream
            if self._quic.closed:
                raise self._conn._closed_error()
            await self._signal.wait()
            waited = True

    def _take(self, max_bytes: int) -> bytes:
        chunk = self._rx[0]
        if len(chunk) <= max_bytes:
            self._rx.popleft()
            data = chunk if isinstance(chunk, bytes) else bytes(chunk)
        else:
            view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
            data = bytes(view[:max_bytes])
            self._rx[0] = view[max_bytes:]
        n = len(data)
        self._rx_bytes -= n
        quic = self._quic
        quic._consumed(self._stream_id, n)
        if not self._rx:
            quic._flush_credit(self._stream_id)
        return data

    def _discard_rx(self) -> None:
        n = self._rx_bytes
        self._rx.clear()
        self._rx_bytes = 0
        if n:
            self._quic._consumed(self._stream_id, n)
            self._quic._flush_credit(self._stream_id)

    # ------------------------------------------------------------------ sending

    async def send(self, item: _Bytes) -> None:
        """Send ``item`` (bytes-like; copied, so it may be reused at once).

        Returns once the bytes are in the stream's send buffer; waits first while earlier
        bytes are still queued behind a full buffer (backpressure).  If cancelled while
        waiting after the copy, the bytes are still sent.  Raises
        :class:`anyio.ClosedResourceError` after our :meth:`send_eof` / :meth:`aclose` /
        :meth:`reset`, :class:`StreamStoppedError` after the peer's STOP_SENDING,
        :class:`ConnectionClosedError` when the connection is gone, :class:`TypeError` when
        ``item`` is not bytes-like (e.g. a :class:`str`).
        """
        item = check_buffer("item", item)
        if not self._writable:
            raise StreamStateError(
                f"cannot send on stream {self._stream_id}: it is the peer's "
                "unidirectional stream (receive-only)")
        await checkpoint_if_cancelled()
        waited = await self._wait_drained()
        self._check_send()
        if len(item):
            try:
                self._quic.send_stream_data(self._stream_id, item)
            except QuicConnectionError:
                raise self._conn._closed_error() from None
            if await self._wait_drained():
                waited = True
                if self._quic.closed:
                    raise self._conn._closed_error()
        if not waited:
            await cancel_shielded_checkpoint()

    def _check_send(self) -> None:
        if self._tx_closed:
            raise anyio.ClosedResourceError
        if self._tx_stopped is not None:
            raise StreamStoppedError(self._stream_id, self._tx_stopped)
        if self._quic.closed or self._conn._local_close:
            raise self._conn._closed_error()

    async def _wait_drained(self) -> bool:
        """Wait while the stream's Python-side queue is non-empty; True if it waited."""
        waited = False
        while True:
            self._check_send()
            event = anyio.Event()
            if not self._quic._add_drain_waiter(self._stream_id, event.set):
                return waited
            waited = True
            await event.wait()

    async def send_eof(self) -> None:
        """Send FIN after the bytes already sent (a no-op if the sending side is already
        closed or the connection is gone).  Receiving still works."""
        await checkpoint()
        self._send_fin()

    def _send_fin(self) -> None:
        if self._tx_closed or self._tx_stopped is not None or self._quic.closed:
            self._tx_closed = True
            return
        self._tx_closed = True
        try:
            self._quic.send_stream_data(self._stream_id, b"", end_stream=True)
        except (QuicConnectionError, StreamStateError):
            pass
        self._signal.fire()
        self._conn._maybe_forget(self)

    def reset(self, error_code: int = 0) -> None:
        """Abort sending (RESET_STREAM with ``error_code``): queued bytes are dropped and the
        peer's :meth:`receive` raises :class:`StreamResetError`.  No-op if the sending side
        is finished or the connection is gone.  Raises :class:`ValueError` /
        :class:`TypeError` (whatever the state) unless ``error_code`` is an integer in
        [0, 2**62)."""
        error_code = check_error_code(error_code)
        if not self._writable or self._tx_closed or self._quic.closed:
            self._tx_closed = True
            return
        self._tx_closed = True
        self._quic.reset_stream(self._stream_id, error_code)
        self._signal.fire()
        self._conn._maybe_forget(self)

    def stop_sending(self, error_code: int = 0) -> None:
        """Ask the peer to stop sending (STOP_SENDING with ``error_code``); buffered bytes
        are dropped and later :meth:`receive` calls raise
        :class:`anyio.ClosedResourceError`.  The peer's :meth:`send` raises
        :class:`StreamStoppedError`.  No-op if the receiving side is already finished.
        Raises :class:`ValueError` / :class:`TypeError` (whatever the state) unless
        ``error_code`` is an integer in [0, 2**62)."""
        error_code = check_error_code(error_code)
        if self._rx_closed:
            return
        self._rx_closed = True
        self._discard_rx()
        if not (self._rx_fin or self._rx_reset is not None or self._quic.closed):
            self._quic.stop_stream(self._stream_id, error_code)
        self._signal.fire()
        self._conn._maybe_forget(self)

    async def aclose(self) -> None:
        """Close both directions: FIN after the bytes already sent (unless already sent or
        reset), STOP_SENDING code 0 if the peer has not finished sending.  Pending and later
        :meth:`send` / :meth:`receive` calls raise :class:`anyio.ClosedResourceError`."""
        self._send_fin()
        if not self._rx_closed:
            self.stop_sending(0)
        await checkpoint()

    # ------------------------------------------------------------------ events

    def _on_data(self, data: bytes, fin: bool) -> None:
        if data:
            if self._rx_closed or self._rx_reset is not None:
                self._quic._consumed(self._stream_id, len(data))
            else:
                self._rx.append(data)
                self._rx_bytes += len(data)
        if fin:
            self._rx_fin = True
        self._signal.fire()

    def _on_reset(self, code: int) -> None:
        self._rx_reset = code
        self._discard_rx()
        self._signal.fire()

    def _on_stop(self, code: int) -> None:
        if self._tx_stopped is None:
            self._tx_stopped = code
        self._signal.fire()

    def _finished(self) -> bool:
        # No event can follow for a direction that is finished: the peer's FIN or
        # RESET_STREAM ends receiving; our FIN/RESET_STREAM or its STOP_SENDING ends sending
        # (a STOP_SENDING arriving after our FIN changes nothing for the application).
        rx_done = not self._readable or self._rx_fin or self._rx_reset is not None
        tx_done = not self._writable or self._tx_closed or self._tx_stopped is not None
        return rx_done and tx_done

    def __repr__(self) -> str:
        return f"<QuicStream {self._stream_id} of {self._conn!r}>"


class Connection(TypedAttributeProvider):
    """One QUIC connection for anyio code (asyncio or trio backend).

    Yielded by :func:`aiopquic.anyio.connect` and passed to :func:`aiopquic.anyio.serve`'s
    handler.  Streams: :meth:`open_stream`, :meth:`accept_stream` (or ``async for stream in
    connection``); datagrams: :meth:`send_datagram`, :meth:`receive_datagram`.  The
    underlying aioquic-shaped :class:`~aiopquic.quic.connection.QuicConnection` is
    :attr:`quic`.

    When the connection ends, waiting and later calls raise: :class:`anyio.EndOfStream`
    from :meth:`accept_stream` / :meth:`receive_datagram` after a clean close (error code 0
    from either side or an idle timeout; on an HTTP/3 connection also
    :data:`H3_NO_ERROR`), and ``async for stream in connection`` simply ends;
    :class:`ConnectionClosedError` after a close with any other code; and
    :class:`anyio.ClosedResourceError` after our own :meth:`aclose`.

    Typed attributes (``connection.extra(...)``): anyio's
    :class:`~anyio.abc.SocketAttribute` ``remote_address``, ``remote_port``,
    ``local_address``, ``local_port``, ``family``, and :class:`QuicAttribute`
    ``alpn_protocol``, ``server_name``, ``quic_connection``.
    """

    def __init__(self, quic: QuicConnection, endpoint: QuicEndpoint,
                 local_host: str = "0.0.0.0") -> None:
        self._local_host = local_host
        self._quic = quic
        quic._track_finished = True  # _on_events drains _take_finished_streams()
        self._endpoint = endpoint
        self._streams: dict[int, QuicStream] = {}
        self._seen = (_SeenIds(), _SeenIds())  # peer bidi, peer uni
        self._accept: deque[QuicStream] = deque()
        self._datagrams: deque[bytes] = deque()
        self._signal = _Signal()
        self._local_close = False
        self._connected = False
        self._pings: dict[int, anyio.Event] = {}
        self._ping_ids = itertools.count()
        self._acked_pings: set[int] = set()
        self._stats_waiters: set[anyio.Event] = set()
        self._datagrams_dropped = 0
        self.streams_refused = 0
        """Peer streams refused because :data:`ACCEPT_BACKLOG` were not accepted."""

    # ------------------------------------------------------------------ properties

    @property
    def datagrams_dropped(self) -> int:
        """Received datagrams dropped: because :data:`DATAGRAM_BACKLOG` were unread, or by
        the connection's event queue bound (:data:`~aiopquic.quic.connection.MAX_QUEUED_EVENTS`)."""
        return self._datagrams_dropped + self._quic.received_datagrams_dropped

    @property
    def quic(self) -> QuicConnection:
        """The aioquic-shaped :class:`~aiopquic.quic.connection.QuicConnection`."""
        return self._quic

    @property
    def alpn_protocol(self) -> Optional[str]:
        """The negotiated ALPN protocol."""
        return self._quic.alpn_protocol

    @property
    def peer_address(self) -> Optional[tuple[str, int]]:
        """The peer's (host, port)."""
        return self._quic.peer_address

    @property
    def local_port(self) -> int:
        """Our UDP port."""
        return self._endpoint.local_port

    @property
    def closed(self) -> bool:
        """True once the connection is closed or closing."""
        return self._quic.closed or self._local_close

    @property
    def close_event(self) -> Optional[events.ConnectionTerminated]:
        """The :class:`~aiopquic.quic.events.ConnectionTerminated` event once closed."""
        return self._quic.close_event

    @property
    def max_datagram_size(self) -> int:
        """Largest payload :meth:`send_datagram` accepts now (0 if datagrams are off)."""
        if not self._quic.configuration.max_datagram_frame_size:
            return 0
        return self._quic.max_datagram_size

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """anyio typed attributes: see the class docstring."""
        quic = self._quic

        def remote() -> tuple[str, int]:
            if quic.peer_address is None:  # pragma: no cover - set before the handshake
                raise anyio.TypedAttributeLookupError("the peer address is not known")
            return quic.peer_address

        family = socket.AF_INET6 if ipaddress.ip_address(
            self._local_host.split("%", 1)[0]).version == 6 else socket.AF_INET
        return {
            SocketAttribute.family: lambda: family,
            SocketAttribute.local_address: lambda: (self._local_host,
                                                    self._endpoint.local_port),
            SocketAttribute.local_port: lambda: self._endpoint.local_port,
            SocketAttribute.remote_address: remote,
            SocketAttribute.remote_port: lambda: remote()[1],
            QuicAttribute.alpn_protocol: lambda: quic.alpn_protocol,
            QuicAttribute.server_name: lambda: quic.configuration.server_name,
            QuicAttribute.quic_connection: lambda: quic,
        }

    # ------------------------------------------------------------------ errors

    def _clean_close(self) -> bool:
        """True when the connection ended with "no error": code 0 (either side, idle
        timeout), or :data:`H3_NO_ERROR` on an HTTP/3 connection."""
        ev = self._quic.close_event
        if ev is None:
            return False
        if ev.error_code == 0:
            return True
        alpn = self._quic.alpn_protocol or ""
        return ev.error_code == H3_NO_ERROR and ev.frame_type is None and alpn.startswith("h3")

    def _closed_error(self) -> BaseException:
        if self._local_close:
            return anyio.ClosedResourceError()
        ev = self._quic.close_event
        return ConnectionClosedError(self._quic._close_message(),
                                     ev.error_code if ev else 0,
                                     ev.reason_phrase if ev else "")

    def _end_error(self) -> BaseException:
        """What accept_stream / receive_datagram raise once the connection is gone."""
        if self._local_close:
            return anyio.ClosedResourceError()
        if self._clean_close():
            return anyio.EndOfStream()
        return self._closed_error()

    # ------------------------------------------------------------------ streams

    async def open_stream(self, bidirectional: bool = True) -> QuicStream:
        """Open a new stream (bidirectional, or send-only with ``bidirectional=False``).

        As in QUIC (and aioquic), the peer learns about the stream when the first bytes or
        FIN arrive.  If the peer's stream limit is reached, the data waits until it allows
        more streams.  Raises :class:`ConnectionClosedError` /
        :class:`anyio.ClosedResourceError` when the connection is gone.
        """
        await checkpoint()
        if self.closed:
            raise self._closed_error()
        quic = self._quic
        stream_id = quic.get_next_available_stream_id(is_unidirectional=not bidirectional)
        quic._mark_used(stream_id)
        stream = QuicStream(self, stream_id)
        self._streams[stream_id] = stream
        return stream

    async def accept_stream(self) -> QuicStream:
        """Wait for the next stream the peer opened (in the order the peer's first bytes
        arrived) and return it.

        Raises :class:`anyio.EndOfStream` once the connection closed cleanly (code 0; on
        HTTP/3 also :data:`H3_NO_ERROR`), :class:`ConnectionClosedError` when it closed
        with another code (``error_code``, ``reason_phrase``),
        :class:`anyio.ClosedResourceError` after our own :meth:`aclose`.
        """
        await checkpoint_if_cancelled()
        waited = False
        while True:
            if self._accept:
                stream = self._accept.popleft()
                if not waited:
                    await cancel_shielded_checkpoint()
                return stream
            if self.closed:
                raise self._end_error()
            await self._signal.wait()
            waited = True

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> QuicStream:
        """``async for stream in connection``: :meth:`accept_stream` until the connection
        closes cleanly or we close it; a close with an error code raises
        :class:`ConnectionClosedError`."""
        try:
            return await self.accept_stream()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    # ------------------------------------------------------------------ datagrams

    async def send_datagram(self, data: _Bytes) -> None:
        """Send an unreliable DATAGRAM frame (RFC 9221).

        Raises :class:`ValueError` when datagrams are off on either side
        (``max_datagram_frame_size``) or ``data`` is larger than :attr:`max_datagram_size`;
        :class:`TypeError` when ``data`` is not bytes-like (an empty datagram is allowed);
        :class:`ConnectionClosedError` / :class:`anyio.ClosedResourceError` when the
        connection is gone.
        """
        data = check_buffer("data", data)
        await checkpoint()
        if self.closed:
            raise self._closed_error()
        try:
            self._quic.send_datagram_frame(data)
        except QuicConnectionError:
            raise self._closed_error() from None

    async def receive_datagram(self) -> bytes:
        """Wait for the next received datagram.  At most :data:`DATAGRAM_BACKLOG` unread
        datagrams are kept (the oldest is dropped).  Raises like :meth:`accept_stream` once
        the connection is gone."""
        await checkpoint_if_cancelled()
        waited = False
        while True:
            if self._datagrams:
                data = self._datagrams.popleft()
                if not waited:
                    await cancel_shielded_checkpoint()
                return data
            if self.closed:
                raise self._end_error()
            await self._signal.wait()
            waited = True

    # ------------------------------------------------------------------ connection

    async def ping(self) -> None:
        """Send a PING and wait until the peer acknowledges it.  Raises
        :class:`ConnectionClosedError` / :class:`anyio.ClosedResourceError` if the
        connection ends first."""
        if self.closed:
            raise self._closed_error()
        uid = next(self._ping_ids)
        event = anyio.Event()
        self._pings[uid] = event
        try:
            self._quic.send_ping(uid)
            await event.wait()
        finally:
            self._pings.pop(uid, None)
        if uid not in self._acked_pings:
            raise self._closed_error()
        self._acked_pings.discard(uid)

    async def get_stats(self) -> QuicConnectionStats:
        """A snapshot of the connection's transport state (RTT, congestion window, packet
        size, counters) from the network thread.  Raises :class:`ConnectionClosedError` /
        :class:`anyio.ClosedResourceError` if the connection is or becomes closed."""
        if self.closed:
            raise self._closed_error()
        result: list[QuicConnectionStats] = []
        event = anyio.Event()

        def done(stats: QuicConnectionStats) -> None:
            result.append(stats)
            event.set()

        self._quic.request_stats(done)
        self._stats_waiters.add(event)
        try:
            await event.wait()
        finally:
            self._stats_waiters.discard(event)
        if not result:
            raise self._closed_error()
        return result[0]

    def request_key_update(self) -> None:
        """Start a 1-RTT key update (ignored while the previous one is unconfirmed).
        Raises :class:`ConnectionClosedError` / :class:`anyio.ClosedResourceError` once the
        connection is closed."""
        if self.closed:
            raise self._closed_error()
        self._quic.request_key_update()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by either side)."""
        while not self._quic.closed:
            await self._signal.wait()

    async def aclose(self, error_code: int = 0, reason_phrase: str = "") -> None:
        """Close the connection (application close with ``error_code`` and
        ``reason_phrase``) and wait until it is closed.

        Data already sent on streams is delivered first (the CONNECTION_CLOSE follows once
        the peer acknowledged it; bounded by the idle timeout).  Pending and later calls on
        the connection and its streams raise :class:`anyio.ClosedResourceError`.
        Idempotent; if cancelled, the close still proceeds in the background.  Raises
        :class:`ValueError` / :class:`TypeError` when ``error_code`` is not an integer in
        [0, 2**62) or ``reason_phrase`` is not a str (the connection stays open).
        """
        error_code = check_error_code(error_code)
        check_reason(reason_phrase)
        if not self._local_close:
            self._local_close = True
            if not self._quic.closed:
                self._quic.close(error_code=error_code, reason_phrase=reason_phrase)
            self._wake_all()
        timeout = max(self._quic.configuration.idle_timeout, 1.0) + 5.0
        with anyio.move_on_after(timeout):
            await self.wait_closed()

    def _abort(self) -> None:
        """The endpoint is going away (our task was cancelled or failed): from now on
        the connection counts as closed by us."""
        self._local_close = True
        self._wake_all()

    def _fail(self, error_code: int, reason_phrase: str) -> None:
        """Close at once with an error code (a handler failed); no waiting."""
        if not self._local_close:
            self._local_close = True
            if not self._quic.closed:
                self._quic.close(error_code=error_code, reason_phrase=reason_phrase)
            self._wake_all()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ event dispatch

    def _wake_all(self) -> None:
        self._signal.fire()
        for stream in self._streams.values():
            stream._signal.fire()
        for event in self._pings.values():
            event.set()
        for event in self._stats_waiters:
            event.set()

    def _maybe_forget(self, stream: QuicStream) -> None:
        if stream._finished() and self._streams.get(stream._stream_id) is stream:
            del self._streams[stream._stream_id]

    def _stream_for_event(self, stream_id: int) -> Optional[QuicStream]:
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        quic = self._quic
        local = bool(stream_id & 1) == (not quic.configuration.is_client)
        if local:
            return None  # one of ours we already forgot
        if not self._seen[(stream_id >> 1) & 1].add(stream_id >> 2):
            return None  # the peer's, finished and forgotten
        stream = QuicStream(self, stream_id)
        if len(self._accept) >= ACCEPT_BACKLOG or self._local_close:
            self.streams_refused += 1
            stream._rx_closed = stream._tx_closed = True
            quic.stop_stream(stream_id, 0)
            if stream._writable:
                quic.reset_stream(stream_id, 0)
            return stream  # not registered: its data is credited and dropped
        self._streams[stream_id] = stream
        self._accept.append(stream)
        self._signal.fire()
        return stream

    def _on_events(self) -> None:
        """Pump the QuicConnection's events (called by the endpoint driver)."""
        quic = self._quic
        queue = quic._events
        # Events are popped directly rather than through next_event(): next_event() returns
        # receive credit for streams no reader has claimed, and here every stream's credit
        # returns only as the application consumes (QuicStream._take).
        while queue:
            event = queue.popleft()
            etype = type(event)
            if etype is events.StreamDataReceived:
                assert isinstance(event, events.StreamDataReceived)
                stream = self._stream_for_event(event.stream_id)
                if stream is None:
                    if event.data:
                        quic._consumed(event.stream_id, len(event.data))
                    continue
                stream._on_data(event.data, event.end_stream)
                if event.end_stream:
                    self._maybe_forget(stream)
            elif etype is events.StreamReset:
                assert isinstance(event, events.StreamReset)
                stream = self._stream_for_event(event.stream_id)
                if stream is not None:
                    stream._on_reset(event.error_code)
                    self._maybe_forget(stream)
            elif etype is events.StopSendingReceived:
                assert isinstance(event, events.StopSendingReceived)
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._on_stop(event.error_code)
                    self._maybe_forget(stream)
            elif etype is events.DatagramFrameReceived:
                assert isinstance(event, events.DatagramFrameReceived)
                if len(self._datagrams) >= DATAGRAM_BACKLOG:
                    self._datagrams.popleft()
                    self._datagrams_dropped += 1
                self._datagrams.append(event.data)
                self._signal.fire()
            elif etype is events.HandshakeCompleted:
                self._connected = True
                self._signal.fire()
            elif etype is events.PingAcknowledged:
                assert isinstance(event, events.PingAcknowledged)
                ping = self._pings.get(event.uid)
                if ping is not None:
                    self._acked_pings.add(event.uid)
                    ping.set()
            elif etype is events.ConnectionTerminated:
                self._wake_all()
        quic._events_drained()  # an idle connection holds no queue
        # Streams the engine closed (both directions done): no event can follow for them.
        for stream_id in quic._take_finished_streams():
            self._streams.pop(stream_id, None)

    async def _wait_connected(self) -> None:
        """Wait for the handshake; raise :class:`QuicConnectionError` if the connection
        closes first."""
        while not self._connected:
            if self._quic.closed:
                ev = self._quic.close_event
                raise QuicConnectionError(self._quic._close_message(),
                                          ev.error_code if ev else 0,
                                          ev.reason_phrase if ev else "")
            await self._signal.wait()

    def __repr__(self) -> str:
        peer = self._quic.peer_address
        where = f"{peer[0]}:{peer[1]}" if peer else "?"
        return f"<Connection {where} {'closed' if self.closed else 'open'}>"
