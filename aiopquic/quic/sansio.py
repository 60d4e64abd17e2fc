"""aioquic's sans-IO connection API over the native engine.

``QuicConnection(configuration=...)`` built by user code, without an endpoint, is a
:class:`SansioQuicConnection`: a connection that owns no socket, no thread and no clock.  The
caller moves the datagrams and the time, as with :class:`aioquic.quic.connection.QuicConnection`::

    quic = QuicConnection(configuration=config)          # a client
    quic.connect(addr, now=loop.time())
    for data, addr in quic.datagrams_to_send(now=loop.time()):
        sock.sendto(data, addr)
    ...
    quic.receive_datagram(data, addr, now=loop.time())   # what the socket received
    while (event := quic.next_event()) is not None: ...
    timer = quic.get_timer()                             # call handle_timer(now) then

A server creates one per new connection, with the destination connection ID of the client's
first Initial (``original_destination_connection_id``), and routes later datagrams to it by
:attr:`SansioQuicConnection.host_cid` and the IDs of :class:`ConnectionIdIssued` events (the
IDs are :attr:`QuicConfiguration.connection_id_length` bytes long).

The connection core is the same native code the threaded endpoint drives (packets, streams,
flow control, loss recovery, congestion control, closing), so every stream, datagram, ping,
key-update and close call of :class:`~aiopquic.quic.connection.QuicConnection` works the
same; only the driver differs: here each call runs to completion on the caller's thread and
packets leave only through :meth:`~SansioQuicConnection.datagrams_to_send`.

Times are seconds on any monotonic clock (floats, as aioquic); addresses are whatever the
caller's socket uses (tuples): they are handed back unchanged with the datagrams to send.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable
from typing import IO, Any, Callable, Optional, cast

from aiopquic import _native
from aiopquic.quic import events
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import (
    QuicConnection,
    _name_credentials,
    _open_keylog,
    native_config,
    new_connection_id,
)

__all__ = ["SansioQuicConnection", "NetworkAddress"]

NetworkAddress = Any
"""An address as the caller's socket gives it (aioquic's ``NetworkAddress``: a tuple)."""

_EPOCH_NS = 1 << 40  # the caller's time 0.0 (times are offset so that 0 and a little below work)
_MAX_ADDRESSES = 64  # distinct peer addresses remembered (migration, NAT rebinding)
_STATE_ENDED = 4


def _ns(now: float) -> int:
    t = int(now * 1e9) + _EPOCH_NS
    return t if t > 0 else 1



_TLS_FIELDS = ("is_server", "cert_pem", "key_pem", "key_password", "ca_file", "ca_path",
               "ca_pem", "verify_peer")
_CREDS_CACHE: OrderedDict[tuple[Any, ...], _native.Credentials] = OrderedDict()
_CREDS_CACHE_SIZE = 8


def _file_stamp(path: Optional[str]) -> Any:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _shared_credentials(config: dict[str, Any]) -> _native.Credentials:
    """Credentials for ``config``'s TLS fields, loaded once and shared by every sans-IO
    connection that has the same fields (a server parses its key once, not per client).
    A CA file or directory that changed on disk (mtime, size, inode) is loaded again.
    Raises :class:`~aiopquic._native.NativeError` as loading them for one connection does."""
    key = tuple(config.get(f) for f in _TLS_FIELDS) + (
        _file_stamp(config.get("ca_file")), _file_stamp(config.get("ca_path")))
    creds = _CREDS_CACHE.get(key)
    if creds is None:
        creds = _native.Credentials(config)
        _CREDS_CACHE[key] = creds
        if len(_CREDS_CACHE) > _CREDS_CACHE_SIZE:
            _CREDS_CACHE.popitem(last=False)
    else:
        _CREDS_CACHE.move_to_end(key)
    return creds


class _Driver:
    """What :class:`QuicConnection` needs from its driver, for the synchronous engine."""

    def __init__(self, configuration: QuicConfiguration, engine: _native.SansioEngine) -> None:
        self.engine = engine
        self._native = engine  # QuicEndpoint's name for it (the datagram fast path)
        self._keylog: Optional[IO[str]] = None
        self._own_keylog = False
        log = configuration.secrets_log_file
        if isinstance(log, str):
            self._keylog = _open_keylog(log)
            self._own_keylog = True
        elif log is not None:
            self._keylog = log

    @property
    def ptr(self) -> Any:
        return self.engine.ptr

    def _defer(self, fn: Callable[[], int]) -> None:
        fn()  # commands never wait for ring space here: they apply at once

    def _ring_new(self, cap: int) -> Any:
        """A new stream's send ring (no pool here: one connection per driver)."""
        return _native.lib.aq_txbuf_new(cap)

    def _ring_done(self, buf: Any, cap: int) -> None:
        _native.lib.aq_txbuf_release(buf)

    def _write_keylog(self, line: bytes) -> None:
        if self._keylog is not None:
            self._keylog.write(line.decode("ascii", "replace") + "\n")
            self._keylog.flush()

    def _call_user(self, fn: Callable[[Any], None], arg: Any, quic: QuicConnection) -> None:
        fn(arg)

    def close(self) -> None:
        self.engine.close()
        if self._own_keylog and self._keylog is not None:
            self._keylog.close()
            self._keylog = None


class SansioQuicConnection(QuicConnection):
    """One QUIC connection the caller drives: aioquic 1.7.2's sans-IO ``QuicConnection``.

    Client: ``configuration.is_client`` and no ``original_destination_connection_id``, then
    :meth:`connect`.  Server: ``original_destination_connection_id`` is the destination
    connection ID of the client's first Initial; the connection starts with the first
    datagram given to :meth:`receive_datagram`.  ``retry_source_connection_id``,
    ``session_ticket_fetcher`` and ``token_handler`` are accepted for aioquic's signature
    (Retry and tokens are not offered here).  A client's ``session_ticket_handler`` is
    called with each :class:`aiopquic.tls.SessionTicket` the server sends, and
    ``configuration.session_ticket`` resumes (with 0-RTT) as on the socket driver.  Server
    connections built from one configuration object share its ticket key, so a client
    resumes on a later connection; they refuse 0-RTT (each connection is an engine of its
    own, with no anti-replay state shared between them), so a client's early data is sent
    again after the handshake.

    Raises :class:`ValueError` as aioquic does (a client given an original destination
    connection ID, a server without one or without a certificate), and
    :class:`~aiopquic._native.NativeError` when the TLS material is rejected.
    """


    _threaded = False  # the caller owns the socket: it moves it itself
    def __init__(self, *, configuration: QuicConfiguration,
                 original_destination_connection_id: Optional[bytes] = None,
                 retry_source_connection_id: Optional[bytes] = None,
                 session_ticket_fetcher: Optional[Callable[..., Any]] = None,
                 session_ticket_handler: Optional[Callable[..., Any]] = None,
                 token_handler: Optional[Callable[..., Any]] = None,
                 endpoint: Any = None, handle: int = 1) -> None:
        configuration.validate()
        if configuration.is_client:
            if original_destination_connection_id is not None:
                raise ValueError("Cannot set original_destination_connection_id for a client")
            if retry_source_connection_id is not None:
                raise ValueError("Cannot set retry_source_connection_id for a client")
        else:
            if token_handler is not None:
                raise ValueError("Cannot set `token_handler` for a server")
            if not configuration.certificate_chain:
                raise ValueError("SSL certificate is required for a server")
            if not configuration.private_key:
                raise ValueError("SSL private key is required for a server")
            if original_destination_connection_id is None:
                raise ValueError("original_destination_connection_id is required for a server")
        cid_len = int(configuration.connection_id_length)
        host_cid = new_connection_id(configuration)
        config = native_config(configuration)
        config["cid_len"] = cid_len
        if not configuration.is_client:
            # each connection here is its own engine: GnuTLS's anti-replay store would see
            # one ClientHello each, so a server connection refuses 0-RTT (resumption works:
            # connections of one configuration share its ticket key)
            config["no_early_data"] = 1
        try:
            engine = _native.SansioEngine(config, host_cid, _shared_credentials(config))
        except _native.NativeError as exc:
            raise _name_credentials(exc, configuration) from None
        driver = _Driver(configuration, engine)
        super().__init__(configuration=configuration, endpoint=cast(Any, driver), handle=1)
        self._driver = driver
        self._engine = engine
        self.host_cid: bytes = host_cid
        """The connection ID the peer uses to reach us now (route datagrams by it and by
        those of :class:`~aiopquic.quic.events.ConnectionIdIssued`)."""
        if original_destination_connection_id is None:
            original_destination_connection_id = os.urandom(max(8, cid_len))
        self._original_destination_connection_id = bytes(original_destination_connection_id)
        self._issued: list[bytes] = [host_cid]  # ours, reported to the caller, oldest first
        self._held_close: Optional[events.ConnectionTerminated] = None
        if configuration.is_client:
            self._session_ticket_handler = session_ticket_handler
        self._connect_called = False
        self._addr_ids: OrderedDict[Hashable, int] = OrderedDict()
        self._addrs: dict[int, NetworkAddress] = {}
        self._next_addr = 1

    # ------------------------------------------------------------------ introspection

    @property
    def original_destination_connection_id(self) -> bytes:
        """The destination connection ID of the client's first Initial."""
        return self._original_destination_connection_id

    # ------------------------------------------------------------------ addresses, time

    def _addr_id(self, addr: NetworkAddress) -> int:
        key = tuple(addr) if isinstance(addr, list) else addr
        aid = self._addr_ids.get(key)
        if aid is not None:
            self._addr_ids.move_to_end(key)
            return aid
        aid = self._next_addr
        self._next_addr = self._next_addr + 1 if self._next_addr < 0xFFFFFFFF else 1
        self._addr_ids[key] = aid
        self._addrs[aid] = addr
        if len(self._addr_ids) > _MAX_ADDRESSES:
            _, old = self._addr_ids.popitem(last=False)
            self._addrs.pop(old, None)
        return aid

    # ------------------------------------------------------------------ aioquic's I/O API

    def connect(self, addr: NetworkAddress, now: float) -> None:
        """Client: start the handshake with the server at ``addr`` (once)."""
        if not self._is_client:
            raise RuntimeError("connect() can only be called for clients")
        if self._connect_called:
            raise RuntimeError("connect() can only be called once")
        self._connect_called = True
        self.peer_address = addr
        try:
            self._engine.connect(self._addr_id(addr), self.configuration.server_name,
                                 self._original_destination_connection_id, _ns(now))
        except _native.NativeError as exc:
            if str(exc).startswith("session_ticket"):  # GnuTLS refused the ticket's data
                raise ValueError(f"QuicConfiguration.{exc}") from None
            raise
        finally:
            self._pump()

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        """Handle one datagram received from ``addr``.  A datagram the connection cannot
        use (garbage, another connection's, a server's first datagram that is not a valid
        client Initial) is dropped."""
        if self._engine.ptr is None:
            return
        if self.peer_address is None:
            self.peer_address = addr
        self._engine.receive(bytes(data), self._addr_id(addr), 0, _ns(now))
        self._pump()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """The datagrams to send now, with their destination addresses."""
        if self._engine.ptr is None:
            return []
        out = self._engine.transmit(_ns(now))
        self._pump()
        addrs = self._addrs
        return [(data, addrs[aid]) for data, aid in out if aid in addrs]

    def get_timer(self) -> Optional[float]:
        """When :meth:`handle_timer` must be called next, or ``None``."""
        if self._engine.ptr is None:
            return None
        t = self._engine.expiry()
        if t == _native.NO_EXPIRY:
            return None
        return (t - _EPOCH_NS) / 1e9

    def handle_timer(self, now: float) -> None:
        """Run what is due at ``now`` (retransmissions, acknowledgements, idle timeout, the
        end of the closing period); then call :meth:`datagrams_to_send`."""
        if self._engine.ptr is None:
            return
        self._engine.expire(_ns(now))
        self._pump()

    # ------------------------------------------------------------------ events

    def _pump(self) -> None:
        for ev in self._engine.poll():
            t = ev.type
            if t == _native.EV_CID_ISSUED:
                if ev.data not in self._issued:
                    self._issued.append(ev.data)
                    self._push_event(events.ConnectionIdIssued(connection_id=ev.data))
            elif t == _native.EV_CID_RETIRED:
                if ev.data in self._issued:
                    self._issued.remove(ev.data)
                    if ev.data == self.host_cid and self._issued:
                        self.host_cid = self._issued[0]
                    self._push_event(events.ConnectionIdRetired(connection_id=ev.data))
            else:
                self._on_native(ev)
        if self._held_close is not None and self._engine.state() == _STATE_ENDED:
            # aioquic reports the end once the closing or draining period is over
            self._push_event(self._held_close)
            self._held_close = None

    def _on_closed(self, ev: _native.NativeEvent) -> None:
        super()._on_closed(ev)
        if self._events and self._events[-1] is self._close_event:
            self._events.pop()
            self._held_close = self._close_event

    def free(self) -> None:
        """Release the native connection now (nothing more is sent): a connection still open
        ends with a :class:`ConnectionTerminated` (application error 0), sends raise
        :class:`~aiopquic.quic.connection.QuicConnectionError` and the I/O calls return
        empty results.  Also done when the object is garbage collected."""
        if self._engine.ptr is None:
            return
        self._abort_local("connection released")
        if self._held_close is not None:
            self._push_event(self._held_close)
            self._held_close = None
        self._driver.close()

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self._driver.close()
        except Exception:
            pass
