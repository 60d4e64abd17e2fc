"""aiopquic 0.6.1's low-level ``TransportContext``, over this package's :class:`QuicEndpoint`.

In 0.6.1 a ``TransportContext`` was one picoquic context on its own thread with event rings
and an eventfd.  Here it is an adapter: :meth:`TransportContext.start` turns its keyword
arguments into a :class:`~aiopquic.quic.configuration.QuicConfiguration`; a server gets one
:class:`~aiopquic.quic.connection.QuicEndpoint` bound at once, a client one per
:meth:`~TransportContext.create_client_connection`.  :meth:`~TransportContext.drain_rx`
returns 0.6.1's event tuples ``(event_type, stream_id, data, is_fin, error_code, cnx_ptr,
stream_ctx_ptr, sc_ptr)`` with 0.6.1's event codes; ``cnx_ptr`` is the connection's handle
(an opaque non-zero int), and the two stream context pointers are always 0 (there are none).

Usage, as 0.6.1's README shows it::

    server = TransportContext()
    server.start(port=4433, cert_file="cert.pem", key_file="key.pem", alpn="moq-00",
                 is_client=False)
    client = TransportContext()
    client.start(port=0, alpn="moq-00", is_client=True)
    client.create_client_connection("127.0.0.1", 4433, sni="localhost", alpn="moq-00")

Every call comes from one thread (the event loop's).  docs/migrating.md lists the 0.6.1
arguments refused here and why.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import sys
import weakref
from typing import IO, Any, Callable, Optional, Union

from aiopquic.quic import events
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection, QuicEndpoint

__all__ = [
    "DEFAULT_KEY_EXCHANGE_GROUPS", "KEX_MLKEM1024", "KEX_SECP256R1", "KEX_SECP256R1MLKEM768",
    "KEX_X25519", "KEX_X25519MLKEM768", "TransportContext", "dump_all_counters",
]

# TLS key-exchange group ids (IANA), as 0.6.1 exported them
KEX_X25519 = 29
KEX_SECP256R1 = 23
KEX_X25519MLKEM768 = 4588
KEX_SECP256R1MLKEM768 = 4587
KEX_MLKEM1024 = 514
DEFAULT_KEY_EXCHANGE_GROUPS = (KEX_X25519, KEX_SECP256R1)

# 0.6.1's event codes (drain_rx tuples)
EVT_STREAM_DATA = 0
EVT_STREAM_FIN = 1
EVT_STREAM_RESET = 2
EVT_STOP_SENDING = 3
EVT_CLOSE = 4
EVT_APP_CLOSE = 5
EVT_READY = 6
EVT_ALMOST_READY = 7
EVT_DATAGRAM = 8
EVT_STREAM_TX_DRAINED = 15
EVT_STREAM_DESTROY = 17

# 0.6.1's command codes (push_tx_event)
TX_STREAM_DATA = 128
TX_STREAM_FIN = 129
TX_CLOSE = 131
TX_STREAM_RESET = 132
TX_STOP_SENDING = 133

_TX_RING_CAPACITY = 2048  # what 0.6.1 reported as its TX event ring size
_REGISTRY: weakref.WeakSet[TransportContext] = weakref.WeakSet()

RawEvent = tuple[int, int, Optional[memoryview], bool, int, int, int, int]


def _refuse(name: str, value: object, why: str) -> None:
    raise ValueError(f"TransportContext.start({name}={value!r}) is not supported: {why}")


def _bind_host(host: str) -> str:
    return "::" if ipaddress.ip_address(host).version == 6 else "0.0.0.0"


class TransportContext:
    """aiopquic 0.6.1's transport handle (see the module docstring).

    The ring-size arguments are accepted for compatibility: ``ring_capacity`` /
    ``rx_data_ring_cap`` size the native event ring; the others have no equivalent."""

    def __init__(self, ring_capacity: int = 0, tx_ring_cap: int = 0,
                 rx_data_ring_cap: int = 0, tx_event_ring_low_water_pct: int = 0) -> None:
        self._ring = int(rx_data_ring_cap or ring_capacity or 0)
        self._configuration: Optional[QuicConfiguration] = None
        self._port = 0
        self._host: Optional[str] = None
        self._endpoints: list[QuicEndpoint] = []
        # endpoints of connections made beside this context for its sessions (a 0.6.1-style
        # WebTransport client): counted in `counters`, never pumped by drain_rx
        self._observed: list[QuicEndpoint] = []
        self._conns: dict[int, QuicConnection] = {}
        self._touched: list[QuicConnection] = []
        self._pending: list[RawEvent] = []
        self._started = False
        self._drain_event: Any = None
        self._next_id = 1
        self._ids: dict[int, int] = {}  # id(QuicConnection) -> cnx id given out
        _REGISTRY.add(self)

    # ---------------------------------------------------------------- lifecycle

    def start(self, port: int = 0, cert_file: Optional[str] = None,
              key_file: Optional[str] = None, alpn: Optional[str] = None,
              is_client: bool = True, idle_timeout_ms: int = 30000,
              max_datagram_frame_size: int = 0, wt_path: Optional[str] = None,
              debug_log: Optional[str] = None, keylog_filename: Optional[str] = None,
              rx_data_ring_cap: int = 0, congestion_control_algorithm: Optional[str] = None,
              initial_max_data: int = 0, initial_max_streams_uni: int = 0,
              initial_max_streams_bidi: int = 0, keep_alive_interval_ms: int = 0,
              socket_buffer_size: int = 0, qlog_dir: Optional[str] = None,
              wt_supported_protocols: Optional[str] = None,
              alpn_list: Optional[list[str]] = None, dual: bool = False,
              verify_peer: bool = True, ca_file: Optional[str] = None,
              key_exchange_groups: Any = None, max_connections: int = 256,
              retry: bool = False, cipher_suite: int = 0, key_update_interval: int = 0,
              ticket_file: Optional[str] = None, web_folder: Optional[str] = None,
              ip_family: int = -1, pmtud_policy: Optional[str] = None,
              host: Optional[str] = None) -> None:
        """Build the configuration and, for a server, bind ``port`` and start listening.

        ``host`` (an addition) is the server's bind address: by default ``"::"`` (every
        interface, IPv4 too), as 0.6.1 listened on the wildcard.  Raises
        :class:`RuntimeError` when already started; :class:`ValueError` for arguments this
        engine cannot honour (``wt_path``/``dual``/``web_folder``: use
        :func:`aiopquic.asyncio.webtransport.serve_webtransport` or
        :func:`aiopquic.asyncio.dispatch.serve_dispatch`; ``debug_log``; ``retry``;
        ``cipher_suite``, ``key_update_interval`` or
        ``key_exchange_groups`` other than the defaults; ``qlog_dir``) and for what
        :meth:`QuicConfiguration.validate` refuses; :class:`OSError` when the port cannot
        be bound or the certificate files are rejected.  A client's ``ticket_file`` is
        ``QuicConfiguration.session_ticket_file``: connections resume from the newest
        ticket in it for their server name and store new tickets there."""
        if self._started:
            raise RuntimeError("TransportContext already started")
        for name, value in (("wt_path", wt_path), ("web_folder", web_folder),
                            ("wt_supported_protocols", wt_supported_protocols)):
            if value:
                _refuse(name, value, "WebTransport servers are built with serve_webtransport() "
                        "or serve_dispatch()")
        if dual:
            _refuse("dual", dual, "use aiopquic.asyncio.dispatch.serve_dispatch()")
        if debug_log:
            _refuse("debug_log", debug_log, "picoquic's text log does not exist here "
                    "(keylog_filename gives key logs)")
        if retry:
            _refuse("retry", retry, "Retry is not supported yet")
        alpns = list(alpn_list) if alpn_list else ([alpn] if alpn else None)
        cfg = QuicConfiguration(
            is_client=bool(is_client), alpn_protocols=alpns,
            idle_timeout=idle_timeout_ms / 1000.0,
            max_datagram_frame_size=int(max_datagram_frame_size) or None,
            keep_alive_interval=(keep_alive_interval_ms / 1000.0) or None,
            socket_buffer_size=int(socket_buffer_size) or None,
            qlog_dir=qlog_dir, max_connections=int(max_connections) or None,
            cipher_suite=cipher_suite or None, key_update_interval=key_update_interval or None,
            session_ticket_file=ticket_file,
            key_exchange_groups=(None if key_exchange_groups in
                                 (None, DEFAULT_KEY_EXCHANGE_GROUPS)
                                 else key_exchange_groups),
            ip_family=None if ip_family == -1 else ip_family,
            pmtud=pmtud_policy, event_ring_capacity=self._ring or None,
        )
        if congestion_control_algorithm:
            cfg.congestion_control_algorithm = congestion_control_algorithm
        if initial_max_data:
            cfg.max_data = int(initial_max_data)
        if rx_data_ring_cap:
            cfg.max_stream_data = int(rx_data_ring_cap)
        if initial_max_streams_uni:
            cfg.max_streams_uni = int(initial_max_streams_uni)
        if initial_max_streams_bidi:
            cfg.max_streams_bidi = int(initial_max_streams_bidi)
        keylog = keylog_filename or os.environ.get("SSLKEYLOGFILE")
        if keylog:
            cfg.secrets_log_file = keylog
        if is_client:
            cfg.verify_mode = ssl.CERT_REQUIRED if verify_peer else ssl.CERT_NONE
            if ca_file:
                cfg.cafile = ca_file
        elif cert_file:
            cfg.load_cert_chain(cert_file, key_file)
        cfg.validate()
        self._configuration = cfg
        self._port = int(port)
        self._host = host
        if not is_client:
            if not cert_file:
                raise ValueError("TransportContext.start(is_client=False) needs cert_file "
                                 "and key_file")
            ep = QuicEndpoint(cfg, host or "::", self._port)
            self._watch(ep)
            ep.start()
        self._started = True

    def _watch(self, ep: QuicEndpoint) -> None:
        def accepted(quic: QuicConnection) -> None:
            self._conns[self._cnx_id(quic)] = quic

        ep.on_accept = accepted
        ep.on_events = self._touched.append
        self._endpoints.append(ep)

    def _observe(self, ep: QuicEndpoint, add: bool = True) -> None:
        """Count ``ep`` (a session's own endpoint) in :attr:`counters` (``add=False``: stop)."""
        if add and ep not in self._observed:
            self._observed.append(ep)
        elif not add and ep in self._observed:
            self._observed.remove(ep)

    def _cnx_id(self, quic: QuicConnection) -> int:
        key = id(quic)
        cid = self._ids.get(key)
        if cid is None:
            cid = self._ids[key] = self._next_id
            self._next_id += 1
        return cid

    def stop(self, drain_timeout: float = 0.05) -> None:
        """Close every connection at once and free the endpoints (idempotent).  Connections
        still open get CONNECTION_CLOSE without waiting for unacknowledged data: close them
        (and wait) first for a graceful end.  ``drain_timeout`` is accepted for 0.6.1
        compatibility."""
        for ep in self._endpoints:
            ep.close()
        self._endpoints.clear()
        self._conns.clear()
        self._touched.clear()
        self._started = False

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started

    @property
    def thread_ready(self) -> bool:
        """True once started (the network thread starts with the endpoint)."""
        return self._started

    @property
    def configuration(self) -> Optional[QuicConfiguration]:
        """The configuration :meth:`start` built (None before)."""
        return self._configuration

    @property
    def endpoints(self) -> list[QuicEndpoint]:
        """The native endpoints this context drives (one for a server, one per client
        connection)."""
        return list(self._endpoints)

    @property
    def eventfd(self) -> int:
        """File descriptor that becomes readable when :meth:`drain_rx` has work: the first
        endpoint's (-1 before there is one).  With several client connections on one
        context, watch each of :attr:`endpoints`' ``fileno``."""
        return self._endpoints[0].fileno if self._endpoints else -1

    def wake_up(self) -> None:
        """Compatibility no-op: commands reach the network thread without a separate wake."""

    # ---------------------------------------------------------------- connections

    def create_client_connection(self, host: str, port: int, sni: Optional[str] = None,
                                 alpn: Optional[str] = None, desired_version: int = 0) -> int:
        """Open a client connection to ``host`` (a numeric IPv4/IPv6 address) ``port`` and
        return its ``cnx_ptr``.  An :data:`EVT_ALMOST_READY` event for it is the first one
        :meth:`drain_rx` returns, :data:`EVT_READY` follows the handshake.

        Raises :class:`RuntimeError` unless started as a client, :class:`ValueError` for a
        host that is not a numeric address or a ``desired_version`` other than 0 or QUIC
        v1, :class:`OSError` when the socket cannot be bound."""
        quic = self.open_connection(host, port, sni=sni, alpn=alpn,
                                    desired_version=desired_version)
        cid = self._cnx_id(quic)
        self._pending.append((EVT_ALMOST_READY, 0, None, False, 0, cid, 0, 0))
        return cid

    def open_connection(self, host: str, port: int, *, sni: Optional[str] = None,
                        alpn: Optional[str] = None, desired_version: int = 0
                        ) -> QuicConnection:
        """:meth:`create_client_connection`, returning the :class:`QuicConnection` (on its
        own endpoint, see :attr:`endpoints`); the same errors."""
        cfg = self._configuration
        if not self._started or cfg is None:
            raise RuntimeError("Transport not started")
        if not cfg.is_client:
            raise RuntimeError("create_client_connection needs a client TransportContext")
        if desired_version not in (0, 1):
            raise ValueError(f"desired_version {desired_version:#x}: this engine speaks "
                             f"QUIC version 1 only")
        try:
            bind = self._host or _bind_host(host)
        except ValueError:
            raise ValueError(f"Invalid IP address: {host}") from None
        if alpn and cfg.alpn_protocols != [alpn]:
            import dataclasses

            cfg = dataclasses.replace(cfg, alpn_protocols=[alpn])
        ep = QuicEndpoint(cfg, bind, self._port if not self._endpoints else 0,
                          server_name=sni or host)  # picks the ticket_file entry
        self._watch(ep)
        try:
            quic = ep.connect(host, port, sni or host)
        except BaseException:
            self._endpoints.remove(ep)
            ep.close()
            raise
        self._conns[self._cnx_id(quic)] = quic
        return quic

    def connection(self, cnx_ptr: int) -> Optional[QuicConnection]:
        """The :class:`QuicConnection` behind ``cnx_ptr`` (None when unknown or gone): one
        of this context's, or the connection of a 0.6.1-style WebTransport session (whose
        ``cnx_ptr`` the session reports) made outside it."""
        quic = self._conns.get(cnx_ptr)
        if quic is None:
            from aiopquic.asyncio.webtransport import connection_for_ptr

            quic = connection_for_ptr(cnx_ptr)
        return quic

    # ---------------------------------------------------------------- events

    def drain_rx(self, max_events: int = 256) -> list[RawEvent]:
        """Pump the endpoints and return the events since the last call, as 0.6.1's tuples
        (see the module docstring).  Stream data and datagrams are :class:`memoryview`\\ s."""
        for ep in list(self._endpoints):
            while ep.process():
                pass
        out, self._pending = self._pending, []
        touched = list(self._touched)
        self._touched.clear()  # the endpoints append to this very list (on_events)
        seen: set[int] = set()
        for quic in touched:
            if id(quic) in seen:
                continue
            seen.add(id(quic))
            cid = self._cnx_id(quic)
            ev = quic.next_event()
            while ev is not None:
                raw = _to_raw(ev, cid)
                if raw is not None:
                    out.append(raw)
                ev = quic.next_event()
            if quic.closed:
                self._conns.pop(cid, None)
        return out

    def drain_rx_callback(self, handler: Callable[..., None], max_events: int = 256) -> int:
        """:meth:`drain_rx`, handing each tuple's fields to ``handler(*event)``; returns how
        many events there were."""
        evs = self.drain_rx(max_events)
        for ev in evs:
            handler(*ev)
        return len(evs)

    def release_batch(self) -> None:
        """Compatibility no-op: events own their data."""

    @property
    def rx_event_ring_count(self) -> int:
        """Events waiting for :meth:`drain_rx` that it already collected (0.6.1 counted its
        native ring)."""
        return len(self._pending)

    @property
    def tx_event_ring_count(self) -> int:
        """Commands waiting for room in the command ring to the network thread."""
        return sum(len(ep._deferred) for ep in self._endpoints)

    @property
    def tx_event_ring_capacity(self) -> int:
        """0.6.1's TX event ring size (a constant kept for fill ratios)."""
        return _TX_RING_CAPACITY

    @property
    def tx_event_ring_drain_event(self) -> Any:
        """An :class:`asyncio.Event`, set while the command ring has room."""
        import asyncio

        if self._drain_event is None:
            self._drain_event = asyncio.Event()
        if not self.tx_event_ring_count:
            self._drain_event.set()
        return self._drain_event

    def arm_tx_event_ring_drain_pending(self) -> bool:
        """False: the command ring never stays full long enough to wait on here (commands
        that do not fit wait in Python and are retried as it drains)."""
        return False

    def clear_tx_event_ring_drain_pending(self) -> None:
        """Compatibility no-op."""

    # ---------------------------------------------------------------- commands

    def _quic(self, cnx_ptr: int) -> QuicConnection:
        quic = self.connection(cnx_ptr)
        if quic is None:
            raise ConnectionError(f"no open connection {cnx_ptr}")
        return quic

    def tx_send_stream(self, cnx_ptr: int, stream_id: int,
                       data: Union[bytes, bytearray, memoryview], end_stream: bool = False,
                       stream_ring_cap: int = 0) -> None:
        """Send ``data`` on ``stream_id`` of connection ``cnx_ptr`` (never raises for a full
        buffer: see :meth:`QuicConnection.send_stream_data`).  Raises
        :class:`ConnectionError` for an unknown or closed connection."""
        self._quic(cnx_ptr).send_stream_data(stream_id, data, end_stream)

    def push_tx_event(self, event_type: int, stream_id: int, data: Optional[bytes] = None,
                      error_code: int = 0, cnx_ptr: int = 0, stream_ctx: int = 0,
                      is_fin: int = 0) -> None:
        """0.6.1's raw command: :data:`TX_STREAM_DATA` / :data:`TX_STREAM_FIN` (send),
        :data:`TX_CLOSE`, :data:`TX_STREAM_RESET`, :data:`TX_STOP_SENDING`.  Raises
        :class:`ValueError` for another code, :class:`ConnectionError` for an unknown
        connection."""
        quic = self._quic(cnx_ptr)
        if event_type in (TX_STREAM_DATA, TX_STREAM_FIN):
            quic.send_stream_data(stream_id, data or b"",
                                  end_stream=bool(is_fin) or event_type == TX_STREAM_FIN)
        elif event_type == TX_CLOSE:
            quic.close(error_code)
        elif event_type == TX_STREAM_RESET:
            quic.reset_stream(stream_id, error_code)
        elif event_type == TX_STOP_SENDING:
            quic.stop_stream(stream_id, error_code)
        else:
            raise ValueError(f"push_tx_event: unsupported event type {event_type}")

    def set_stream_priority(self, cnx_ptr: int, stream_id: int, priority: int) -> int:
        """Set a stream's send priority (see :meth:`QuicConnection.set_stream_priority`);
        returns 0 (posted)."""
        return self._quic(cnx_ptr).set_stream_priority(stream_id, priority)

    def set_default_stream_priority(self, priority: int) -> None:
        """Default priority of new streams, on every connection of this context."""
        for quic in list(self._conns.values()):
            quic.set_default_stream_priority(priority)

    # ---------------------------------------------------------------- introspection

    def get_negotiated_alpn(self, cnx_ptr: int) -> Optional[str]:
        """The ALPN protocol the connection negotiated (None before the handshake)."""
        quic = self.connection(cnx_ptr)
        return quic.alpn_protocol if quic is not None else None

    def session_resumed(self, cnx_ptr: int) -> bool:
        """True when the connection's handshake resumed a TLS session from a ticket
        (``session_ticket_file``); False before the handshake or for an unknown one."""
        quic = self.connection(cnx_ptr)
        return bool(quic.session_resumed) if quic is not None else False

    def peer_address(self, cnx_ptr: int) -> Optional[tuple[str, int]]:
        """The peer's ``(host, port)`` (None for an unknown connection)."""
        quic = self.connection(cnx_ptr)
        return quic.peer_address() if quic is not None and quic.peer_address else None

    def local_address(self, cnx_ptr: int) -> Optional[tuple[str, int]]:
        """This side's ``(host, port)`` (see :meth:`QuicConnection.local_address`)."""
        quic = self.connection(cnx_ptr)
        return quic.local_address() if quic is not None else None

    def path_quality(self, cnx_ptr: int) -> dict[str, int]:
        """See :meth:`QuicConnection.path_quality` (``{}`` for an unknown connection)."""
        quic = self.connection(cnx_ptr)
        return quic.path_quality() if quic is not None else {}

    def transport_parameters(self, cnx_ptr: int, local: bool = False
                             ) -> Optional[dict[str, Any]]:
        """See :attr:`QuicConnection.peer_transport_parameters` /
        :attr:`~QuicConnection.local_transport_parameters`."""
        quic = self.connection(cnx_ptr)
        if quic is None:
            return None
        return quic.local_transport_parameters if local else quic.peer_transport_parameters

    def connection_ids(self, cnx_ptr: int) -> Optional[dict[str, bytes]]:
        """See :attr:`QuicConnection.connection_ids` (None for an unknown connection)."""
        quic = self.connection(cnx_ptr)
        return quic.connection_ids if quic is not None else None

    def cnx_data_counters(self, cnx_ptr: int) -> tuple[int, int]:
        """``(bytes_sent, bytes_received)`` of the connection, latest snapshot."""
        quic = self.connection(cnx_ptr)
        if quic is None:
            return (0, 0)
        return (quic.bytes_sent, quic.bytes_received)

    @property
    def counters(self) -> dict[str, int]:
        """The endpoints' :attr:`QuicEndpoint.counters`, summed (0.6.1 had forensic
        counters of its C rings; these are what this engine has), plus ``endpoints``."""
        total: dict[str, int] = {"endpoints": len(self._endpoints)}
        for ep in self._endpoints + [e for e in self._observed if e._native.ptr is not None]:
            for key, value in ep.counters.items():
                total[key] = total.get(key, 0) + value
        total["rx_event_ring_count_now"] = total.get("rx_event_ring_count_now", 0) + len(
            self._pending)
        total.setdefault("connections", 0)
        return total

    def dump_counters(self, file: Optional[IO[str]] = None, label: Optional[str] = None,
                      stream_ctxs: Any = None, cnx_ptrs: Any = None) -> None:
        """Print :attr:`counters` to ``file`` (default stderr)."""
        out = file or sys.stderr
        print(f"=== aiopquic TransportContext {label or hex(id(self))} ===", file=out)
        for key, value in self.counters.items():
            print(f"  {key}: {value}", file=out)
        out.flush()


def _to_raw(ev: events.QuicEvent, cid: int) -> Optional[RawEvent]:
    t = type(ev)
    if t is events.StreamDataReceived:
        assert isinstance(ev, events.StreamDataReceived)
        return (EVT_STREAM_FIN if ev.end_stream else EVT_STREAM_DATA, ev.stream_id,
                memoryview(ev.data), ev.end_stream, 0, cid, 0, 0)
    if t is events.StreamReset:
        assert isinstance(ev, events.StreamReset)
        return (EVT_STREAM_RESET, ev.stream_id, None, False, ev.error_code, cid, 0, 0)
    if t is events.StopSendingReceived:
        assert isinstance(ev, events.StopSendingReceived)
        return (EVT_STOP_SENDING, ev.stream_id, None, False, ev.error_code, cid, 0, 0)
    if t is events.HandshakeCompleted:
        return (EVT_READY, 0, None, False, 0, cid, 0, 0)
    if t is events.DatagramFrameReceived:
        assert isinstance(ev, events.DatagramFrameReceived)
        return (EVT_DATAGRAM, 0, memoryview(ev.data), False, 0, cid, 0, 0)
    if t is events.ConnectionTerminated:
        assert isinstance(ev, events.ConnectionTerminated)
        kind = EVT_APP_CLOSE if ev.frame_type is None else EVT_CLOSE
        return (kind, 0, None, False, ev.error_code, cid, 0, 0)
    return None


def dump_all_counters(file: Optional[IO[str]] = None) -> None:
    """Print the counters of every live :class:`TransportContext` to ``file`` (default
    stderr); aiomoqt's SIGUSR2 handler calls this."""
    out = file or sys.stderr
    contexts = list(_REGISTRY)
    for n, ctx in enumerate(contexts):
        ctx.dump_counters(file=out, label=f"ctx#{n}")
    if not contexts:
        print("=== no live TransportContext instances ===", file=out, flush=True)
