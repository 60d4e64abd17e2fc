"""aiopquic 0.6.1's data-plane and introspection calls on :class:`QuicConnection`.

Programs written for the picoquic-based aiopquic 0.6.1 (aiomoqt first of all) drive their
send loops with ``send_stream_data_drained``, read ring usage, wait on per-stream drain events
and read path statistics.  This mixin gives :class:`~aiopquic.quic.connection.QuicConnection`
those names, mapped onto the one send path underneath (the per-stream native ring plus the
Python-side queue and its drain waiters), so there is no second implementation:

- "ring used" is what :meth:`QuicConnection.get_stream_buffered_bytes` counts: bytes written
  and not yet acknowledged (native ring plus Python queue);
- a drain event is set by the same wake-ups ``writer.drain()`` waits for (the Python queue
  emptied, or the native ring drained below half, reported by the network thread); when
  neither can fire because the ring is already below half full, a timer re-reads the ring
  (every 1 ms, backing off to 8 ms) and sets the event once bytes were acknowledged -- a
  bounded poll, never a busy loop;
- statistics come from the network thread's snapshots (:meth:`QuicConnection.request_stats`):
  each call returns the latest one and asks for a fresh one.

The asyncio objects (events, timers) are created only when a 0.6.1-style caller asks for them,
so the QUIC layer stays usable from anyio and trio.  docs/migrating.md lists every difference
that remains.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, Callable, Optional

from aiopquic._native import lib

if TYPE_CHECKING:
    from aiopquic.quic import events
    from aiopquic.quic.configuration import QuicConfiguration
    from aiopquic.quic.connection import QuicConnectionStats, QuicEndpoint, _TxStream

__all__ = ["PeerAddress"]

_POLL_FIRST = 0.001  # seconds: first re-read of a ring that no native event will report
_POLL_MAX = 0.008


class PeerAddress(tuple[str, int]):
    """A ``(host, port)`` tuple that can also be called.

    aioquic-shaped code reads ``quic.peer_address`` as a value; aiopquic 0.6.1 code calls
    ``quic.peer_address()``.  Both get ``(host, port)``."""

    def __call__(self) -> tuple[str, int]:
        """The address as a plain tuple (0.6.1's ``peer_address()``)."""
        return (self[0], self[1])

    __slots__ = ()


class Compat061Connection:
    """The 0.6.1 face of :class:`~aiopquic.quic.connection.QuicConnection` (a mixin; see the
    module docstring).  Every method is called from the event loop's thread."""

    __slots__ = ("_seed_drain_events", "_seed_polls", "_seed_armed", "_seed_dgram_event",
                 "_seed_ring_event", "_seed_stats", "_seed_stats_pending", "_seed_local",
                 "_path_local", "_seed_peer", "_seed_dgram_deferred", "wrong_direction_dropped")

    if TYPE_CHECKING:  # what the mixin uses of QuicConnection
        configuration: QuicConfiguration
        alpn_protocol: Optional[str]
        _tx: dict[int, _TxStream]
        _closed: bool
        _close_event: Optional[events.ConnectionTerminated]
        _endpoint: QuicEndpoint
        _handshake_done: bool
        _peer_max_datagram: int

        def get_stream_buffered_bytes(self, stream_id: int) -> int: ...
        def tx_data_ring_used(self, stream_id: int) -> int: ...
        def stream_send_pending(self, stream_id: int) -> bool: ...
        def _write_now(self, stream_id: int, data: Any,
                       end_stream: bool) -> Optional[_TxStream]: ...
        def _add_drain_waiter(self, stream_id: int, callback: Callable[[], None]) -> bool: ...
        def _close_message(self) -> str: ...
        def request_stats(self, callback: Callable[[QuicConnectionStats], None]) -> None: ...
        def send_stream_data(self, stream_id: int, data: Any,
                             end_stream: bool = False) -> None: ...

    # ---------------------------------------------------------------- state

    def _seed_init(self) -> None:
        self._seed_drain_events: dict[int, asyncio.Event] = {}
        self._seed_polls: dict[int, asyncio.TimerHandle] = {}
        self._seed_armed: dict[int, None] = {}  # a set (an empty dict is 150 B less)
        self._seed_dgram_event: Optional[asyncio.Event] = None
        self._seed_ring_event: Optional[asyncio.Event] = None
        self._seed_stats: Optional[QuicConnectionStats] = None
        self._seed_stats_pending = False
        self._seed_local: Optional[tuple[str, int]] = None
        # the local address of the connection's path, reported by the engine (EV_CONN_INFO)
        self._path_local: Optional[tuple[str, int]] = None
        self._seed_peer: Optional[PeerAddress] = None
        self._seed_dgram_deferred = 0  # bytes of datagrams waiting for command-ring room
        self.wrong_direction_dropped = 0
        """``reset_stream`` / ``stop_stream`` calls in a direction the stream does not have
        (dropped, as 0.6.1 did; see docs/migrating.md)."""

    @property
    def peer_address(self) -> Optional[PeerAddress]:
        """The peer's ``(host, port)``; also callable, as 0.6.1's ``peer_address()``."""
        return self._seed_peer

    @peer_address.setter
    def peer_address(self, value: Optional[tuple[str, int]]) -> None:
        self._seed_peer = None if value is None else PeerAddress((str(value[0]),
                                                                  int(value[1])))

    # ---------------------------------------------------------------- hooks (connection.py)

    def _seed_stream_done(self, stream_id: int) -> None:
        """The engine forgot ``stream_id``: wake and drop its drain event."""
        handle = self._seed_polls.pop(stream_id, None)
        if handle is not None:
            handle.cancel()
        self._seed_armed.pop(stream_id, None)
        ev = self._seed_drain_events.pop(stream_id, None)
        if ev is not None:
            ev.set()

    def _seed_on_closed(self) -> None:
        """The connection ended: every parked 0.6.1-style waiter wakes (and then sees the
        close), and nothing stays armed."""
        for handle in self._seed_polls.values():
            handle.cancel()
        self._seed_polls.clear()
        self._seed_armed.clear()
        for ev in self._seed_drain_events.values():
            ev.set()
        for maybe in (self._seed_dgram_event, self._seed_ring_event):
            if maybe is not None:
                maybe.set()

    def _seed_cmd_space(self) -> None:
        """The command ring has room again."""
        if self._seed_ring_event is not None:
            self._seed_ring_event.set()
        if self._seed_dgram_event is not None:
            self._seed_dgram_event.set()

    # ---------------------------------------------------------------- stream backpressure

    def tx_sent_bytes(self, stream_id: int) -> int:
        """Bytes of ``stream_id`` that have left the send buffer for good (acknowledged by the
        peer); monotonic while the stream lives, 0 for an unknown or finished stream.

        0.6.1 counted bytes taken into packets; this counts acknowledged ones, a lower bound
        of that: an offset below the value has certainly left."""
        st = self._tx.get(stream_id)
        if st is None:
            return 0
        return max(0, st.written - self.get_stream_buffered_bytes(stream_id))

    def get_tx_data_drain_event(self, stream_id: int) -> asyncio.Event:
        """The :class:`asyncio.Event` set when ``stream_id``'s send buffer drains after
        :meth:`set_tx_data_drain_pending`, when a write through
        :meth:`send_stream_data_drained` could proceed, and when the stream or the
        connection ends (so a waiter never parks forever).  Created unset on first use."""
        ev = self._seed_drain_events.get(stream_id)
        if ev is None:
            ev = asyncio.Event()
            if self._closed:
                ev.set()
            else:
                self._seed_drain_events[stream_id] = ev
        return ev

    def set_tx_data_drain_pending(self, stream_id: int) -> None:
        """Ask for :meth:`get_tx_data_drain_event` to be set at the next drain progress of
        ``stream_id`` (bytes acknowledged, or the Python queue flushed).  No-op for a stream
        with nothing buffered; on a closed connection the event is set at once.

        Use the clear-arm-recheck-wait pattern::

            ev = quic.get_tx_data_drain_event(sid)
            while quic.tx_data_ring_used(sid) > low:
                ev.clear()
                quic.set_tx_data_drain_pending(sid)
                if quic.tx_data_ring_used(sid) <= low:
                    quic.clear_tx_data_drain_pending(sid)
                    break
                await ev.wait()
        """
        if self._closed:
            self.get_tx_data_drain_event(stream_id).set()
            return
        st = self._tx.get(stream_id)
        if st is None or st.buf is None or stream_id in self._seed_armed:
            return
        used = self.get_stream_buffered_bytes(stream_id)
        if used == 0:
            return
        self.get_tx_data_drain_event(stream_id)
        self._seed_armed[stream_id] = None

        def fire() -> None:
            if stream_id in self._seed_armed:
                self._seed_armed.pop(stream_id, None)
                handle = self._seed_polls.pop(stream_id, None)
                if handle is not None:
                    handle.cancel()
                ev = self._seed_drain_events.get(stream_id)
                if ev is not None:
                    ev.set()

        if st.spill:
            st.waiters.append(fire)  # woken when the Python queue empties
        elif lib.aq_txbuf_want_writable(st.buf) == 0:
            st.waiters.append(fire)  # the network thread reports the ring below half
        else:
            # already below half: nothing will report progress, so re-read the ring
            loop = asyncio.get_running_loop()

            def poll(delay: float) -> None:
                self._seed_polls.pop(stream_id, None)
                if stream_id not in self._seed_armed:
                    return
                if self._closed or self.get_stream_buffered_bytes(stream_id) < used:
                    fire()
                    return
                nxt = min(delay * 2, _POLL_MAX)
                self._seed_polls[stream_id] = loop.call_later(nxt, poll, nxt)

            self._seed_polls[stream_id] = loop.call_later(_POLL_FIRST, poll, _POLL_FIRST)

    def clear_tx_data_drain_pending(self, stream_id: int) -> None:
        """Withdraw :meth:`set_tx_data_drain_pending` (the caller saw the buffer drain
        between arming and waiting).  No-op when nothing is armed."""
        self._seed_armed.pop(stream_id, None)
        handle = self._seed_polls.pop(stream_id, None)
        if handle is not None:
            handle.cancel()

    def tx_event_ring_fill(self) -> float:
        """How full the command ring to the network thread is, as 0.6.1's TX event ring
        fill: 1.0 while commands wait for room (the ring is full), else 0.0."""
        return 1.0 if self._endpoint._deferred else 0.0

    @property
    def tx_event_ring_drain_event(self) -> asyncio.Event:
        """Set when the command ring to the network thread has room (see
        :meth:`tx_event_ring_fill`)."""
        if self._seed_ring_event is None:
            self._seed_ring_event = asyncio.Event()
            if not self._endpoint._deferred or self._closed:
                self._seed_ring_event.set()
        return self._seed_ring_event

    def _seed_closed_error(self) -> ConnectionError:
        from aiopquic.quic.connection import QuicConnectionError

        ev = self._close_event
        return QuicConnectionError(f"connection closed: {self._close_message()}",
                                   ev.error_code if ev else 0, ev.reason_phrase if ev else "")

    async def _seed_wait_queue(self, stream_id: int) -> None:
        """Wait until ``stream_id`` has nothing in the Python-side queue."""
        while self.stream_send_pending(stream_id):
            fut = asyncio.get_running_loop().create_future()

            def wake(fut: asyncio.Future[None] = fut) -> None:
                if not fut.done():
                    fut.set_result(None)

            if not self._add_drain_waiter(stream_id, wake):
                break
            await fut

    async def send_stream_data_drained(self, stream_id: int, data: Any,
                                       end_stream: bool = False, *,
                                       soft_yield_at: float = 0.5,
                                       hard_wait_at: float = 0.9) -> None:
        """Send ``data`` (and FIN if ``end_stream``) on ``stream_id`` with backpressure:
        aiopquic 0.6.1's recommended sustained-send call.

        Waits while earlier bytes of the stream still queue in Python and while the command
        ring is full (:meth:`tx_event_ring_fill` above ``hard_wait_at``), writes, then waits
        until this write has entirely entered the stream's native ring.  So a producer looping
        on it holds at most one ring plus one write per stream, and never spins: every wait
        is on a wake-up from the network thread.  It yields to the event loop on a stream's
        first write and when the command ring is over ``soft_yield_at`` full (as 0.6.1 did).

        Raises :class:`~aiopquic.quic.connection.QuicConnectionError` (a
        :class:`ConnectionError`) when the connection is closed before or while it waits
        (0.6.1 returned silently), :class:`ConnectionResetError` when the peer sent
        STOP_SENDING or the stream was reset locally, :class:`ValueError` for thresholds
        outside [0, 1], and what :meth:`send_stream_data` raises for bad arguments or a
        stream past its FIN."""
        if soft_yield_at != 0.5 or hard_wait_at != 0.9 or type(soft_yield_at) is bool \
                or type(hard_wait_at) is bool:
            for name, value in (("soft_yield_at", soft_yield_at),
                                ("hard_wait_at", hard_wait_at)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not 0.0 <= value <= 1.0:
                    raise ValueError(f"{name} must be a number in [0, 1]: got {value!r}")
        st = self._write_now(stream_id, data, end_stream)
        if st is not None:
            # the common case (an open stream, nothing queued anywhere): written; wait only
            # if part of it had to queue in Python
            if st.spill:
                await self._seed_wait_queue(stream_id)
                if self._closed:
                    raise self._seed_closed_error()
            elif self._endpoint._deferred:
                await asyncio.sleep(0)  # the command ring filled: let the loop run
            return
        await self._seed_wait_queue(stream_id)
        while self.tx_event_ring_fill() > hard_wait_at and not self._closed:
            ev = self.tx_event_ring_drain_event
            ev.clear()
            if self.tx_event_ring_fill() <= hard_wait_at:
                break
            await ev.wait()
        if self._closed:
            raise self._seed_closed_error()
        st = self._tx.get(stream_id)
        if st is not None and (st.stopped is not None or st.reset):
            why = (f"the peer sent STOP_SENDING (code {st.stopped})"
                   if st.stopped is not None else "it was reset")
            raise ConnectionResetError(f"cannot send on stream {stream_id}: {why}")
        self.send_stream_data(stream_id, data, end_stream)
        if self.stream_send_pending(stream_id):
            await self._seed_wait_queue(stream_id)
            if self._closed:
                raise self._seed_closed_error()
        elif st is None or self.tx_event_ring_fill() > soft_yield_at:
            await asyncio.sleep(0)  # a new stream, or a busy ring: let the loop run

    # ---------------------------------------------------------------- datagrams

    def get_datagram_tx_drain_event(self) -> asyncio.Event:
        """Set while :meth:`send_datagram_frame` accepts datagrams; cleared when it returned
        0 (queue full) and set again once there is room, or when the connection ends."""
        if self._seed_dgram_event is None:
            self._seed_dgram_event = asyncio.Event()
            self._seed_dgram_event.set()
        return self._seed_dgram_event

    def _seed_dgram_full(self) -> None:
        self.get_datagram_tx_drain_event().clear()

    def _seed_dgram_space(self) -> None:
        """Datagrams drained (AQ_EV_DGRAM_SPACE): send_datagram_frame has room again."""
        if self._seed_dgram_event is not None:
            self._seed_dgram_event.set()

    # ---------------------------------------------------------------- introspection

    def _negotiated_alpn(self, cnx_ptr: int = 0) -> Optional[str]:
        """The ALPN protocol negotiated (0.6.1's private accessor; ``cnx_ptr`` is ignored);
        before the handshake, the configured one when exactly one is configured."""
        if self.alpn_protocol:
            return self.alpn_protocol
        alpns = self.configuration.alpn_protocols
        return alpns[0] if alpns and len(alpns) == 1 else None

    def local_address(self) -> Optional[tuple[str, int]]:
        """This side's ``(host, port)`` for the connection: the local address of its path
        as the engine reports it once the handshake completes (a server bound to a
        wildcard address: the address the client sent to; IPv4-mapped on a dual-stack
        ``::`` socket), else (a client's wildcard socket, or before the handshake) the
        endpoint's port and the local address the kernel routes to the peer from.  None
        when unknown."""
        if self._seed_local is not None:
            return self._seed_local
        peer = self._seed_peer
        if peer is None or self._endpoint._closed:
            return None
        if self._path_local is not None:
            self._seed_local = self._path_local
            return self._seed_local
        port = self._endpoint.local_port
        try:
            fam = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as probe:
                probe.connect((peer[0], peer[1] or 9))
                host = str(probe.getsockname()[0])
        except OSError:
            return None
        self._seed_local = (host, port)
        return self._seed_local

    def _seed_snapshot(self) -> Optional[QuicConnectionStats]:
        """The latest statistics snapshot, asking the network thread for a fresh one."""
        if not self._closed and not self._seed_stats_pending:
            self._seed_stats_pending = True

            def got(stats: QuicConnectionStats) -> None:
                self._seed_stats_pending = False
                self._seed_stats = stats

            self.request_stats(got)
        return self._seed_stats

    def path_quality(self) -> dict[str, int]:
        """0.6.1's path statistics: ``cwin``, ``bytes_in_transit``, ``rtt``,
        ``rtt_min``, ``rtt_sample``, ``rtt_variant`` (microseconds), ``sent`` (packets),
        ``bytes_sent``, ``bytes_received``, ``max_udp_payload``.  As of the latest snapshot
        from the network thread (each call asks for a fresh one); ``{}`` before the first or
        once the connection is closed.  See :meth:`request_stats` for more."""
        if self._closed:
            return {}
        s = self._seed_snapshot()
        if s is None:
            return {}
        return {
            "cwin": s.cwnd, "bytes_in_transit": s.bytes_in_flight,
            "rtt": int(s.smoothed_rtt * 1e6), "rtt_min": int(s.min_rtt * 1e6),
            "rtt_sample": int(s.latest_rtt * 1e6), "rtt_variant": int(s.rttvar * 1e6),
            "sent": s.packets_sent, "bytes_sent": s.bytes_sent,
            "bytes_received": s.bytes_received, "max_udp_payload": s.max_datagram_size,
        }

    @property
    def bytes_sent(self) -> int:
        """UDP payload bytes this connection sent, as of the latest snapshot (0 before)."""
        s = self._seed_snapshot()
        return s.bytes_sent if s is not None else 0

    @property
    def bytes_received(self) -> int:
        """UDP payload bytes this connection received, as of the latest snapshot."""
        s = self._seed_snapshot()
        return s.bytes_received if s is not None else 0

    @property
    def local_transport_parameters(self) -> Optional[dict[str, Any]]:
        """The transport parameters this side sent (after the handshake; before it, from its
        configuration), as a dict with 0.6.1's keys (``max_idle_timeout`` in ms,
        ``max_ack_delay`` in us); None once closed."""
        if self._closed:
            return None
        info = self._conn_info  # type: ignore[attr-defined]
        if info is not None:
            return dict(info[0])
        cfg = self.configuration
        return {
            "initial_max_data": int(cfg.max_data),
            "initial_max_stream_data_bidi_local": int(cfg.max_stream_data),
            "initial_max_stream_data_bidi_remote": int(cfg.max_stream_data),
            "initial_max_stream_data_uni": int(cfg.max_stream_data),
            "initial_max_streams_bidi": int(cfg.max_streams_bidi),
            "initial_max_streams_uni": int(cfg.max_streams_uni),
            "max_idle_timeout": int(cfg.idle_timeout * 1000),
            "max_datagram_frame_size": int(cfg.max_datagram_frame_size or 0),
        }

    @property
    def peer_transport_parameters(self) -> Optional[dict[str, Any]]:
        """The peer's transport parameters as the handshake settled them, with 0.6.1's keys
        (``initial_max_data``, ..., ``max_idle_timeout`` in ms, ``max_ack_delay`` in us,
        ``max_datagram_frame_size``); None before the handshake or once closed."""
        if self._closed or not self._handshake_done:
            return None
        info = self._conn_info  # type: ignore[attr-defined]
        if info is not None:
            return dict(info[1])
        return {"max_datagram_frame_size": int(self._peer_max_datagram)}

    @property
    def connection_ids(self) -> Optional[dict[str, bytes]]:
        """0.6.1's connection-id report: ``{'local', 'remote', 'initial'}`` as bytes (our
        first source connection ID, the peer's current one as we address it, the client's
        first destination connection ID), as of the handshake; None before it or once
        closed."""
        info = self._conn_info  # type: ignore[attr-defined]
        if self._closed or info is None:
            return None
        return dict(info[2])

    def get_stream_buf_stats(self,
                             stream_id: int) -> Optional[tuple[int, int, int, int]]:
        """``(pushed, popped, push_hash, pop_hash)`` for ``stream_id``'s send buffer:
        bytes written, bytes that left it for good (acknowledged), and two zero hashes (the
        FNV debugging hashes of 0.6.1 are not kept).  None for a stream with no send
        buffer."""
        st = self._tx.get(stream_id)
        if st is None:
            return None
        return (st.written, self.tx_sent_bytes(stream_id), 0, 0)
