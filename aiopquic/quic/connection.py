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

import functools
import logging
import os
import ssl
import weakref
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import IO, Any, Callable, Optional, Union

from aiopquic import _native
from aiopquic._codec_base import c_codecs
from aiopquic._native import ffi, lib
from aiopquic.quic import events
from aiopquic.quic._checks import (
    check_buffer,
    check_error_code,
    check_int,
    check_optional_varint,
    check_reason,
    check_stream_id,
)
from aiopquic.quic._compat061 import Compat061Connection, PeerAddress
from aiopquic.quic._enginelog import packet_events
from aiopquic.quic._qlog import ConnectionTrace, logger_for, logging_wanted
from aiopquic.quic.configuration import (
    CONGESTION_CONTROL_ALIASES,
    MIN_STREAM_BUFFER_SIZE,
    SMALLEST_MAX_DATAGRAM_SIZE,
    QuicConfiguration,
)
from aiopquic.quic.packet import (  # QuicFrameType etc.: re-exported, as aioquic does
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    QuicProtocolVersion,
)
from aiopquic.tls import (
    CipherSuite,
    SessionTicket,
    load_session_ticket,
    save_session_ticket,
    session_ticket_blob,
    session_ticket_from_blob,
)

__all__ = ["QuicConnection", "QuicConnectionState", "QuicConnectionStats", "QuicEndpoint",
           "QuicFrameType", "QuicPacketType", "QuicProtocolVersion", "SMALLEST_MAX_DATAGRAM_SIZE",
           "QuicConnectionError",
           "StreamFinishedError",
           "QuicErrorCode", "StreamStateError", "MAX_QUEUED_EVENTS", "PROCESS_BATCH", "PeerAddress",
           "stream_is_client_initiated", "stream_is_unidirectional"]

_log = logging.getLogger("aiopquic")
_endpoint_logger = logging.getLogger("aiopquic.endpoint")

_CC = {"reno": lib.AQ_CC_RENO, "cubic": lib.AQ_CC_CUBIC, "bbr": lib.AQ_CC_BBR}
_CONNECTION_REFUSED = 0x2  # RFC 9000 transport error code
_CREDIT_BATCH = 64 * 1024
_FINISHED_MEMORY = 65536  # finished stream ids remembered to reject late writes
_DATAGRAM_DEFER_LIMIT = 1 << 20  # datagram bytes waiting for command-ring room, per connection
_DATAGRAM_QUEUE = 1 << 20  # datagram bytes that may wait to be sent (datagram_ring_bytes=None)

# A datagram must fit in one packet: 1452-byte UDP payload minus the short header (1 + 18-byte
# CID + up to 4 bytes packet number), the AEAD tag (16) and the DATAGRAM frame header (<= 3).
MAX_DATAGRAM_PAYLOAD = 1200 - 46
"""Largest datagram payload before the path's packet size is known: a 1200-byte packet (QUIC's
minimum, always usable) less the worst-case short header, AEAD tag and DATAGRAM framing.  Once
the handshake is done the limit follows the path (PMTUD, EMSGSIZE, black holes)."""

MAX_QUEUED_EVENTS = 4096
"""Bound of a connection's queue of undelivered events (what :meth:`QuicConnection.next_event`
returns).  Overflow policy: while the queue holds this many events, received datagrams are
dropped (counted in :attr:`QuicConnection.received_datagrams_dropped` and
:attr:`QuicConnectionStats.received_datagrams_dropped`); stream data, resets and every other
event are always queued, never dropped (stream data is bounded by flow control anyway)."""

SEND_BUFFER_BUDGET = 32 * 1024 * 1024
"""Bytes of stream send rings one connection may hold at full size
(:attr:`QuicConfiguration.stream_buffer_size` each).  Streams opened while the budget is spent
get the smallest ring (:data:`MIN_STREAM_BUFFER_SIZE`, 64 KiB): they still work, their
``drain()`` just waits sooner, so a connection with thousands of streams cannot pin gigabytes
of send rings."""

RING_POOL_BYTES = 16 * 1024 * 1024
"""Bytes of finished streams' send rings an endpoint keeps for its next streams (instead of
freeing one and allocating another per stream: a request/response protocol opens a stream per
request, and a 4 MiB ring allocated and freed a hundred at a time cost ~6 us of page faults
and heap trimming each).  Rings beyond it are freed; all are freed when the endpoint
closes."""

PROCESS_BATCH = 1024
"""Most native events :meth:`QuicEndpoint.process` handles per call; the event loop adapters
call it again on the next loop iteration while more are waiting, so a flood of packets cannot
monopolise the event loop."""


def _c_event_builder() -> Optional[Callable[[int, int], list[Any]]]:
    """``aiopquic._ccodecs._events_from`` (QuicEndpoint._poll's loop in C) on CPython, told
    once which classes and codes to build; None on PyPy, whose JIT runs the Python loop."""
    mod = c_codecs()
    if mod is None or not hasattr(mod, "_events_from"):
        return None
    mod._set_event_types(events.StreamDataReceived, events.DatagramFrameReceived,
                         _native.NativeEvent, _native.EV_STREAM_DATA, _native.EV_DATAGRAM,
                         _native.FLAG_FIN)
    fn: Callable[[int, int], list[Any]] = mod._events_from
    return fn


_events_from = _c_event_builder()


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
    emsgsize: int = 0
    """Packets the kernel refused as larger than the path (EMSGSIZE): each lowers the packet
    size unless it was a PMTUD probe."""
    blackholes: int = 0
    """Times packets at the discovered size stopped getting through (no new acknowledgement
    for 4 PTOs) and the packet size fell back to 1200 bytes to search again."""
    max_datagram_payload: int = 0
    """Largest datagram :meth:`QuicConnection.send_datagram_frame` accepts now."""
    path_max_udp_payload: int = 0
    """What PMTUD found for the path (``max_datagram_size`` is lower while a fallback after
    EMSGSIZE or a black hole is in force)."""
    received_datagrams_dropped: int = 0
    """Datagrams received and dropped because :data:`MAX_QUEUED_EVENTS` events were waiting
    to be delivered (the application did not keep up)."""
    ecn_sent: int = 0
    """Packets sent with an ECN-capable codepoint (ECT(0)).  ngtcp2 validates ECN per path
    (RFC 9000 section 13.4): on a path that drops or bleaches the marks it stops marking."""
    ecn_ect0_received: int = 0
    """Packets received marked ECT(0) (the peer marks; the path kept the mark)."""
    ecn_ect1_received: int = 0
    """Packets received marked ECT(1)."""
    ecn_ce_received: int = 0
    """Packets received marked Congestion Experienced (a router signalled congestion; the
    peer's congestion controller reacts as to a loss, without the loss)."""


class QuicConnectionError(ConnectionError):
    """The connection is closed (or closing): carries the close code and reason."""

    def __init__(self, message: str, error_code: int = 0, reason_phrase: str = "") -> None:
        super().__init__(message)
        self.error_code = error_code
        self.reason_phrase = reason_phrase


class StreamStateError(ValueError):
    """An operation is not allowed in the stream's state (after FIN, after a reset, wrong
    direction)."""


class StreamFinishedError(StreamStateError, RuntimeError):
    """Sending after the stream's FIN or after resetting it.  Also a :class:`RuntimeError`,
    which is what aioquic raises there (dropin helper's hunk)."""



class QuicConnectionState(Enum):
    """aioquic's connection states; :attr:`QuicConnection.state` *(aiopquic)* tells which
    one a connection is in (``FIRSTFLIGHT`` until the handshake completed)."""

    FIRSTFLIGHT = 0
    CONNECTED = 1
    CLOSING = 2
    DRAINING = 3
    TERMINATED = 4



def new_connection_id(cfg: QuicConfiguration) -> bytes:
    """A connection ID of ``cfg.connection_id_length`` bytes to issue: random, or in QUIC-LB's
    plaintext format when ``cfg.quic_lb_server_id`` is set (the same layout the engine uses
    for every later ID)."""
    length = int(cfg.connection_id_length)
    cid = bytearray(os.urandom(length))
    sid = cfg.quic_lb_server_id
    if sid:
        cid[0] = ((int(cfg.quic_lb_config_id) & 7) << 5) | ((length - 1) & 31)
        cid[1:1 + len(sid)] = sid
    return bytes(cid)

_SUITES = {int(s) for s in CipherSuite}


class _TlsView:
    """What aioquic programs read from ``quic.tls`` (a read-only view of the connection)."""

    __slots__ = ("_quic",)

    def __init__(self, quic: QuicConnection) -> None:
        self._quic = quic

    @property
    def session_resumed(self) -> bool:
        """True once the handshake resumed a session from a ticket."""
        return bool(self._quic.session_resumed)

    @property
    def early_data_accepted(self) -> bool:
        """True once the handshake accepted 0-RTT data."""
        return bool(self._quic.early_data_accepted)

    @property
    def alpn_negotiated(self) -> Optional[str]:
        """The negotiated ALPN protocol."""
        return self._quic.alpn_protocol

    @property
    def cipher_suite(self) -> Any:
        """The negotiated cipher suite (``None`` before the handshake)."""
        return self._quic.cipher_suite


def _call_migrated(callback: Callable[[int, Optional[str]], None], port: int,
                   error: Optional[str]) -> None:
    callback(port, error)

RETRY_MODES = {None: 0, True: 1, False: 2}  # aq_config.retry: automatic, always, never


def native_config(cfg: QuicConfiguration, retry: Optional[bool] = None,
                  server_name: Optional[str] = None) -> dict[str, Any]:
    """Translate a :class:`QuicConfiguration` into the native ``aq_config`` fields
    (``retry``: ``None`` automatic, ``True`` always, ``False`` never; servers only).

    A client resumes with ``cfg.session_ticket``, else with the newest ticket for
    ``server_name`` (default ``cfg.server_name``) in ``cfg.session_ticket_file``."""
    ticket: Optional[bytes] = None
    if cfg.is_client:
        if cfg.session_ticket is not None:
            ticket = session_ticket_blob(cfg.session_ticket)
        elif cfg.session_ticket_file is not None:
            found = load_session_ticket(cfg.session_ticket_file,
                                        server_name or cfg.server_name)
            ticket = found.ticket if found is not None else None
    alpn = b""
    for proto in cfg.alpn_protocols or []:
        raw = proto.encode()
        alpn += bytes([len(raw)]) + raw
    cc = cfg.congestion_control_algorithm or "bbr"
    cc = CONGESTION_CONTROL_ALIASES.get(cc, cc)
    # 1200 leaves no PMTUD probe size, so the engine turns PMTUD off
    max_udp_payload = 1200 if cfg.pmtud == "blocked" else cfg.max_datagram_size
    event_ring = 0
    if cfg.event_ring_capacity is not None:
        event_ring = 1 << (int(cfg.event_ring_capacity) - 1).bit_length()
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
        "cc_algo": _CC[cc],
        "max_udp_payload": int(max_udp_payload),
        "event_ring_size": event_ring,
        "keep_alive_ns": int((cfg.keep_alive_interval or 0) * 1e9),
        "initial_rtt_ns": int((cfg.initial_rtt or 0) * 1e9),
        "socket_buffer": int(cfg.socket_buffer_size or 0),
        "datagram_queue": int(cfg.datagram_ring_bytes or 0),
        "max_half_open": int(cfg.max_half_open),
        "retry": RETRY_MODES[retry],
        "retry_threshold": int(cfg.retry_threshold or 0),
        "handshake_rate": float(cfg.handshake_rate_per_source or 0),
        "token": bytes(cfg.token) if cfg.is_client and cfg.token else None,
        "cid_len": int(cfg.connection_id_length),
        "lb_sid": list(cfg.quic_lb_server_id or b"") or None,
        "lb_sid_len": len(cfg.quic_lb_server_id or b""),
        "lb_config_id": int(cfg.quic_lb_config_id),
        "ciphers": cfg._cipher_priority(),
        "spin_us": -1 if cfg.network_poll_us is None else int(cfg.network_poll_us),
        "ack_floor_us": -1 if cfg.ack_floor_us is None else int(cfg.ack_floor_us),
        "stream_window_start": -1 if cfg.stream_window_start is None
        else int(cfg.stream_window_start),
        "versions": (list(cfg.supported_versions or []) + [0, 0, 0, 0])[:4],
        "nversions": len(cfg.supported_versions or []),
        "client_version": int(cfg.original_version or 0) if cfg.is_client else 0,
        # packet-level qlog events come from the engine's log (quic/_enginelog.py)
        "engine_log": int(logging_wanted(cfg)),
        "session_ticket": ticket,
        "no_early_data": 0 if cfg.early_data else 1,
        "ticket_key": None if cfg.is_client else _ticket_key(cfg),
        "quantum_readiness": int(bool(cfg.is_client and cfg.quantum_readiness_test)),
    }


_TICKET_KEYS: dict[int, bytes] = {}  # id(server configuration) -> its ticket key


def _ticket_key(cfg: QuicConfiguration) -> bytes:
    """The session ticket key of a server configuration: drawn once per configuration object
    (kept beside it, not in it: a pickled or printed configuration never carries it, and it
    is forgotten with the object), so every endpoint and every sans-IO connection built
    from the same object resumes the others' tickets."""
    key = _TICKET_KEYS.get(id(cfg))
    if key is None:
        key = os.urandom(64)
        _TICKET_KEYS[id(cfg)] = key
        weakref.finalize(cfg, _TICKET_KEYS.pop, id(cfg), None)
    return key


def _conn_info_local(data: bytes) -> Optional[tuple[str, int]]:
    """AQ_EV_CONN_INFO's local address of the connection's path as ``(host, port)``; None
    when the kernel chooses it (a wildcard host) or it is unknown."""
    raw = ffi.cast("aq_conn_info *", ffi.from_buffer(data))
    host, _, port = ffi.string(raw.local_addr).decode("ascii", "replace").rpartition(" ")
    if not host or host in ("?", "0.0.0.0", "::", "::ffff:0.0.0.0") or not port.isdigit():
        return None
    return host, int(port)


_CONN_INFO_SIZE = ffi.sizeof("aq_conn_info")
_TP_FIELDS = ("initial_max_data", "initial_max_stream_data_bidi_local",
              "initial_max_stream_data_bidi_remote", "initial_max_stream_data_uni",
              "initial_max_streams_bidi", "initial_max_streams_uni", "max_ack_delay",
              "ack_delay_exponent", "active_connection_id_limit", "max_datagram_frame_size")


def _parse_conn_info(data: bytes) -> tuple[dict[str, Any], dict[str, Any], dict[str, bytes]]:
    """AQ_EV_CONN_INFO's aq_conn_info as (local transport parameters, the peer's, connection
    ids), with aiopquic 0.6.1's keys (``max_idle_timeout`` in ms, ``max_ack_delay`` in us)."""
    raw = ffi.cast("aq_conn_info *", ffi.from_buffer(data))

    def side(tp: Any) -> dict[str, Any]:
        out: dict[str, Any] = {name: int(getattr(tp, name if name != "max_ack_delay"
                                                 else "max_ack_delay_us"))
                               for name in _TP_FIELDS}
        out["max_idle_timeout"] = int(tp.max_idle_timeout_ms)
        out["max_udp_payload_size"] = int(tp.max_udp_payload_size)
        out["disable_active_migration"] = bool(tp.disable_active_migration)
        out["grease_quic_bit"] = bool(tp.grease_quic_bit)
        return out

    cids = {
        "local": bytes(ffi.buffer(raw.cid_local, raw.cid_local_len)),
        "remote": bytes(ffi.buffer(raw.cid_remote, raw.cid_remote_len)),
        "initial": bytes(ffi.buffer(raw.cid_initial, raw.cid_initial_len)),
    }
    return side(raw.local), side(raw.remote), cids


class _TxStream:
    """Python-side state of a stream we send on."""

    __slots__ = ("buf", "cap", "spill", "fin_pending", "fin_sent", "reset", "stopped",
                 "waiters", "open", "written")

    def __init__(self, buf: Any, cap: int) -> None:
        self.buf = buf
        self.cap = cap  # ring bytes, counted in the connection's send-buffer budget
        self.spill: deque[memoryview] = deque()  # views: slicing a large write copies nothing
        self.fin_pending = False  # FIN waits behind the spill queue
        self.fin_sent = False
        self.reset = False
        self.stopped: Optional[int] = None  # peer's STOP_SENDING code
        self.waiters: list[Callable[[], None]] = []
        self.open = True  # writable: no FIN, reset or STOP_SENDING, connection open
        self.written = 0  # bytes accepted by send_stream_data (0.6.1's get_stream_buf_stats)


def _is_uni(stream_id: int) -> bool:
    return bool(stream_id & 2)


def stream_is_client_initiated(stream_id: int) -> bool:
    """True when the client opened ``stream_id`` (its lowest bit is 0; RFC 9000 §2.1)."""
    return not stream_id & 1


def stream_is_unidirectional(stream_id: int) -> bool:
    """True when ``stream_id`` is unidirectional (its second bit is set; RFC 9000 §2.1)."""
    return bool(stream_id & 2)


class _NoEvents:
    """The event queue of a connection with no event waiting, shared by all of them (an
    empty ``deque`` costs ~600 bytes, which an idle connection would hold for nothing):
    reads like an empty deque; :meth:`QuicConnection._push_event` replaces it with a real
    deque, and the connection drops that again once it is drained."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Any:
        return iter(())

    def __getitem__(self, index: int) -> Any:
        raise IndexError("no event waiting")

    def popleft(self) -> Any:
        raise IndexError("no event waiting")

    pop = popleft

    def clear(self) -> None:
        pass

    def append(self, event: Any) -> None:
        raise RuntimeError("events are queued through QuicConnection._push_event")


# typed as the deque it stands in for (it has the read half of its interface)
_NO_EVENTS: deque[Any] = _NoEvents()  # type: ignore[assignment]


class _Finished:
    """Stream ids the engine closed recently (writing there again raises), bounded by
    _FINISHED_MEMORY; made on a connection's first finished stream."""

    __slots__ = ("ids", "order")

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.order: deque[int] = deque()


class QuicConnection(Compat061Connection):
    """One QUIC connection, driven by a :class:`QuicEndpoint`'s network thread.

    Mirrors the parts of :class:`aioquic.quic.connection.QuicConnection` an application uses.
    Methods are called from the event loop's thread only.

    Arguments are checked before anything reaches the engine: error codes, stream ids and
    frame types must be integers in [0, 2**62), data bytes-like; anything else raises
    :class:`TypeError` / :class:`ValueError` naming the argument, and the connection is left
    as it was.  Once the connection is closed (either side, idle timeout, or its endpoint
    closed), sending raises :class:`QuicConnectionError`.
    """

    max_queued_events = MAX_QUEUED_EVENTS
    """Bound of the undelivered-event queue (see :data:`MAX_QUEUED_EVENTS` for the overflow
    policy); may be set per connection."""

    # What __init__ sets, as slots: a server holds thousands of idle connections, and a dict
    # of ~45 attributes costs ~1.5 KB more per connection.  __dict__ stays for anything else
    # (subclasses, attributes set from outside).  tests/test_bounds.py checks that a new
    # connection has no __dict__ and that no slot hides a class attribute.
    __slots__ = (
        "configuration", "_endpoint", "_handle", "_is_client", "_events", "_tx", "_next_local",
        "_finished", "_auto_credit", "_track_finished", "_remote_max_datagram_frame_size",
        "_manual_credit", "_credit", "_closed", "_close_event", "_close_flags",
        "_pending_close", "_handshake_done", "_version", "_conn_info_raw",
        "_peer_max_datagram", "_path_max_datagram", "_tx_ring_bytes", "_stats_callbacks",
        "_stats_ids", "_finished_streams", "_peer_seen", "received_datagrams_dropped",
        "alpn_protocol", "_qlog", "_quic_logger", "_token_handler", "_session_ticket_handler",
        "_alpn_reported", "session_resumed", "early_data_accepted", "early_data_rejected",
        "_migrate_callbacks", "cipher_suite", "_logger_adapter", "_dgq", "datagrams_refused",
        "_batch_end", "_dg_fast", "__dict__", "__weakref__")

    def __new__(cls, *args: Any, **kwargs: Any) -> QuicConnection:
        # built by user code without an endpoint: aioquic's sans-IO connection
        if cls is QuicConnection and kwargs.get("endpoint") is None:
            from aiopquic.quic.sansio import SansioQuicConnection
            return object.__new__(SansioQuicConnection)
        return object.__new__(cls)

    def __init__(self, *, configuration: QuicConfiguration, endpoint: QuicEndpoint,
                 handle: int) -> None:
        self.configuration = configuration
        self._endpoint = endpoint
        self._handle = handle
        self._is_client = configuration.is_client
        self._events: deque[events.QuicEvent] = _NO_EVENTS  # see _push_event
        self._tx: dict[int, _TxStream] = {}
        # next unused id of each local stream type (index: 1 for unidirectional)
        self._next_local = [int(not self._is_client), 2 | int(not self._is_client)]
        # streams the engine closed recently: writing there again raises (bounded memory)
        self._finished: Optional[_Finished] = None
        self._auto_credit = True  # next_event() returns credit for unclaimed streams
        self._track_finished = False  # a layer drains _take_finished_streams()
        self._remote_max_datagram_frame_size: Optional[int] = None  # aioquic's H3 reads it
        self._manual_credit: dict[int, None] = {}  # a set (an empty dict is 150 B less)
        self._credit: dict[int, int] = {}
        self._closed = False
        self._close_event: Optional[events.ConnectionTerminated] = None
        self._close_flags = 0
        self._pending_close: Optional[tuple[int, Optional[int], str]] = None
        self._handshake_done = False
        self._version: Optional[int] = None  # negotiated QUIC version (aioquic's attribute)
        # AQ_EV_CONN_INFO's bytes, parsed on demand (_conn_info): an idle connection keeps
        # ~350 bytes (zero tail stripped) instead of two dicts of transport parameters
        self._conn_info_raw: Optional[bytes] = None
        self._peer_max_datagram = 0
        self._path_max_datagram = -1  # from EV_PATH: what fits one packet now (-1: unknown)
        self._tx_ring_bytes = 0  # send-ring bytes held by this connection's streams
        self._dgq: Any = None  # datagram send accounting (aq_dgq), made on the first datagram
        # (largest payload, native endpoint) once a datagram went out with nothing to check
        # but its size: send_datagram_frame's fast path (None: take the full path)
        self._dg_fast: Optional[tuple[int, Any]] = None
        # while QuicEndpoint.process hands this connection's events to its on_events hook:
        # callables to run when that batch ends (the HTTP/3 layer gathers its QPACK decoder
        # instructions there); None outside a batch
        self._batch_end: Optional[list[Callable[[], None]]] = None
        self._stats_callbacks: dict[int, Callable[[QuicConnectionStats], None]] = {}
        self._stats_ids = 0
        self._finished_streams: list[int] = []  # closed in the engine; see _take_finished
        # highest peer-initiated stream id seen, by id & 3 (-1: none yet)
        self._peer_seen = [-1, -1, -1, -1]
        self.received_datagrams_dropped = 0
        """Received datagrams dropped by the :data:`MAX_QUEUED_EVENTS` overflow policy."""
        self.datagrams_refused = 0
        """*(aiopquic)* Times :meth:`send_datagram_frame` returned 0 because
        ``datagram_ring_bytes`` of datagrams were already waiting to be sent."""
        self.alpn_protocol: Optional[str] = None
        # QuicConfiguration.quic_logger / qlog_dir: this connection's trace (quic/_qlog.py);
        # aioquic's H3Connection logs into ``_quic_logger`` (the raw trace) when it is set
        self._qlog: Optional[ConnectionTrace] = None
        self._quic_logger: Any = None
        qlog_logger = logger_for(configuration)
        if qlog_logger is not None:
            self._qlog = ConnectionTrace(qlog_logger, self._is_client)
            self._quic_logger = self._qlog.trace
        self._token_handler: Optional[Callable[[bytes], None]] = None  # connect(token_handler=)
        # connect(session_ticket_handler=): called with each SessionTicket the server sends
        self._session_ticket_handler: Optional[Callable[[SessionTicket], None]] = None
        self._alpn_reported = False  # ProtocolNegotiated queued (early on 0-RTT servers)
        self.session_resumed = False
        """True once the handshake resumed a TLS session from a ticket (both sides)."""
        self.early_data_accepted = False
        """True once the handshake accepted 0-RTT data (both sides)."""
        self.early_data_rejected = False
        """Client: 0-RTT was attempted and the server refused it.  Streams written before
        the handshake were opened again and their data sent again after it (datagrams sent
        as 0-RTT are lost, as datagrams may be)."""
        self._migrate_callbacks: list[Callable[[int, Optional[str]], None]] = []
        self.cipher_suite: Union[CipherSuite, int, None] = None
        """*(aiopquic)* The TLS cipher suite the handshake negotiated (a
        :class:`~aiopquic.tls.CipherSuite`, or 0x1304 for AES-128-CCM); ``None`` before."""
        self._seed_init()  # aiopquic 0.6.1's face (_compat061.py)
        self.peer_address = None  # (host, port), also callable as 0.6.1's peer_address()
        self._logger_adapter: Optional[logging.LoggerAdapter[logging.Logger]] = None

    @property
    def _logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """aioquic programs log through ``protocol._quic._logger`` (dropin helper's hunk);
        made on first use."""
        adapter = self._logger_adapter
        if adapter is None:
            adapter = self._logger_adapter = logging.LoggerAdapter(
                logging.getLogger("aiopquic.quic"), {"connection_handle": self._handle})
        return adapter

    @_logger.setter
    def _logger(self, adapter: logging.LoggerAdapter[logging.Logger]) -> None:
        self._logger_adapter = adapter  # assignable, as the plain attribute it was

    def _push_event(self, event: events.QuicEvent) -> None:
        """Queue ``event`` for :meth:`next_event` (the queue exists while events wait)."""
        queue = self._events
        if queue is _NO_EVENTS:
            queue = self._events = deque()
        queue.append(event)

    def _events_drained(self) -> None:
        """The queue is empty: give its memory back (an idle connection holds none)."""
        if not self._events:
            self._events = _NO_EVENTS

    def _is_finished(self, stream_id: int) -> bool:
        finished = self._finished
        return finished is not None and stream_id in finished.ids

    # ------------------------------------------------------------------ introspection

    @property
    def _conn_info(self) -> Optional[tuple[dict[str, Any], dict[str, Any], dict[str, bytes]]]:
        """(local transport parameters, the peer's, connection ids) from AQ_EV_CONN_INFO,
        or None before it."""
        raw = self._conn_info_raw
        return None if raw is None else _parse_conn_info(raw.ljust(_CONN_INFO_SIZE, b"\0"))

    @property
    def closed(self) -> bool:
        """True once the connection is closed or closing (no more sends)."""
        return self._closed

    @property
    def state(self) -> QuicConnectionState:
        """*(aiopquic)* Where the connection is, in aioquic's terms: ``FIRSTFLIGHT`` before
        the handshake completed, ``CONNECTED``, ``CLOSING`` once closed but before the end
        was reported, ``TERMINATED`` after :class:`~aiopquic.quic.events.ConnectionTerminated`."""
        if self._closed:
            if self.close_event is not None:
                return QuicConnectionState.TERMINATED
            return QuicConnectionState.CLOSING
        if self.handshake_complete:
            return QuicConnectionState.CONNECTED
        return QuicConnectionState.FIRSTFLIGHT

    @property
    def negotiated_version(self) -> Optional[int]:
        """The QUIC version the connection runs (:data:`~aiopquic.quic.configuration.QUIC_V1`
        or ``QUIC_V2``) once the handshake has completed; ``None`` before."""
        return self._version

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
        plus the Python-side queue); 0 for a stream never written or already finished.
        ``tx_data_ring_used`` is the same method under aiopquic 0.6.1's name."""
        st = self._tx.get(stream_id)
        if st is None or st.buf is None:
            return 0
        unacked: int = lib.aq_txbuf_unacked(st.buf)
        return unacked + sum(map(len, st.spill)) if st.spill else unacked

    # aiopquic 0.6.1's name for the same count (bound here, not wrapped: aiomoqt calls it
    # before every object it writes)
    tx_data_ring_used = get_stream_buffered_bytes

    def _write_now(self, stream_id: int, data: Any, end_stream: bool) -> Optional[_TxStream]:
        """The send fast path of the 0.6.1-style calls: when ``data`` is ``bytes`` and a write
        goes straight to ``stream_id``'s native ring (the stream open, nothing of it queued in
        Python, the command ring not full, the connection open, no qlog trace), write it
        and return the stream's send state (its ``spill`` is non-empty when part of the
        write had to queue in Python); else write nothing and return None (the caller takes
        the checked path, :meth:`send_stream_data`)."""
        st = self._tx.get(stream_id)
        if st is None or not st.open or st.spill or self._closed or self._endpoint._deferred \
                or type(data) is not bytes or self._qlog is not None:
            return None
        self._write_ring(stream_id, st, data, end_stream)
        return st

    def stream_send_pending(self, stream_id: int) -> bool:
        """True while data for ``stream_id`` waits in the Python-side queue
        (``writer.drain()`` waits for this to become False)."""
        st = self._tx.get(stream_id)
        return bool(st and st.spill and not st.reset and st.stopped is None and not self._closed)

    # ------------------------------------------------------------------ streams

    def get_next_available_stream_id(self, is_unidirectional: bool = False) -> int:
        """Return the next stream id this endpoint may open, and take it: two calls give two
        ids (aiopquic 0.6.1's semantics).  aioquic only peeks, but its callers use the id
        they get, so they work either way, while 0.6.1 callers that open several streams
        before writing need distinct ids (see docs/migrating.md)."""
        kind = 1 if is_unidirectional else 0
        stream_id = self._next_local[kind]
        self._next_local[kind] = stream_id + 4
        return stream_id

    def _mark_used(self, stream_id: int) -> None:
        """Take ``stream_id`` (a local stream): get_next_available_stream_id moves past it."""
        if bool(stream_id & 1) == (not self._is_client):
            kind = (stream_id >> 1) & 1
            if stream_id >= self._next_local[kind]:
                self._next_local[kind] = stream_id + 4

    def _check_stream_id(self, stream_id: int, for_send: bool) -> int:
        """Check a stream id a caller gave: an integer in [0, 2**62) (else
        :class:`TypeError` / :class:`ValueError`), a local stream already used or the next one
        (:meth:`get_next_available_stream_id`), or a peer stream the peer has opened, in the
        right direction (else :class:`StreamStateError`)."""
        stream_id = check_stream_id(stream_id)
        local = bool(stream_id & 1) == (not self._is_client)
        if local:
            kind = (stream_id >> 1) & 1
            if stream_id > self._next_local[kind]:
                raise StreamStateError(
                    f"stream_id {stream_id} is not open: local streams are opened in order "
                    f"(the next one is {self._next_local[kind]}, see "
                    f"get_next_available_stream_id())")
        elif stream_id > self._peer_seen[stream_id & 3]:
            raise StreamStateError(
                f"stream_id {stream_id} is not open: the peer has not opened it")
        if for_send and _is_uni(stream_id) and not local:
            raise StreamStateError(
                f"cannot send on stream {stream_id}: it is the peer's unidirectional stream")
        if not for_send and _is_uni(stream_id) and local:
            raise StreamStateError(
                f"cannot stop stream {stream_id}: it is a local unidirectional stream")
        return stream_id

    def _tx_stream(self, stream_id: int) -> _TxStream:
        st = self._tx.get(stream_id)
        if st is None:
            if self._is_finished(stream_id):
                raise StreamStateError(
                    f"cannot send on stream {stream_id}: it is finished (both directions "
                    f"closed)")
            cap = self.configuration.stream_buffer_size
            if self._tx_ring_bytes + cap > SEND_BUFFER_BUDGET:
                cap = MIN_STREAM_BUFFER_SIZE  # the budget is spent: a small ring still works
            buf = self._endpoint._ring_new(cap)
            if buf == ffi.NULL:
                raise MemoryError("cannot allocate a stream buffer")
            st = _TxStream(buf, cap)
            self._tx_ring_bytes += cap
            self._tx[stream_id] = st
            self._mark_used(stream_id)
        return st

    @property
    def tls(self) -> _TlsView:
        """aioquic's ``QuicConnection.tls`` (its TLS context), for the attributes programs
        read there: ``session_resumed``, ``early_data_accepted``, ``alpn_negotiated`` and
        ``cipher_suite`` (GnuTLS does the TLS here: nothing else of aioquic's context
        exists)."""
        return _TlsView(self)

    def _close_undelivered(self) -> bool:
        """True while the ConnectionTerminated event waits in the queue (the application is
        handling events that came before the close)."""
        return any(type(ev) is events.ConnectionTerminated for ev in self._events)

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
        Raises :class:`TypeError` when ``data`` is not bytes-like, :class:`TypeError` /
        :class:`ValueError` for a ``stream_id`` that is not an integer in [0, 2**62);
        :class:`StreamStateError` after FIN, after a local reset, after the peer's
        STOP_SENDING, on the peer's unidirectional stream, on a peer stream the peer has not
        opened, or on a local stream past the next available one;
        :class:`QuicConnectionError` once the connection is closed (by either side, or
        because its endpoint was closed) -- except while the application is still handling
        the events that came before the close (its ``ConnectionTerminated`` not delivered
        yet): then the bytes are dropped silently, as aioquic does, so a handler answering
        the last request of a client that just left does not fail.
        """
        st = self._tx.get(stream_id)
        if st is None or not st.open or st.spill:
            self._send_slow(stream_id, data, end_stream)
        else:  # fast path: an open stream with nothing queued in Python
            self._write_ring(stream_id, st, data, end_stream)
        if self._qlog is not None:
            self._qlog.log("transport", "stream_data_moved", {
                "stream_id": stream_id, "length": len(data), "fin": bool(end_stream),
                "from": "application", "to": "transport"})

    def _write_ring(self, stream_id: int, st: _TxStream,
                    data: Union[bytes, bytearray, memoryview], end_stream: bool) -> None:
        """Copy ``data`` into the stream's native ring; what does not fit waits in Python."""
        if type(data) is not bytes:
            data = check_buffer("data", data)
        n = len(data)
        st.written += n
        src = (data if type(data) is bytes else ffi.from_buffer(data)) if n else ffi.NULL
        # (the endpoint's pointer read directly: two property calls less per write)
        done = lib.aq_stream_write(self._endpoint._native._ptr, self._handle, stream_id,
                                   st.buf, src, n, 1 if end_stream else 0)
        if done == n:
            if end_stream:
                st.fin_sent = True
                st.open = False
            return
        self._spill(stream_id, st, data, max(done, 0), end_stream)

    def _release_ring(self, st: _TxStream) -> None:
        """Hand a stream's send ring back to the endpoint (pooled or freed) and take it off
        this connection's send-buffer budget."""
        self._endpoint._ring_done(st.buf, st.cap)
        st.buf = None
        self._tx_ring_bytes -= st.cap

    def _send_slow(self, stream_id: int, data: Union[bytes, bytearray, memoryview],
                   end_stream: bool) -> None:
        if type(data) is not bytes:
            data = check_buffer("data", data)
        stream_id = self._check_stream_id(stream_id, True)
        if self._closed and self._close_undelivered():
            return  # the application has not seen the close yet: drop, as aioquic does
        self._raise_if_closed()
        if self._pending_close is not None:
            raise QuicConnectionError("connection is closing")
        st = self._tx_stream(stream_id)
        if st.fin_sent or st.fin_pending:
            raise StreamFinishedError(f"cannot send on stream {stream_id} after its FIN")
        if st.reset:
            raise StreamFinishedError(f"cannot send on stream {stream_id}: it was reset")
        if st.stopped is not None:
            raise StreamStateError(
                f"cannot send on stream {stream_id}: the peer sent STOP_SENDING "
                f"(code {st.stopped})")
        if st.spill:
            if data:
                st.written += len(data)
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
        finished in both directions (nothing is left to reset).

        On the peer's unidirectional stream (which we cannot send on) the call is dropped and
        counted in :attr:`wrong_direction_dropped`, as aiopquic 0.6.1 did (aioquic raised).

        Raises :class:`TypeError` / :class:`ValueError` when ``error_code`` or ``stream_id``
        is not an integer in [0, 2**62) (checked first, whatever the state), and
        :class:`StreamStateError` for a stream that is not open (see
        :meth:`send_stream_data`)."""
        error_code = check_error_code(error_code)
        if self._wrong_direction(stream_id, True):
            return
        stream_id = self._check_stream_id(stream_id, True)
        if self._closed or (self._is_finished(stream_id) and stream_id not in self._tx):
            return
        st = self._tx_stream(stream_id)
        st.reset = True
        st.open = False
        st.spill.clear()
        st.fin_pending = False
        self._wake(st)
        self._command(lib.aq_stream_reset, stream_id, error_code)

    def _wrong_direction(self, stream_id: int, for_send: bool) -> bool:
        """True (and counted) when ``stream_id`` is a valid id of a unidirectional stream
        in the other direction: the reset/stop is dropped (see docs/migrating.md)."""
        if type(stream_id) is not int or not 0 <= stream_id < 1 << 62 or not stream_id & 2:
            return False
        local = bool(stream_id & 1) == (not self._is_client)
        if local == for_send:
            return False
        self.wrong_direction_dropped += 1
        return True

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """Ask the peer to stop sending on ``stream_id`` (STOP_SENDING with
        ``error_code``).  Does nothing on a closed connection.  On our own unidirectional
        stream (which receives nothing) the call is dropped and counted in
        :attr:`wrong_direction_dropped`, as aiopquic 0.6.1 did (aioquic raised).

        Raises :class:`TypeError` / :class:`ValueError` when ``error_code`` or ``stream_id``
        is not an integer in [0, 2**62), :class:`StreamStateError` for a peer stream the
        peer has not opened."""
        error_code = check_error_code(error_code)
        if self._wrong_direction(stream_id, False):
            return
        stream_id = self._check_stream_id(stream_id, False)
        if self._closed:
            return
        self._mark_used(stream_id)
        self._command(lib.aq_stream_stop, stream_id, error_code)

    def send_datagram_frame(self, data: Union[bytes, bytearray, memoryview]) -> int:
        """Send an unreliable DATAGRAM frame; returns the number of bytes accepted.

        Never blocks.  Returns ``len(data)`` when the datagram was queued, and 0 -- the
        datagram was not taken -- while ``QuicConfiguration.datagram_ring_bytes`` (default
        1 MiB) of datagrams already wait to be sent (the sender outruns the path or the
        congestion window); then :meth:`get_datagram_tx_drain_event` is cleared until half of
        them have left, and :attr:`datagrams_refused` counts the refusal (aiopquic 0.6.1's
        contract: wait on the event, send the same datagram again; aioquic callers, who
        ignore the return value, see it as one more lost datagram, the newest).  The same 0
        comes while the command ring to the network thread is full and 1 MiB of datagrams
        waits for it.  A datagram the path can no longer carry when its turn comes (the
        path shrank) is dropped and counted in
        :attr:`QuicConnectionStats.datagrams_dropped`.

        Raises :class:`TypeError` when ``data`` is not bytes-like (an empty datagram is
        allowed), :class:`ValueError` when datagrams are not enabled locally
        (``max_datagram_frame_size`` is None) or by the peer, or when ``data`` is larger
        than what the peer accepts or one packet carries; :class:`QuicConnectionError` once
        the connection is closed.
        """
        fast = self._dg_fast
        if fast is not None and type(data) is bytes and len(data) <= fast[0] and \
                not self._closed:
            # the common case: one C call that also checks the queue's room (-4: none)
            ptr = fast[1]._ptr
            if ptr is not None and lib.aq_send_datagram_room(ptr, self._handle, self._dgq,
                                                             data, len(data)) == 0:
                return len(data)
        return self._send_datagram(data)

    def _send_datagram(self, data: Union[bytes, bytearray, memoryview]) -> int:
        """send_datagram_frame's full path: every check, refusal, deferral and qlog."""
        data = check_buffer("data", data)
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
        q = self._dgq
        if q is None:
            q = lib.aq_dgq_new(self.configuration.datagram_ring_bytes or _DATAGRAM_QUEUE)
            if q == ffi.NULL:
                raise MemoryError("cannot allocate the datagram accounting")
            q = self._dgq = ffi.gc(q, lib.aq_dgq_release)
        if not lib.aq_dgq_room(q, len(data)):
            # datagram_ring_bytes wait to be sent already: refuse (0.6.1's "ring full"),
            # AQ_EV_DGRAM_SPACE sets the drain event again once half of them have left
            self.datagrams_refused += 1
            self._seed_dgram_full()
            return 0
        rv = lib.aq_send_datagram(self._endpoint.ptr, self._handle, q, ffi.from_buffer(data),
                                  len(data))
        if rv == -1:
            if self._seed_dgram_deferred + len(data) > _DATAGRAM_DEFER_LIMIT:
                self._seed_dgram_full()
                return 0
            raw = bytes(data)
            self._seed_dgram_deferred += len(raw)

            def resend() -> int:
                if self._closed:
                    return 0
                rc = int(lib.aq_send_datagram(self._endpoint.ptr, self._handle, q,
                                              ffi.from_buffer(raw), len(raw)))
                if rc != -1:
                    self._seed_dgram_deferred -= len(raw)
                return rc

            self._endpoint._defer(resend)
        elif rv == 0 and self._qlog is None and self._handshake_done:
            # the checks above hold for any datagram up to `limit` until the path changes
            # (EV_PATH resets this) or the connection closes (checked on the fast path)
            self._dg_fast = (limit, self._endpoint._native)
        if self._qlog is not None:
            self._qlog.log("transport", "datagram_data_moved", {
                "length": len(data), "from": "application", "to": "transport"})
        return len(data)

    @property
    def max_datagram_size(self) -> int:
        """Largest datagram payload :meth:`send_datagram_frame` accepts now."""
        cap = self.configuration.datagram_max_payload
        if self._path_max_datagram >= 0:
            limit = self._path_max_datagram
        else:
            limit = MAX_DATAGRAM_PAYLOAD
            if self._handshake_done:
                limit = min(limit, max(0, self._peer_max_datagram - 9))
        return limit if cap is None else min(limit, cap)

    def max_datagram_payload(self) -> int:
        """aiopquic 0.6.1's guaranteed datagram payload ceiling: :attr:`max_datagram_size`
        (what fits one packet on the current path, the peer's ``max_datagram_frame_size``
        and ours) but never above 1200 bytes, as 0.6.1 promised; 0 before the handshake or
        when either side did not enable datagrams (0.6.1's capability check).

        :attr:`max_datagram_size` is the larger, path-following figure: it starts at 1154
        bytes (a 1200-byte packet), grows as path MTU discovery finds larger packets and
        shrinks after EMSGSIZE or a black hole (a datagram accepted just before the path
        shrank is dropped and counted in :attr:`QuicConnectionStats.datagrams_dropped`)."""
        if not self._handshake_done or not self._peer_max_datagram or \
                not self.configuration.max_datagram_frame_size:
            return 0
        return min(self.max_datagram_size, 1200)

    def send_ping(self, uid: int) -> None:
        """Send a PING; :class:`PingAcknowledged` with ``uid`` follows when the peer
        acknowledges it.  Raises :class:`TypeError` / :class:`ValueError` unless ``uid`` is
        an integer in [0, 2**64), :class:`QuicConnectionError` once closed."""
        uid = check_int("uid", uid, 0, 1 << 64, high_text="2**64")
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

    def set_stream_priority(self, stream_id: int, priority: int) -> int:
        """Set the send priority of ``stream_id`` (aiopquic 0.6.1's API).

        ``priority`` is 0..255, lower is sent first: while a stream of a lower value has data
        the network thread sends nothing of a higher one.  Streams of equal priority share
        the link round robin when the value is even and in stream-id order (FIFO: the oldest
        stream first, to completion) when it is odd.  New streams get
        :meth:`set_default_stream_priority`'s value (8 unless changed).  Datagrams and stream
        data alternate whatever the priorities.

        Returns 0 when the change was posted to the network thread, as 0.6.1 did (it
        applies it, or counts it in the endpoint's ``set_priority_rejected`` counter when the
        stream is gone or was never opened by the peer), and 1 on a closed connection, where
        it does nothing.  Raises :class:`TypeError` / :class:`ValueError` for a ``stream_id``
        outside [0, 2**62) or a ``priority`` outside 0..255."""
        stream_id = check_int("stream_id", stream_id, 0, 1 << 62, high_text="2**62")
        priority = check_int("priority", priority, 0, 256)
        if self._closed:
            return 1
        self._command(lib.aq_stream_priority, stream_id, priority)
        return 0

    def set_default_stream_priority(self, priority: int) -> None:
        """Priority (0..255, see :meth:`set_stream_priority`) of the streams created from now
        on, ours and the peer's.  Raises :class:`TypeError` / :class:`ValueError` outside
        0..255; does nothing on a closed connection."""
        priority = check_int("priority", priority, 0, 256)
        if self._closed:
            return
        self._command(lib.aq_stream_priority, -1, priority)

    def get_peer_address(self) -> Optional[tuple[str, int]]:
        """The peer's (host, port), as aioquic's ``get_peer_address()``; None before it is
        known."""
        return self.peer_address

    def change_connection_id(self) -> None:
        """Switch to a new connection ID (aioquic's call).  Client: done by :meth:`migrate`
        to a new local port, since the engine (ngtcp2) takes a fresh connection ID for each
        new path and has no call to switch on the same path; the peer sees the new ID (and
        the new port).  Server, or a connection you drive yourself (sans-IO): raises
        :class:`NotImplementedError`.  Raises :class:`QuicConnectionError` once closed."""
        if self.configuration.is_client and type(self)._threaded:
            self.migrate()
            return
        raise NotImplementedError(
            "change_connection_id() is only available on a client connection of connect(): "
            "the engine takes a new connection ID when the client moves to a new path")

    _threaded = True  # the engine's network thread owns the socket (not the sans-IO face)

    def migrate(self, local_port: int = 0,
                callback: Optional[Callable[[int, Optional[str]], None]] = None) -> None:
        """*(aiopquic)* Client: move the connection to a new UDP socket bound to the same
        local address and ``local_port`` (0: any free port) -- what a phone does moving from
        Wi-Fi to mobile.  The old socket is closed at once (packets still on their way to it
        are lost and resent); the engine sends from the new one with a fresh connection ID
        and validates the path (RFC 9000 section 9), and the server follows.
        ``callback(port, error)`` runs on the event loop once done: the new local port and
        ``None``, or 0 and why it failed (a server that disabled migration, a handshake not
        confirmed yet, a port in use).  Raises :class:`RuntimeError` on a server connection
        or one you drive yourself, :class:`QuicConnectionError` once closed, and
        :class:`ValueError` / :class:`TypeError` for a port outside 0..65535."""
        local_port = check_int("local_port", local_port, 0, 65536)
        if not self.configuration.is_client or not type(self)._threaded:
            raise RuntimeError("only a client connection of connect() can migrate")
        if self._endpoint._shared:
            raise RuntimeError("a connection of a shared ClientEndpoint cannot migrate: its "
                               "socket carries other connections (use connect() without "
                               "endpoint=)")
        self._raise_if_closed()
        if callback is not None:
            self._migrate_callbacks.append(callback)
        self._command_conn(lib.aq_migrate, local_port)

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
        ``reason_phrase`` is sent UTF-8 encoded, cut to at most 1024 bytes.

        Raises :class:`TypeError` / :class:`ValueError` when ``error_code`` or ``frame_type``
        is not an integer in [0, 2**62) or ``reason_phrase`` is not a :class:`str` (checked
        before anything else: the connection stays open and can still be closed).  Does
        nothing once the connection is closed or closing.
        """
        error_code = check_error_code(error_code)
        frame_type = check_optional_varint("frame_type", frame_type)  # type: ignore[assignment]
        check_reason(reason_phrase)
        if self._closed or self._pending_close is not None:
            return
        if self._qlog is not None:
            self._qlog.log("connectivity", "close_requested", {
                "error_code": error_code, "frame_type": frame_type, "reason": reason_phrase})
        for st in self._tx.values():
            st.open = False  # no more writes: they take the slow path and raise
        if any(st.spill for st in self._tx.values()):
            self._pending_close = (error_code, frame_type, reason_phrase)
            return
        self._send_close(error_code, frame_type, reason_phrase)

    def _send_close(self, error_code: int, frame_type: Optional[int], reason: str) -> None:
        raw = check_reason(reason)
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
        self._manual_credit[stream_id] = None

    def _consumed(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` bytes of ``stream_id``: extend the peer's credit.
        ``stream_id`` -1: bytes of streams that ended (FIN received), whose credit only
        matters at the connection level (MAX_DATA): one command for many streams."""
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
            self._events = _NO_EVENTS
            return None
        if type(event) is events.StreamDataReceived and self._auto_credit and \
                event.stream_id not in self._manual_credit and event.data:
            self._consumed(event.stream_id, len(event.data))
        return event

    # ------------------------------------------------------------------ native events

    def _on_ready(self, event: Union[events.StreamDataReceived,
                                     events.DatagramFrameReceived]) -> None:
        """Queue received stream data or a datagram (the endpoint builds the event while it
        pops the native one: the hot path).  A datagram past :attr:`max_queued_events` is
        dropped and counted in :attr:`received_datagrams_dropped`."""
        if self._qlog is not None:
            if type(event) is events.StreamDataReceived:
                self._qlog_native(_native.NativeEvent(
                    _native.EV_STREAM_DATA, _native.FLAG_FIN if event.end_stream else 0,
                    self._handle, event.stream_id, 0, 0, event.data))
            else:
                self._qlog_native(_native.NativeEvent(
                    _native.EV_DATAGRAM, 0, self._handle, -1, 0, 0, event.data))
        if type(event) is events.StreamDataReceived:
            sid = event.stream_id
            if sid > self._peer_seen[sid & 3]:
                self._peer_seen[sid & 3] = sid
        elif len(self._events) >= self.max_queued_events:
            self.received_datagrams_dropped += 1  # overflow policy: see MAX_QUEUED_EVENTS
            return
        self._push_event(event)

    def _on_native(self, ev: _native.NativeEvent) -> None:
        t = ev.type
        if t == _native.EV_STREAM_DATA:
            self._on_ready(events.StreamDataReceived(
                ev.data, bool(ev.flags & _native.FLAG_FIN), ev.stream_id))
            return
        if t == _native.EV_DATAGRAM:
            self._on_ready(events.DatagramFrameReceived(ev.data))
            return
        if self._qlog is not None and t != _native.EV_CLOSED:
            self._qlog_native(ev)
        sid = ev.stream_id
        if sid >= 0 and sid > self._peer_seen[sid & 3]:
            self._peer_seen[sid & 3] = sid
        if t == _native.EV_STREAM_CLOSED:
            st = self._tx.pop(sid, None)
            if self._seed_drain_events or self._seed_polls or self._seed_armed:
                self._seed_stream_done(sid)
            if st is not None:
                st.spill.clear()
                if st.waiters:
                    self._wake(st)
                self._release_ring(st)
            # the connection-level part of pending credit still matters: send it
            self._flush_credit(sid)
            finished = self._finished
            if finished is None:
                finished = self._finished = _Finished()
            finished.ids.add(sid)
            finished.order.append(sid)
            if len(finished.order) > _FINISHED_MEMORY:
                finished.ids.discard(finished.order.popleft())
            if self._track_finished:
                # events of this stream may still wait in _events: the layer forgets its
                # reader (and manual credit) in _take_finished_streams, after delivering them
                self._finished_streams.append(sid)
            else:
                self._manual_credit.pop(sid, None)
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
            self._version = ev.code2
            self._peer_max_datagram = ev.code
            self._remote_max_datagram_frame_size = ev.code or None
            self.alpn_protocol = ev.data.decode("ascii", "replace") if ev.data else None
            self.session_resumed = bool(ev.flags & lib.AQ_HS_RESUMED)
            self.early_data_accepted = bool(ev.flags & lib.AQ_HS_EARLY_ACCEPTED)
            self.early_data_rejected = bool(ev.flags & lib.AQ_HS_EARLY_REJECTED)
            suite = ev.flags >> lib.AQ_HS_SUITE_SHIFT
            self.cipher_suite = CipherSuite(suite) if suite in _SUITES else (suite or None)
            if not self._alpn_reported:
                self._push_event(events.ProtocolNegotiated(alpn_protocol=self.alpn_protocol))
            self._alpn_reported = True
            self._push_event(events.HandshakeCompleted(
                alpn_protocol=self.alpn_protocol,
                early_data_accepted=self.early_data_accepted,
                session_resumed=self.session_resumed))
        elif t == _native.EV_SESSION_TICKET:
            self._on_session_ticket(ev.data)
        elif t == _native.EV_STREAM_RESET:
            self._push_event(events.StreamReset(error_code=ev.code, stream_id=ev.stream_id))
        elif t == _native.EV_STOP_SENDING:
            st = self._tx.get(ev.stream_id)
            if st is not None:
                st.stopped = ev.code
                st.open = False
                st.spill.clear()
                st.fin_pending = False
                self._wake(st)
            self._push_event(events.StopSendingReceived(error_code=ev.code,
                                                           stream_id=ev.stream_id))
        elif t == _native.EV_PING_ACK:
            self._push_event(events.PingAcknowledged(uid=ev.code))
        elif t == _native.EV_DGRAM_SPACE:
            self._seed_dgram_space()
        elif t == _native.EV_CLOSED:
            self._on_closed(ev)
        elif t == _native.EV_KEYLOG:
            self._endpoint._write_keylog(ev.data)
        elif t == _native.EV_PATH:
            self._path_max_datagram = ev.code2
            self._dg_fast = None  # the datagram size limit changed
        elif t == _native.EV_CONN_INFO:
            # without the unused tail of local_addr (zeros): ~80 bytes less per connection
            self._conn_info_raw = bytes(ev.data).rstrip(b"\0")
            local = _conn_info_local(ev.data)
            if local is not None and type(self)._threaded:  # sans-IO: no real address
                self._path_local = local
        elif t == _native.EV_NEW_TOKEN:
            if self._token_handler is not None:
                self._endpoint._call_user(self._token_handler, bytes(ev.data), self)
        elif t == _native.EV_PEER_ADDRESS:
            host, _, port = ev.data.decode("ascii", "replace").rpartition(" ")
            if host and host != "?" and type(self)._threaded:  # sans-IO: caller's addresses
                self.peer_address = (host, int(port or 0))
        elif t == _native.EV_MIGRATED:
            callbacks, self._migrate_callbacks = self._migrate_callbacks, []
            error = None if ev.code2 == 0 else (
                ev.data.decode("utf-8", "replace") or f"error {ev.code2}")
            new_port = int(ev.code)
            for migrated in callbacks:
                self._endpoint._call_user(functools.partial(_call_migrated, migrated, new_port),
                                          error, self)
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
                    bytes_received=raw.bytes_recv, datagrams_dropped=raw.datagrams_dropped,
                    emsgsize=raw.emsgsize, blackholes=raw.blackholes,
                    max_datagram_payload=raw.max_datagram_payload,
                    path_max_udp_payload=raw.path_max_udp_payload,
                    received_datagrams_dropped=self.received_datagrams_dropped,
                    ecn_sent=raw.ecn_sent, ecn_ect0_received=raw.ecn_ect0_recv,
                    ecn_ect1_received=raw.ecn_ect1_recv, ecn_ce_received=raw.ecn_ce_recv),
                    self)

    def _negotiated_early(self, alpn: Optional[str]) -> None:
        """Server, 0-RTT data arrives before the handshake completes: report the ALPN the
        ClientHello settled first, as aioquic does (``ProtocolNegotiated`` precedes the 0-RTT
        ``StreamDataReceived`` events; ``HandshakeCompleted`` follows them)."""
        self.alpn_protocol = alpn
        self._alpn_reported = True
        self._push_event(events.ProtocolNegotiated(alpn_protocol=alpn))

    def _on_session_ticket(self, blob: bytes) -> None:
        """A ticket for resuming later: to ``session_ticket_file`` and the handler."""
        try:
            ticket = session_ticket_from_blob(blob)
        except ValueError:  # pragma: no cover - the engine made it
            _log.warning("aiopquic: dropped a malformed session ticket from the engine")
            return
        path = self.configuration.session_ticket_file
        if path is not None:
            self._endpoint._call_user(lambda t: save_session_ticket(path, t), ticket, self)
        if self._session_ticket_handler is not None:
            self._endpoint._call_user(self._session_ticket_handler, ticket, self)

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
        self._push_event(self._close_event)
        if self._qlog is not None:
            self._qlog_end(ev, frame_type, reason)
        self._pending_close = None
        self._seed_on_closed()
        for st in self._tx.values():
            st.spill.clear()
            self._wake(st)
            if st.buf is not None:
                self._release_ring(st)
        self._tx.clear()

    def _qlog_native(self, ev: _native.NativeEvent) -> None:
        """Record one native event in this connection's qlog trace (quic/_qlog.py)."""
        assert self._qlog is not None
        t = ev.type
        log = self._qlog.log
        if t == _native.EV_STREAM_DATA:
            log("transport", "stream_data_moved", {
                "stream_id": ev.stream_id, "length": len(ev.data),
                "fin": bool(ev.flags & _native.FLAG_FIN), "from": "transport",
                "to": "application"})
        elif t == _native.EV_DATAGRAM:
            log("transport", "datagram_data_moved", {
                "length": len(ev.data), "from": "transport", "to": "application"})
        elif t == _native.EV_HANDSHAKE_DONE:
            alpn = ev.data.decode("ascii", "replace") if ev.data else None
            log("transport", "alpn_information", {"chosen_alpn": alpn})
            log("transport", "version_information", {"chosen_version": f"{ev.code2:x}"})
            log("connectivity", "connection_state_updated", {"new": "handshake_complete"})
        elif t == _native.EV_STREAM_RESET:
            log("transport", "stream_state_updated", {
                "stream_id": ev.stream_id, "new": "reset_received", "error_code": ev.code})
        elif t == _native.EV_STOP_SENDING:
            log("transport", "stream_state_updated", {
                "stream_id": ev.stream_id, "new": "stop_sending_received",
                "error_code": ev.code})
        elif t == _native.EV_STREAM_CLOSED:
            log("transport", "stream_state_updated", {"stream_id": ev.stream_id,
                                                      "new": "closed"})
        elif t == _native.EV_PATH:
            log("connectivity", "mtu_updated", {"new": ev.code,
                                                "max_datagram_payload": ev.code2})
        elif t == _native.EV_PING_ACK:
            log("recovery", "ping_acknowledged", {"uid": ev.code})
        elif t == _native.EV_NEW_TOKEN:
            log("transport", "new_token_received", {"length": len(ev.data)})
        elif t == _native.EV_SESSION_TICKET:
            log("security", "session_ticket_received", {"length": len(ev.data)})
        elif t == _native.EV_ENGINE_LOG:
            for name, data in packet_events(ev.data, dropped=ev.code):
                log("transport", name, data)
        elif t == _native.EV_CONN_INFO:
            local, remote, cids = _parse_conn_info(ev.data)
            # name the trace (and a QuicFileLogger's file) by the original destination
            # connection ID, as aioquic does
            if cids["initial"]:
                self._qlog.name(cids["initial"])
            log("transport", "parameters_set", {"owner": "local", **local})
            log("transport", "parameters_set", {"owner": "remote", **remote})
            log("connectivity", "connection_id_updated", {
                "owner": "local", "new": cids["local"].hex()})
            log("connectivity", "connection_id_updated", {
                "owner": "remote", "new": cids["remote"].hex()})

    def _qlog_end(self, ev: _native.NativeEvent, frame_type: Optional[int],
                  reason: str) -> None:
        """Log the close and end the trace; a logger that fails to write its file is
        reported like any application hook's failure, never raised into event dispatch."""
        assert self._qlog is not None
        flags = ev.flags
        closing: dict[str, Any] = {
            "owner": "local" if flags & _native.CLOSE_LOCAL else "remote",
            "reason": reason,
        }
        if flags & _native.CLOSE_APP:
            closing["application_code"] = ev.code
        else:
            closing["connection_code"] = ev.code
            if frame_type is not None:
                closing["frame_type"] = frame_type
        if flags & _native.CLOSE_IDLE:
            closing["trigger"] = "idle_timeout"
        elif flags & _native.CLOSE_HANDSHAKE_TIMEOUT:
            closing["trigger"] = "handshake_timeout"
        elif flags & _native.CLOSE_RESET:
            closing["trigger"] = "stateless_reset"
        trace = self._qlog
        self._endpoint._call_user(lambda _: trace.end(closing), None, self)

    def _abort_local(self, reason: str) -> None:
        """The endpoint is going away: the connection ends now, with no CONNECTION_CLOSE
        event to come from the engine.  Queues a :class:`ConnectionTerminated` (application
        error 0, ``reason``) so that readers and waiters learn it; later sends raise
        :class:`QuicConnectionError`."""
        if self._closed:
            return
        self._on_closed(_native.NativeEvent(
            _native.EV_CLOSED, _native.CLOSE_LOCAL | _native.CLOSE_APP, self._handle, -1, 0, 0,
            reason.encode("utf-8")))

    def _take_finished_streams(self) -> list[int]:
        """Streams the engine has closed (both directions done) since the last call, recorded
        once a layer sets ``_track_finished``.  Call it after draining :meth:`next_event`, so
        that their last events were delivered."""
        done, self._finished_streams = self._finished_streams, []
        for stream_id in done:
            self._manual_credit.pop(stream_id, None)
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
            if ev.reason_phrase.startswith("connection refused"):  # say it once
                return ev.reason_phrase
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


def _call_noarg(fn: Callable[[], None]) -> None:
    fn()


class QuicEndpoint:
    """One native endpoint (socket + network thread) and the connections it carries.

    ``on_accept(quic)`` is called for every connection a server accepts, after its handshake,
    or as soon as 0-RTT data arrives for it (``quic.alpn_protocol`` is set either way);
    ``on_events(quic)`` after native events for ``quic`` were queued.
    """

    def __init__(self, configuration: QuicConfiguration, host: str, port: int,
                 retry: Optional[bool] = None, server_name: Optional[str] = None,
                 worker: int = 0, workers: int = 1, shared: bool = False) -> None:
        """Bind ``host`` (numeric) ``port`` and load the TLS credentials (``retry``: see
        :func:`aiopquic.asyncio.serve`; ``server_name``: the client's server name, which
        picks the ticket in ``configuration.session_ticket_file``).  ``workers`` > 1
        (servers): this endpoint is worker number ``worker`` of that many sharing the port
        (SO_REUSEPORT, bound in worker order, steered by connection ID; see
        :func:`aiopquic.asyncio.serve`).  ``shared`` (clients): the endpoint carries any
        number of connections (:meth:`connect` works while it runs; its socket is never
        connected to one peer; its connections cannot migrate).

        Raises :class:`ValueError` / :class:`TypeError` for a port outside 0..65535,
        :class:`OSError` when the key log file cannot be opened, and
        :class:`~aiopquic._native.NativeError` (an :class:`OSError`) when the socket cannot
        be bound or the certificate or private key is rejected (the message names the
        files given to :meth:`QuicConfiguration.load_cert_chain`)."""
        port = check_int("port", port, 0, 65536)
        self.configuration = configuration
        self._keylog: Optional[IO[str]] = None
        self._own_keylog = False
        log = configuration.secrets_log_file
        if isinstance(log, str):
            self._keylog = _open_keylog(log)
            self._own_keylog = True
        elif log is not None:
            self._keylog = log
        try:
            config = native_config(configuration, retry, server_name)
            config["workers"] = int(workers)
            config["worker"] = int(worker)
            config["shared"] = int(bool(shared) and configuration.is_client)
            self._native = _native.Endpoint(config, host, port)
        except _native.NativeError as exc:
            if self._own_keylog and self._keylog is not None:
                self._keylog.close()
            raise _name_credentials(exc, configuration) from None
        except Exception:
            if self._own_keylog and self._keylog is not None:
                self._keylog.close()
            raise
        self.connections: dict[int, QuicConnection] = {}
        self._shared = bool(shared)
        self.on_accept: Optional[Callable[[QuicConnection], None]] = None
        self.on_events: Optional[Callable[[QuicConnection], None]] = None
        self.on_error: Optional[Callable[[BaseException, QuicConnection], None]] = None
        self._deferred: deque[Callable[[], int]] = deque()
        self._refused: set[int] = set()  # handles closed for max_connections
        self._accept_pending: set[int] = set()  # accepted, on_accept waits for the handshake
        self._closed = False
        self._poll_buf: Any = None  # aq_event[batch_size], allocated on first use
        self._ring_pool: dict[int, list[Any]] = {}  # capacity -> reusable send rings
        self._ring_pool_bytes = 0
        self._poll_addr = 0  # its address (for _events_from)
        self.batch_size = PROCESS_BATCH
        self.process_calls = 0
        """Calls of :meth:`process` that ran (each wake of the event loop's reader)."""
        """Most native events one :meth:`process` call handles (see :data:`PROCESS_BATCH`)."""

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

    def admission_stats(self) -> dict[str, int]:
        """Server admission counters: ``retries`` (Retry packets sent), ``tokens_ok``
        (Initials whose token proved the address), ``tokens_bad``, ``dropped_full`` (over
        ``max_half_open``), ``rate_limited`` (over ``handshake_rate_per_source``),
        ``half_open`` (handshakes in progress now), ``stateless_dropped``.  Raises
        :class:`RuntimeError` after :meth:`close`."""
        if self._native.ptr is None:
            raise RuntimeError("the endpoint is closed")
        stats = self._native.admit_stats()
        del stats["prio_applied"], stats["prio_rejected"], stats["stray"]
        return stats

    @property
    def stray_packets(self) -> int:
        """*(aiopquic)* Short-header packets that matched no connection of this endpoint (a
        stateless reset answers them).  With server workers, a packet the steering sent to
        the wrong worker would count here: it stays 0 when steering works."""
        if self._native.ptr is None:
            return 0
        return int(self._native.admit_stats()["stray"])

    @property
    def counters(self) -> dict[str, int]:
        """Live counts for diagnostics, under aiopquic 0.6.1's ``TransportContext.counters``
        names where one applies (``loop_callbacks``/``wake_calls``: :attr:`process_calls`;
        ``tx_event_ring_count_now``: commands waiting for room in the command ring;
        ``rx_event_drops``: received datagrams dropped by the event-queue bound; the
        ``rx_*`` ring depths are 0 -- events never wait in Python between wakes;
        ``set_priority_applied`` / ``set_priority_rejected``: stream priority commands the
        network thread applied / refused because the stream was gone, and
        ``set_priority_last_err`` 0, as 0.6.1 named them)."""
        conns = list(self.connections.values())
        native = self._native.admit_stats() if self._native.ptr is not None else {}
        return {
            "set_priority_applied": native.get("prio_applied", 0),
            "set_priority_rejected": native.get("prio_rejected", 0),
            "set_priority_last_err": 0,
            "connections": len(conns),
            "loop_callbacks": self.process_calls,
            "wake_calls": self.process_calls,
            "wake_skipped_coalesced": 0,
            "rx_notify_pending_now": 0,
            "rx_event_ring_count_now": 0,
            "rx_overflow_depth_now": 0,
            "rx_overflow_max_depth": 0,
            "rx_overflow_pushed": 0,
            "rx_event_drops": sum(q.received_datagrams_dropped for q in conns),
            "tx_event_ring_count_now": len(self._deferred),
            "tx_wrong_direction_dropped": sum(q.wrong_direction_dropped for q in conns),
        }

    def connect(self, host: str, port: int, server_name: Optional[str]) -> QuicConnection:
        """Create the client connection to ``host`` (numeric) ``port`` and start the thread.
        Raises :class:`ValueError` / :class:`TypeError` unless ``port`` is in 1..65535, and
        :class:`~aiopquic._native.NativeError` for a second connection on an endpoint that is
        not ``shared`` or an address of the other family than the socket's."""
        port = check_int("port", port, 1, 65536)
        try:
            handle = self._native.connect(host, port, server_name)
        except _native.NativeError as exc:
            if str(exc).startswith("session_ticket"):  # GnuTLS refused the ticket's data
                raise ValueError(f"QuicConfiguration.{exc}") from None
            raise
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

    def _poll(self, limit: int) -> list[Any]:
        """Pop at most ``limit`` events from the native ring (payloads copied and freed):
        stream data and datagrams as ``(handle, event)`` with the application's event
        already built (the hot path), anything else as a :class:`~aiopquic._native.NativeEvent`."""
        evs = self._poll_buf
        if evs is None or len(evs) < limit:
            evs = self._poll_buf = ffi.new("aq_event[]", limit)
            self._poll_addr = int(ffi.cast("uintptr_t", evs))
        n = lib.aq_poll_events(self._native.ptr, evs, limit)
        if _events_from is not None:  # CPython: the loop below, in C (csrc/pycodecs/events.c)
            return _events_from(self._poll_addr, n)
        out: list[Any] = []
        append = out.append
        unpack = ffi.unpack
        free = lib.aq_free
        null = ffi.NULL
        cast = ffi.cast
        stream_data = _native.EV_STREAM_DATA
        datagram = _native.EV_DATAGRAM
        fin = _native.FLAG_FIN
        for i in range(n):
            ev = evs[i]
            p = ev.data
            data = b""
            if p != null:
                data = unpack(cast("char *", p), ev.len)
                free(p)
            t = ev.type
            if t == stream_data:
                flags = ev.flags
                append((ev.conn, events.StreamDataReceived(data, flags & fin == fin,
                                                           ev.stream_id)))
            elif t == datagram:
                append((ev.conn, events.DatagramFrameReceived(data)))
            else:
                append(_native.NativeEvent(t, ev.flags, ev.conn, ev.stream_id, ev.code,
                                           ev.code2, data))
        return out

    def process(self, max_events: Optional[int] = None) -> bool:
        """Pop at most ``max_events`` (default :attr:`batch_size`) native events and
        dispatch them (call when :attr:`fileno` is readable).

        Returns True when the batch was full, so more events may be waiting: call again soon
        (on the next event loop iteration) -- the wake fd was cleared and will not signal
        them.  The asyncio and anyio adapters do this."""
        if self._closed:
            return False
        self.process_calls += 1
        limit = self.batch_size if max_events is None else max_events
        limit = check_int("max_events", limit, 1, 1 << 20)
        touched: dict[int, QuicConnection] = {}
        conns = self.connections
        accept_pending = self._accept_pending
        refused = self._refused
        batch = self._poll(limit)
        for ev in batch:
            if type(ev) is tuple:  # stream data or a datagram (see _poll)
                handle, event = ev
                quic = conns.get(handle)
                if quic is None:
                    continue
                if refused and handle in refused:
                    quic._events = _NO_EVENTS  # nobody reads a refused connection
                    continue
                quic._on_ready(event)
                touched[handle] = quic
                continue
            quic = conns.get(ev.conn)
            if quic is None:
                if ev.type == _native.EV_ACCEPTED:
                    quic = QuicConnection(configuration=self.configuration, endpoint=self,
                                          handle=ev.conn)
                    addr, _, alpn = ev.data.decode("utf-8", "replace").partition("\n")
                    host, _, port = addr.rpartition(" ")
                    quic.peer_address = (host, int(port or 0))
                    conns[ev.conn] = quic
                    most = self.configuration.max_connections
                    if most is not None and len(conns) - len(self._refused) > most:
                        # over QuicConfiguration.max_connections: refuse, never hand it out
                        self._refused.add(ev.conn)
                        quic.close(_CONNECTION_REFUSED, 0, "server at max_connections")
                        continue
                    if ev.flags & lib.AQ_ACCEPT_EARLY:
                        # 0-RTT data follows: the application takes the connection now (the
                        # ClientHello settled the ALPN) and answers before the handshake ends
                        quic._negotiated_early(alpn or None)
                        if self.on_accept is not None:
                            self._call(self.on_accept, quic)
                        continue
                    # on_accept runs once the handshake event (next in the ring) has given
                    # the connection its ALPN, so a server can choose the protocol by it
                    self._accept_pending.add(ev.conn)
                    continue
                if ev.type == _native.EV_CMD_SPACE:
                    self._on_cmd_space()
                elif ev.type == _native.EV_KEYLOG:
                    self._write_keylog(ev.data)
                elif ev.type == _native.EV_ERROR:
                    _endpoint_logger.warning("aiopquic endpoint: %s (%d so far)",
                                             ev.data.decode(errors="replace"), ev.code)
                continue
            quic._on_native(ev)
            if accept_pending and ev.conn in accept_pending and (
                    ev.type == _native.EV_HANDSHAKE_DONE or ev.type == _native.EV_CLOSED):
                accept_pending.discard(ev.conn)
                if self.on_accept is not None:
                    self._call(self.on_accept, quic)
            if refused and ev.conn in refused:
                if ev.type == _native.EV_CLOSED:
                    del conns[ev.conn]
                    self._refused.discard(ev.conn)
                else:
                    quic._events = _NO_EVENTS  # nobody reads a refused connection
                continue
            touched[ev.conn] = quic
            if ev.type == _native.EV_CLOSED:
                del conns[ev.conn]
        for quic in touched.values():
            for stream_id in list(quic._credit):
                quic._flush_credit(stream_id)
            if self.on_events is not None:
                batch_end: list[Callable[[], None]] = []
                outer, quic._batch_end = quic._batch_end, batch_end
                try:
                    self._call(self.on_events, quic)
                finally:
                    quic._batch_end = outer
                for fn in batch_end:
                    self._call_user(_call_noarg, fn, quic)
                # credit the hook returned (an H3Connection hands payload out and credits
                # it there): flush it now, since no later packet may come to flush it (a
                # sender blocked on a window under _CREDIT_BATCH would wait forever)
                for stream_id in list(quic._credit):
                    quic._flush_credit(stream_id)
        return len(batch) >= limit and not self._closed

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
            quic._seed_cmd_space()

    def _ring_new(self, cap: int) -> Any:
        """A send ring of ``cap`` bytes for a new stream: a pooled one, else a new one
        (``ffi.NULL`` when out of memory)."""
        pool = self._ring_pool.get(cap)
        if pool:
            self._ring_pool_bytes -= cap
            return pool.pop()
        return lib.aq_txbuf_new(cap)

    def _ring_done(self, buf: Any, cap: int) -> None:
        """A stream's send ring its connection has dropped: kept for the next stream when the
        network thread has let go of it too and the pool (:data:`RING_POOL_BYTES`) has room,
        else freed (freed for good once nobody holds it)."""
        if not self._closed and self._ring_pool_bytes + cap <= RING_POOL_BYTES and \
                lib.aq_txbuf_recycle(buf):
            self._ring_pool.setdefault(cap, []).append(buf)
            self._ring_pool_bytes += cap
            return
        lib.aq_txbuf_release(buf)

    def close(self) -> None:
        """Stop the network thread and free the native endpoint (idempotent).  Connections
        still open get an immediate CONNECTION_CLOSE ("endpoint closed") without waiting for
        unacknowledged data: close them first for a graceful shutdown."""
        if self._closed:
            return
        self._closed = True
        aborted = list(self.connections.values())
        for quic in aborted:
            quic._abort_local("endpoint closed")
        self.connections.clear()
        self._native.close()
        for pool in self._ring_pool.values():
            for buf in pool:
                lib.aq_txbuf_release(buf)
        self._ring_pool.clear()
        self._ring_pool_bytes = 0
        if self._own_keylog and self._keylog is not None:
            self._keylog.close()
        # Their readers and waiters learn it now (ConnectionTerminated, error 0, "endpoint
        # closed"): later sends raise QuicConnectionError, not a native-layer error.
        if self.on_events is not None:
            for quic in aborted:
                self._call(self.on_events, quic)


def _open_keylog(path: str) -> IO[str]:
    """Open the TLS key log for appending; a new file is created readable by its owner
    only (mode 0600: it holds the secrets that decrypt the traffic)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                 0o600)
    return os.fdopen(fd, "a", encoding="ascii")


def _name_credentials(exc: _native.NativeError,
                      configuration: QuicConfiguration) -> _native.NativeError:
    """Add the certificate and key file names to a native credentials error."""
    message = str(exc)
    if "certificate" not in message and "private key" not in message:
        return exc
    if configuration.certfile or configuration.keyfile:
        where = (f"certificate file {configuration.certfile!r}, "
                 f"private key file {configuration.keyfile!r}")
    else:
        where = "QuicConfiguration.certificate_chain / private_key given as bytes"
    return _native.NativeError(f"{message} ({where})")
