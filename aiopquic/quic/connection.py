"""The QUIC connection facade (aioquic-shaped) over the native engine.

A :class:`QuicConnection` is the object aioquic users know as ``protocol._quic``: they call
``send_stream_data``, ``reset_stream``, ``send_datagram_frame``, ``close`` ... and read events
with ``next_event()``.  Unlike aioquic there is no ``datagrams_to_send``/``receive_datagram``:
packets are built and sent by the endpoint's network thread, so nothing has to call
``transmit()`` for data to leave.

:class:`QuicEndpoint` drives one native endpoint for any event loop: it owns the socket's
network thread, maps connection handles to :class:`QuicConnection` objects and dispatches the
native events.  It knows nothing about asyncio; the asyncio and anyio layers wait on
:attr:`QuicEndpoint.fileno` and call :meth:`QuicEndpoint.process`.

Flow control follows the consumer.  ``next_event()`` returns the receive credit for the data
it hands out, unless a reader took over the stream (:meth:`QuicConnection._set_manual_credit`),
in which case credit returns as the reader consumes.  Sending never raises for a full buffer
and never drops bytes: past the stream's native ring, data waits in a Python queue that is
flushed as the peer acknowledges.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from dataclasses import dataclass
from typing import IO, Any, Callable, Optional, Union

from aiopquic import _native
from aiopquic._native import ffi, lib
from aiopquic.quic import events
from aiopquic.quic.configuration import QuicConfiguration

__all__ = ["QuicConnection", "QuicConnectionStats", "QuicEndpoint", "QuicConnectionError",
           "StreamStateError"]

_log = logging.getLogger("aiopquic")

_CC = {"reno": lib.AQ_CC_RENO, "cubic": lib.AQ_CC_CUBIC, "bbr": lib.AQ_CC_BBR}
_CREDIT_BATCH = 64 * 1024
_FINISHED_MEMORY = 65536  # finished stream ids remembered to reject late writes

# A datagram must fit in one packet: 1452-byte UDP payload minus the short header (1 + 18-byte
# CID + up to 4 bytes packet number), the AEAD tag (16) and the DATAGRAM frame header (<= 3).
MAX_DATAGRAM_PAYLOAD = 1452 - 1 - 18 - 4 - 16 - 3


@dataclass(frozen=True)
class QuicConnectionStats:
    """A snapshot of a connection's transport state (see
    :meth:`QuicConnection.request_stats`).  Times are in seconds."""

    smoothed_rtt: float
    min_rtt: float
    latest_rtt: float
    rttvar: float
    cwnd: int
    """Congestion window in bytes."""
    ssthresh: int
    bytes_in_flight: int
    max_datagram_size: int
    """UDP payload size in use on the current path (what PMTUD found)."""
    packets_sent: int
    packets_received: int
    bytes_sent: int
    bytes_received: int
    datagrams_dropped: int
    """Datagrams never sent: the oldest are dropped when more than 1 MiB waits (the sender
    outran the path), or one did not fit in a packet."""


class QuicConnectionError(ConnectionError):
    """The connection is closed (or closing): carries the close code and reason."""

    def __init__(self, message: str, error_code: int = 0, reason_phrase: str = "") -> None:
        super().__init__(message)
        self.error_code = error_code
        self.reason_phrase = reason_phrase


class StreamStateError(ValueError):
    """An operation is not allowed in the stream's state (after FIN, after a reset, wrong
    direction)."""


def native_config(cfg: QuicConfiguration) -> dict[str, Any]:
    """Translate a :class:`QuicConfiguration` into the native ``aq_config`` fields."""
    alpn = b""
    for proto in cfg.alpn_protocols or []:
        raw = proto.encode()
        alpn += bytes([len(raw)]) + raw
    return {
        "is_server": 0 if cfg.is_client else 1,
        "cert_pem": cfg.certificate_chain,
        "key_pem": cfg.private_key,
        "key_password": cfg.private_key_password,
        "ca_file": cfg.cafile,
        "ca_path": cfg.capath,
        "ca_pem": cfg.cadata,
        "verify_peer": int(cfg.is_client and cfg.verify_mode != ssl.CERT_NONE),
        "alpn": alpn or None,
        "keylog": int(cfg.secrets_log_file is not None),
        "idle_timeout_ns": int(cfg.idle_timeout * 1e9),
        "handshake_timeout_ns": int(cfg.handshake_timeout * 1e9),
        "max_data": int(cfg.max_data),
        "max_stream_data": int(cfg.max_stream_data),
        "max_streams_bidi": int(cfg.max_streams_bidi),
        "max_streams_uni": int(cfg.max_streams_uni),
        "max_datagram_frame_size": int(cfg.max_datagram_frame_size or 0),
        "cc_algo": _CC[cfg.congestion_control_algorithm],
        "max_udp_payload": int(cfg.max_datagram_size),
    }


class _TxStream:
    """Python-side state of a stream we send on."""

    __slots__ = ("buf", "spill", "fin_pending", "fin_sent", "reset", "stopped", "waiters",
                 "open")

    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.spill: deque[memoryview] = deque()  # views: slicing a large write copies nothing
        self.fin_pending = False  # FIN waits behind the spill queue
        self.fin_sent = False
        self.reset = False
        self.stopped: Optional[int] = None  # peer's STOP_SENDING code
        self.waiters: list[Callable[[], None]] = []
        self.open = True  # writable: no FIN, reset or STOP_SENDING, connection open


def _is_uni(stream_id: int) -> bool:
    return bool(stream_id & 2)


class QuicConnection:
    """One QUIC connection, driven by a :class:`QuicEndpoint`'s network thread.

    Mirrors the parts of :class:`aioquic.quic.connection.QuicConnection` an application uses.
    Methods are called from the event loop's thread only.
    """

    def __init__(self, *, configuration: QuicConfiguration, endpoint: QuicEndpoint,
                 handle: int) -> None:
        self.configuration = configuration
        self._endpoint = endpoint
        self._handle = handle
        self._is_client = configuration.is_client
        self._events: deque[events.QuicEvent] = deque()
        self._tx: dict[int, _TxStream] = {}
        # next unused id of each local stream type (index: 1 for unidirectional)
        self._next_local = [int(not self._is_client), 2 | int(not self._is_client)]
        # streams the engine closed recently: writing there again raises (bounded memory)
        self._finished_recent: set[int] = set()
        self._finished_order: deque[int] = deque()
        self._auto_credit = True  # next_event() returns credit for unclaimed streams
        self._track_finished = False  # a layer drains _take_finished_streams()
        self._remote_max_datagram_frame_size: Optional[int] = None  # aioquic's H3 reads it
        self._manual_credit: set[int] = set()
        self._credit: dict[int, int] = {}
        self._closed = False
        self._close_event: Optional[events.ConnectionTerminated] = None
        self._close_flags = 0
        self._pending_close: Optional[tuple[int, Optional[int], str]] = None
        self._handshake_done = False
        self._peer_max_datagram = 0
        self._stats_callbacks: dict[int, Callable[[QuicConnectionStats], None]] = {}
        self._stats_ids = 0
        self._finished_streams: list[int] = []  # closed in the engine; see _take_finished
        self.alpn_protocol: Optional[str] = None
        self._quic_logger: Any = None  # aioquic's H3Connection reads this attribute
        self.peer_address: Optional[tuple[str, int]] = None

    # ------------------------------------------------------------------ introspection

    @property
    def closed(self) -> bool:
        """True once the connection is closed or closing (no more sends)."""
        return self._closed

    @property
    def handshake_complete(self) -> bool:
        """True once the TLS handshake has completed."""
        return self._handshake_done

    @property
    def close_event(self) -> Optional[events.ConnectionTerminated]:
        """The :class:`ConnectionTerminated` event once the connection has closed."""
        return self._close_event

    def get_stream_buffered_bytes(self, stream_id: int) -> int:
        """Bytes written on ``stream_id`` and not yet acknowledged by the peer (native ring
        plus the Python-side queue)."""
        st = self._tx.get(stream_id)
        if st is None or st.buf is None:
            return 0
        return int(lib.aq_txbuf_unacked(st.buf)) + sum(len(b) for b in st.spill)

    def stream_send_pending(self, stream_id: int) -> bool:
        """True while data for ``stream_id`` waits in the Python-side queue
        (``writer.drain()`` waits for this to become False)."""
        st = self._tx.get(stream_id)
        return bool(st and st.spill and not st.reset and st.stopped is None and not self._closed)

    # ------------------------------------------------------------------ streams

    def get_next_available_stream_id(self, is_unidirectional: bool = False) -> int:
        """Return the next stream id this endpoint may open (does not reserve it, as in
        aioquic: the id is taken by the first ``send_stream_data``)."""
        return self._next_local[1 if is_unidirectional else 0]

    def _mark_used(self, stream_id: int) -> None:
        """Take ``stream_id`` (a local stream): get_next_available_stream_id moves past it."""
        if bool(stream_id & 1) == (not self._is_client):
            kind = (stream_id >> 1) & 1
            if stream_id >= self._next_local[kind]:
                self._next_local[kind] = stream_id + 4

    def _check_stream_id(self, stream_id: int, for_send: bool) -> None:
        if not isinstance(stream_id, int) or stream_id < 0 or stream_id >= 1 << 62:
            raise ValueError(f"invalid stream id {stream_id!r}")
        local = bool(stream_id & 1) == (not self._is_client)
        if for_send and _is_uni(stream_id) and not local:
            raise StreamStateError(
                f"cannot send on stream {stream_id}: it is the peer's unidirectional stream")
        if not for_send and _is_uni(stream_id) and local:
            raise StreamStateError(
                f"cannot stop stream {stream_id}: it is a local unidirectional stream")

    def _tx_stream(self, stream_id: int) -> _TxStream:
        st = self._tx.get(stream_id)
        if st is None:
            if stream_id in self._finished_recent:
                raise StreamStateError(
                    f"cannot send on stream {stream_id}: it is finished (both directions "
                    f"closed)")
            buf = lib.aq_txbuf_new(self.configuration.stream_buffer_size)
            if buf == ffi.NULL:
                raise MemoryError("cannot allocate a stream buffer")
            st = _TxStream(buf)
            self._tx[stream_id] = st
            self._mark_used(stream_id)
        return st

    def _raise_if_closed(self) -> None:
        if self._closed:
            ev = self._close_event
            if ev is not None:
                raise QuicConnectionError(
                    f"connection closed (error {ev.error_code:#x}: {ev.reason_phrase!r})",
                    ev.error_code, ev.reason_phrase)
            raise QuicConnectionError("connection is closing")

    def send_stream_data(self, stream_id: int, data: Union[bytes, bytearray, memoryview],
                         end_stream: bool = False) -> None:
        """Queue ``data`` (and FIN if ``end_stream``) on ``stream_id``.

        Never blocks and never raises for a full buffer: bytes past the stream's native ring
        wait in Python and go out as the peer acknowledges (``writer.drain()`` waits for that).
        Raises :class:`StreamStateError` after FIN, after a local reset, after the peer's
        STOP_SENDING, or on the peer's unidirectional stream; :class:`QuicConnectionError`
        once the connection is closed.
        """
        st = self._tx.get(stream_id)
        if st is None or not st.open or st.spill:
            self._send_slow(stream_id, data, end_stream)
        else:  # fast path: an open stream with nothing queued in Python
            self._write_ring(stream_id, st, data, end_stream)

    def _write_ring(self, stream_id: int, st: _TxStream,
                    data: Union[bytes, bytearray, memoryview], end_stream: bool) -> None:
        """Copy ``data`` into the stream's native ring; what does not fit waits in Python."""
        n = len(data)
        src = (data if type(data) is bytes else ffi.from_buffer(data)) if n else ffi.NULL
        done = lib.aq_stream_write(self._endpoint.ptr, self._handle, stream_id, st.buf, src, n,
                                   1 if end_stream else 0)
        if done == n:
            if end_stream:
                st.fin_sent = True
                st.open = False
            return
        self._spill(stream_id, st, data, max(done, 0), end_stream)

    def _send_slow(self, stream_id: int, data: Union[bytes, bytearray, memoryview],
                   end_stream: bool) -> None:
        self._check_stream_id(stream_id, True)
        self._raise_if_closed()
        if self._pending_close is not None:
            raise QuicConnectionError("connection is closing")
        st = self._tx_stream(stream_id)
        if st.fin_sent or st.fin_pending:
            raise StreamStateError(f"cannot send on stream {stream_id} after its FIN")
        if st.reset:
            raise StreamStateError(f"cannot send on stream {stream_id}: it was reset")
        if st.stopped is not None:
            raise StreamStateError(
                f"cannot send on stream {stream_id}: the peer sent STOP_SENDING "
                f"(code {st.stopped})")
        if st.spill:
            if data:
                st.spill.append(memoryview(bytes(data)))
            if end_stream:
                st.fin_pending = True
                st.open = False
            return
        if data or end_stream:
            self._write_ring(stream_id, st, data, end_stream)

    def _spill(self, stream_id: int, st: _TxStream, data: Union[bytes, bytearray, memoryview],
               done: int, end_stream: bool) -> None:
        st.spill.append(memoryview(bytes(memoryview(data)[done:])))
        if end_stream:
            st.fin_pending = True
            st.open = False
        self._want_writable(stream_id, st)

    def _want_writable(self, stream_id: int, st: _TxStream) -> None:
        while st.spill and lib.aq_txbuf_want_writable(st.buf) == 1:
            self._flush_spill(stream_id, st)

    def _flush_spill(self, stream_id: int, st: _TxStream) -> None:
        ptr = self._endpoint.ptr
        while st.spill:
            chunk = st.spill[0]
            last = len(st.spill) == 1
            fin = 1 if (last and st.fin_pending) else 0
            done = lib.aq_stream_write(ptr, self._handle, stream_id, st.buf,
                                       ffi.from_buffer(chunk), len(chunk), fin)
            if done < 0:
                return  # command ring full: retried on CMD_SPACE
            if done == len(chunk):
                st.spill.popleft()
                if fin:
                    st.fin_pending = False
                    st.fin_sent = True
                continue
            if done:
                st.spill[0] = chunk[done:]
            break
        if st.spill:
            return
        if st.fin_pending:  # FIN alone after an empty spill
            if lib.aq_stream_write(ptr, self._handle, stream_id, st.buf, ffi.NULL, 0, 1) >= 0:
                st.fin_pending = False
                st.fin_sent = True
        self._wake(st)
        if self._pending_close is not None and not any(s.spill for s in self._tx.values()):
            code, frame_type, reason = self._pending_close
            self._pending_close = None
            self._send_close(code, frame_type, reason)

    def _wake(self, st: _TxStream) -> None:
        waiters, st.waiters = st.waiters, []
        for cb in waiters:
            cb()

    def _add_drain_waiter(self, stream_id: int, callback: Callable[[], None]) -> bool:
        """Register ``callback`` for when ``stream_id``'s queue empties; False if it already
        is empty."""
        if not self.stream_send_pending(stream_id):
            return False
        self._tx[stream_id].waiters.append(callback)
        return True

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Abruptly end sending on ``stream_id`` (RESET_STREAM with ``error_code``); queued
        data is discarded.  Does nothing on a closed connection or a stream that has already
        finished in both directions (nothing is left to reset)."""
        self._check_stream_id(stream_id, True)
        if self._closed or (stream_id in self._finished_recent and stream_id not in self._tx):
            return
        st = self._tx_stream(stream_id)
        st.reset = True
        st.open = False
        st.spill.clear()
        st.fin_pending = False
        self._wake(st)
        self._command(lib.aq_stream_reset, stream_id, error_code)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """Ask the peer to stop sending on ``stream_id`` (STOP_SENDING with
        ``error_code``)."""
        self._check_stream_id(stream_id, False)
        if self._closed:
            return
        self._mark_used(stream_id)
        self._command(lib.aq_stream_stop, stream_id, error_code)

    def send_datagram_frame(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Send an unreliable DATAGRAM frame.

        Never blocks: if more than 1 MiB of datagrams waits for the path, the oldest are
        dropped (counted in :attr:`QuicConnectionStats.datagrams_dropped`).

        Raises :class:`ValueError` when datagrams are not enabled locally
        (``max_datagram_frame_size`` is None) or by the peer, or when ``data`` is larger
        than what the peer accepts or one packet carries.
        """
        self._raise_if_closed()
        if not self.configuration.max_datagram_frame_size:
            raise ValueError("datagrams are disabled: set "
                             "QuicConfiguration.max_datagram_frame_size")
        limit = self.max_datagram_size
        if self._handshake_done and self._peer_max_datagram == 0:
            raise ValueError("the peer does not accept datagrams "
                             "(it sent no max_datagram_frame_size)")
        if len(data) > limit:
            raise ValueError(f"datagram of {len(data)} bytes is larger than the "
                             f"{limit}-byte maximum for this connection")
        rv = lib.aq_send_datagram(self._endpoint.ptr, self._handle, ffi.from_buffer(data),
                                  len(data))
        if rv == -1:
            raw = bytes(data)
            self._endpoint._defer(lambda: lib.aq_send_datagram(
                self._endpoint.ptr, self._handle, ffi.from_buffer(raw), len(raw)))

    @property
    def max_datagram_size(self) -> int:
        """Largest datagram payload :meth:`send_datagram_frame` accepts now."""
        limit = MAX_DATAGRAM_PAYLOAD
        if self._handshake_done:
            limit = min(limit, max(0, self._peer_max_datagram - 9))
        return limit

    def send_ping(self, uid: int) -> None:
        """Send a PING; :class:`PingAcknowledged` with ``uid`` follows when the peer
        acknowledges it."""
        self._raise_if_closed()
        self._command_conn(lib.aq_ping, uid)

    def request_stats(self, callback: Callable[[QuicConnectionStats], None]) -> None:
        """Ask the network thread for a :class:`QuicConnectionStats` snapshot; ``callback``
        receives it from the event loop (never, if the connection closes first).  Raises
        :class:`QuicConnectionError` once closed."""
        self._raise_if_closed()
        self._stats_ids += 1
        request_id = self._stats_ids
        self._stats_callbacks[request_id] = callback
        self._command_conn(lib.aq_request_stats, request_id)

    def request_key_update(self) -> None:
        """Start a 1-RTT key update (RFC 9001 section 6).  Ignored while the previous update
        is not yet confirmed by the peer; raises :class:`QuicConnectionError` once closed."""
        self._raise_if_closed()
        if lib.aq_key_update(self._endpoint.ptr, self._handle) == -1:
            self._endpoint._defer(lambda: lib.aq_key_update(self._endpoint.ptr, self._handle))

    def close(self, error_code: int = 0, frame_type: Optional[int] = None,
              reason_phrase: str = "") -> None:
        """Close the connection gracefully.

        Data already given to ``send_stream_data`` is delivered first: the CONNECTION_CLOSE
        goes out once the peer has acknowledged every byte (bounded by the idle timeout).
        ``frame_type=None`` sends an application close, otherwise a transport close.
        """
        if self._closed or self._pending_close is not None:
            return
        for st in self._tx.values():
            st.open = False  # no more writes: they take the slow path and raise
        if any(st.spill for st in self._tx.values()):
            self._pending_close = (error_code, frame_type, reason_phrase)
            return
        self._send_close(error_code, frame_type, reason_phrase)

    def _send_close(self, error_code: int, frame_type: Optional[int], reason: str) -> None:
        raw = reason.encode("utf-8")
        is_app = 1 if frame_type is None else 0
        ft = frame_type or 0
        if lib.aq_conn_close(self._endpoint.ptr, self._handle, error_code, is_app, ft,
                             raw, len(raw)) == -1:
            self._endpoint._defer(lambda: lib.aq_conn_close(
                self._endpoint.ptr, self._handle, error_code, is_app, ft, raw, len(raw)))

    def _command(self, fn: Any, stream_id: int, code: int) -> None:
        if fn(self._endpoint.ptr, self._handle, stream_id, code) == -1:
            self._endpoint._defer(lambda: fn(self._endpoint.ptr, self._handle, stream_id, code))

    def _command_conn(self, fn: Any, code: int) -> None:
        if fn(self._endpoint.ptr, self._handle, code) == -1:
            self._endpoint._defer(lambda: fn(self._endpoint.ptr, self._handle, code))

    # ------------------------------------------------------------------ receive credit

    def _set_manual_credit(self, stream_id: int) -> None:
        """A reader consumes ``stream_id``: credit returns via :meth:`_consumed`."""
        self._manual_credit.add(stream_id)

    def _consumed(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` bytes of ``stream_id``: extend the peer's credit."""
        if n <= 0 or self._closed:
            return
        total = self._credit.get(stream_id, 0) + n
        self._credit[stream_id] = total
        if total >= _CREDIT_BATCH:
            self._flush_credit(stream_id)

    def _flush_credit(self, stream_id: int) -> None:
        n = self._credit.pop(stream_id, 0)
        if n and not self._closed:
            self._command(lib.aq_stream_consumed, stream_id, n)

    def next_event(self) -> Optional[events.QuicEvent]:
        """Return the next event, or None when there is none."""
        try:
            event = self._events.popleft()
        except IndexError:
            return None
        if type(event) is events.StreamDataReceived and self._auto_credit and \
                event.stream_id not in self._manual_credit and event.data:
            self._consumed(event.stream_id, len(event.data))
        return event

    # ------------------------------------------------------------------ native events

    def _on_native(self, ev: _native.NativeEvent) -> None:
        t = ev.type
        if t == _native.EV_STREAM_DATA:
            self._events.append(events.StreamDataReceived(
                data=ev.data, end_stream=bool(ev.flags & _native.FLAG_FIN),
                stream_id=ev.stream_id))
        elif t == _native.EV_WRITABLE:
            st = self._tx.get(ev.stream_id)
            if st is not None:
                if st.spill and not st.reset and st.stopped is None:
                    self._flush_spill(ev.stream_id, st)
                    self._want_writable(ev.stream_id, st)
                else:
                    self._wake(st)
        elif t == _native.EV_HANDSHAKE_DONE:
            self._handshake_done = True
            self._peer_max_datagram = ev.code
            self._remote_max_datagram_frame_size = ev.code or None
            self.alpn_protocol = ev.data.decode("ascii", "replace") if ev.data else None
            self._events.append(events.ProtocolNegotiated(alpn_protocol=self.alpn_protocol))
            self._events.append(events.HandshakeCompleted(
                alpn_protocol=self.alpn_protocol, early_data_accepted=False,
                session_resumed=False))
        elif t == _native.EV_STREAM_RESET:
            self._events.append(events.StreamReset(error_code=ev.code, stream_id=ev.stream_id))
        elif t == _native.EV_STOP_SENDING:
            st = self._tx.get(ev.stream_id)
            if st is not None:
                st.stopped = ev.code
                st.open = False
                st.spill.clear()
                st.fin_pending = False
                self._wake(st)
            self._events.append(events.StopSendingReceived(error_code=ev.code,
                                                           stream_id=ev.stream_id))
        elif t == _native.EV_DATAGRAM:
            self._events.append(events.DatagramFrameReceived(data=ev.data))
        elif t == _native.EV_PING_ACK:
            self._events.append(events.PingAcknowledged(uid=ev.code))
        elif t == _native.EV_STREAM_CLOSED:
            st = self._tx.pop(ev.stream_id, None)
            if st is not None:
                st.spill.clear()
                self._wake(st)
                lib.aq_txbuf_release(st.buf)
                st.buf = None
            # the connection-level part of pending credit still matters: send it
            self._flush_credit(ev.stream_id)
            self._finished_recent.add(ev.stream_id)
            self._finished_order.append(ev.stream_id)
            if len(self._finished_order) > _FINISHED_MEMORY:
                self._finished_recent.discard(self._finished_order.popleft())
            if self._track_finished:
                # events of this stream may still wait in _events: the layer forgets its
                # reader (and manual credit) in _take_finished_streams, after delivering them
                self._finished_streams.append(ev.stream_id)
            else:
                self._manual_credit.discard(ev.stream_id)
        elif t == _native.EV_CLOSED:
            self._on_closed(ev)
        elif t == _native.EV_KEYLOG:
            self._endpoint._write_keylog(ev.data)
        elif t == _native.EV_STATS:
            cb = self._stats_callbacks.pop(ev.code, None)
            if cb is not None:
                raw = ffi.cast("aq_stats *", ffi.from_buffer(ev.data))
                self._endpoint._call_user(cb, QuicConnectionStats(
                    smoothed_rtt=raw.smoothed_rtt_ns / 1e9, min_rtt=raw.min_rtt_ns / 1e9,
                    latest_rtt=raw.latest_rtt_ns / 1e9, rttvar=raw.rttvar_ns / 1e9,
                    cwnd=raw.cwnd, ssthresh=raw.ssthresh, bytes_in_flight=raw.bytes_in_flight,
                    max_datagram_size=raw.max_udp_payload, packets_sent=raw.pkts_sent,
                    packets_received=raw.pkts_recv, bytes_sent=raw.bytes_sent,
                    bytes_received=raw.bytes_recv, datagrams_dropped=raw.datagrams_dropped),
                    self)

    def _on_closed(self, ev: _native.NativeEvent) -> None:
        self._closed = True
        self._close_flags = ev.flags
        reason = ev.data.decode("utf-8", "replace")
        # aioquic's convention: None for application closes and for closes no frame caused
        # (idle timeout, handshake timeout, refused, stateless reset)
        no_frame = (_native.CLOSE_APP | _native.CLOSE_IDLE | _native.CLOSE_HANDSHAKE_TIMEOUT
                    | _native.CLOSE_REFUSED | _native.CLOSE_RESET)
        frame_type = None if ev.flags & no_frame else ev.code2
        self._close_event = events.ConnectionTerminated(
            error_code=ev.code, frame_type=frame_type, reason_phrase=reason)
        self._events.append(self._close_event)
        self._pending_close = None
        for st in self._tx.values():
            st.spill.clear()
            self._wake(st)
            if st.buf is not None:
                lib.aq_txbuf_release(st.buf)
                st.buf = None
        self._tx.clear()

    def _take_finished_streams(self) -> list[int]:
        """Streams the engine has closed (both directions done) since the last call, recorded
        once a layer sets ``_track_finished``.  Call it after draining :meth:`next_event`, so
        that their last events were delivered."""
        done, self._finished_streams = self._finished_streams, []
        for stream_id in done:
            self._manual_credit.discard(stream_id)
        return done

    def _kick_all(self) -> None:
        ptr = self._endpoint.ptr
        for stream_id, st in list(self._tx.items()):
            if st.buf is not None and not st.reset:
                lib.aq_stream_write(ptr, self._handle, stream_id, st.buf, ffi.NULL, 0, 0)
                if st.spill:
                    self._flush_spill(stream_id, st)

    def _close_message(self) -> str:
        """A human-readable reason for a connection that closed before/after the handshake."""
        ev = self._close_event
        if ev is None:
            return "connection closed"
        flags = self._close_flags
        if flags & _native.CLOSE_REFUSED:
            return f"connection refused: {ev.reason_phrase}"
        if flags & _native.CLOSE_HANDSHAKE_TIMEOUT:
            return f"handshake timed out after {self.configuration.handshake_timeout:g} s"
        if flags & _native.CLOSE_IDLE:
            return "idle timeout"
        who = "locally" if flags & _native.CLOSE_LOCAL else "by the peer"
        kind = "application" if flags & _native.CLOSE_APP else "transport"
        detail = f": {ev.reason_phrase}" if ev.reason_phrase else ""
        if not flags & _native.CLOSE_APP and 0x100 <= ev.error_code <= 0x1ff:
            alert = ev.error_code - 0x100
            name = {40: "handshake_failure", 42: "bad_certificate", 46: "certificate_unknown",
                    48: "unknown_ca", 80: "internal_error",
                    120: "no_application_protocol"}.get(alert, f"alert {alert}")
            if alert == 120:
                name += " (no ALPN protocol in common)"
            return f"TLS handshake failed {who}: {name}{detail}"
        return f"connection closed {who} ({kind} error {ev.error_code:#x}){detail}"


class QuicEndpoint:
    """One native endpoint (socket + network thread) and the connections it carries.

    ``on_accept(quic)`` is called for every connection a server accepts (after its
    handshake); ``on_events(quic)`` after native events for ``quic`` were queued.
    """

    def __init__(self, configuration: QuicConfiguration, host: str, port: int) -> None:
        self.configuration = configuration
        self._keylog: Optional[IO[str]] = None
        self._own_keylog = False
        log = configuration.secrets_log_file
        if isinstance(log, str):
            self._keylog = open(log, "a", encoding="ascii")  # noqa: SIM115 - closed in close()
            self._own_keylog = True
        elif log is not None:
            self._keylog = log
        try:
            self._native = _native.Endpoint(native_config(configuration), host, port)
        except Exception:
            if self._own_keylog and self._keylog is not None:
                self._keylog.close()
            raise
        self.connections: dict[int, QuicConnection] = {}
        self.on_accept: Optional[Callable[[QuicConnection], None]] = None
        self.on_events: Optional[Callable[[QuicConnection], None]] = None
        self.on_error: Optional[Callable[[BaseException, QuicConnection], None]] = None
        self._deferred: deque[Callable[[], int]] = deque()
        self._closed = False

    @property
    def ptr(self) -> Any:
        """The native endpoint pointer."""
        return self._native.ptr

    @property
    def fileno(self) -> int:
        """File descriptor that becomes readable when :meth:`process` has work."""
        return self._native.fileno

    @property
    def local_port(self) -> int:
        """The bound UDP port."""
        return self._native.local_port

    def connect(self, host: str, port: int, server_name: Optional[str]) -> QuicConnection:
        """Create the client connection to ``host`` (numeric) ``port`` and start the thread."""
        handle = self._native.connect(host, port, server_name)
        quic = QuicConnection(configuration=self.configuration, endpoint=self, handle=handle)
        quic.peer_address = (host, port)
        self.connections[handle] = quic
        self._native.start()
        return quic

    def start(self) -> None:
        """Start the network thread (servers)."""
        self._native.start()

    def _defer(self, fn: Callable[[], int]) -> None:
        self._deferred.append(fn)

    def _write_keylog(self, line: bytes) -> None:
        if self._keylog is not None:
            self._keylog.write(line.decode("ascii", "replace") + "\n")
            self._keylog.flush()

    def process(self) -> None:
        """Drain the native event ring and dispatch every event (call when :attr:`fileno`
        is readable)."""
        if self._closed:
            return
        touched: dict[int, QuicConnection] = {}
        conns = self.connections
        for ev in self._native.poll():
            quic = conns.get(ev.conn)
            if quic is None:
                if ev.type == _native.EV_ACCEPTED:
                    quic = QuicConnection(configuration=self.configuration, endpoint=self,
                                          handle=ev.conn)
                    host, _, port = ev.data.decode().rpartition(" ")
                    quic.peer_address = (host, int(port or 0))
                    conns[ev.conn] = quic
                    if self.on_accept is not None:
                        self._call(self.on_accept, quic)
                    continue
                if ev.type == _native.EV_CMD_SPACE:
                    self._on_cmd_space()
                elif ev.type == _native.EV_KEYLOG:
                    self._write_keylog(ev.data)
                continue
            quic._on_native(ev)
            touched[ev.conn] = quic
            if ev.type == _native.EV_CLOSED:
                del conns[ev.conn]
        for quic in touched.values():
            for stream_id in list(quic._credit):
                quic._flush_credit(stream_id)
            if self.on_events is not None:
                self._call(self.on_events, quic)

    def _call(self, hook: Callable[[QuicConnection], None], quic: QuicConnection) -> None:
        """Run an application hook for ``quic`` (see :meth:`_call_user`)."""
        self._call_user(hook, quic, quic)

    def _call_user(self, fn: Callable[[Any], None], arg: Any, quic: QuicConnection) -> None:
        """Run application code; its exception is reported (``on_error``, else logged) and
        never stops the other events and connections."""
        try:
            fn(arg)
        except Exception as exc:  # noqa: BLE001 - isolate one connection's bug
            if self.on_error is not None:
                self.on_error(exc, quic)
            else:
                _log.exception("unhandled exception in a QUIC event handler")

    def _on_cmd_space(self) -> None:
        while self._deferred:
            if self._deferred[0]() == -1:
                return
            self._deferred.popleft()
        for quic in list(self.connections.values()):
            quic._kick_all()

    def close(self) -> None:
        """Stop the network thread and free the native endpoint (idempotent).  Connections
        still open get an immediate CONNECTION_CLOSE ("endpoint closed") without waiting for
        unacknowledged data: close them first for a graceful shutdown."""
        if self._closed:
            return
        self._closed = True
        for quic in self.connections.values():
            for st in quic._tx.values():
                if st.buf is not None:
                    lib.aq_txbuf_release(st.buf)
                    st.buf = None
        self._native.close()
        if self._own_keylog and self._keylog is not None:
            self._keylog.close()
