"""asyncio QUIC server: :func:`serve`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Callable, Optional

from aiopquic.asyncio import _loop
from aiopquic.asyncio._transport import EndpointTransport, remember_host
from aiopquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aiopquic.quic._checks import check_int, check_port
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection, QuicEndpoint

__all__ = ["QuicServer", "serve"]


class QuicServer:
    """A listening QUIC endpoint (or several worker endpoints sharing the port); :meth:`close`
    stops it and drops its connections."""

    def __init__(self, endpoint: QuicEndpoint, loop: asyncio.AbstractEventLoop,
                 create_protocol: Callable[..., QuicConnectionProtocol],
                 stream_handler: Optional[QuicStreamHandler],
                 more_endpoints: Sequence[QuicEndpoint] = ()) -> None:
        self._endpoint = endpoint
        self._endpoints = [endpoint, *more_endpoints]
        self._loop = loop
        self._create_protocol = create_protocol
        self._stream_handler = stream_handler
        self._protocols: dict[QuicConnection, QuicConnectionProtocol] = {}
        self._closed = False
        for ep in self._endpoints:
            ep.on_accept = self._on_accept
            _loop.attach(ep, loop, self._protocol_for)

    @property
    def workers(self) -> list[QuicEndpoint]:
        """*(aiopquic)* The worker endpoints (one network thread and socket each) serving
        the port; one unless ``serve(workers=...)`` asked for more."""
        return list(self._endpoints)

    @property
    def local_port(self) -> int:
        """The UDP port the server is bound to (useful with port 0)."""
        return self._endpoint.local_port

    @property
    def _transport(self) -> _TransportView:
        """The server's transport, for both kinds of programs that read this private hook:
        aioquic's (an asyncio datagram transport: ``get_extra_info("sockname")``) and
        0.6.1's (its ``TransportContext``: ``counters``, ``eventfd`` and ``started``)."""
        return _TransportView(self._endpoint, self)

    @property
    def protocols(self) -> list[QuicConnectionProtocol]:
        """Protocols of the connections currently open."""
        return list(self._protocols.values())

    def admission_stats(self) -> dict[str, int]:
        """How client Initials were admitted: ``retries`` (Retry packets sent),
        ``tokens_ok``, ``tokens_bad``, ``dropped_full`` (over ``max_half_open``),
        ``rate_limited`` (over ``handshake_rate_per_source``), ``half_open`` (handshakes in
        progress now), ``stateless_dropped``.  Raises :class:`RuntimeError` once closed."""
        if self._closed:
            raise RuntimeError("the server is closed")
        total: dict[str, int] = {}
        for ep in self._endpoints:
            for key, value in ep.admission_stats().items():
                total[key] = total.get(key, 0) + value
        return total

    def _on_accept(self, quic: QuicConnection) -> None:
        self._protocols[quic] = self._create_protocol(
            quic, stream_handler=self._stream_handler)

    def _protocol_for(self, quic: QuicConnection) -> Optional[QuicConnectionProtocol]:
        proto = self._protocols.get(quic)
        if proto is not None and quic.closed:
            # deliver the final events, then forget the connection
            self._loop.call_soon(self._protocols.pop, quic, None)
        return proto

    def close(self) -> None:
        """Stop listening and free the endpoint (idempotent).  Every open connection gets an
        immediate CONNECTION_CLOSE (application error 0, "endpoint closed") without waiting
        for unacknowledged data: close connections first for a graceful shutdown."""
        if self._closed:
            return
        self._closed = True
        for ep in self._endpoints:
            _loop.detach(ep, self._loop)
        for proto in self._protocols.values():
            proto._closed.set()
        self._protocols.clear()


class _TransportView(EndpointTransport):
    """A :class:`QuicServer`'s transport: aioquic's read-only datagram transport view
    (:class:`~aiopquic.asyncio._transport.EndpointTransport`) plus the diagnostic part of
    aiopquic 0.6.1's ``TransportContext``: ``counters`` (:attr:`QuicEndpoint.counters`),
    ``eventfd`` (writing 8 bytes to it wakes the event loop's reader: a spurious wake costs
    one empty pass) and ``started``."""

    def __init__(self, endpoint: QuicEndpoint, server: QuicServer) -> None:
        super().__init__(endpoint)
        self._endpoint = endpoint
        self._server = server

    @property
    def counters(self) -> dict[str, int]:
        """See :attr:`QuicEndpoint.counters` (empty once the server is closed)."""
        return {} if self._server._closed else self._endpoint.counters

    @property
    def eventfd(self) -> int:
        """The endpoint's wake file descriptor (-1 once the server is closed)."""
        return -1 if self._server._closed else self._endpoint.fileno

    @property
    def started(self) -> bool:
        """True until the server is closed."""
        return not self._server._closed


async def serve(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
    session_ticket_fetcher: Optional[Callable[..., None]] = None,
    session_ticket_handler: Optional[Callable[..., None]] = None,
    retry: Optional[bool] = None,
    stream_handler: Optional[QuicStreamHandler] = None,
    workers: int = 1,
    worker_index: Optional[int] = None,
) -> QuicServer:
    """Listen for QUIC connections on ``host``:``port`` (``host`` is bound as given: use
    ``"::"`` or ``"0.0.0.0"`` explicitly for all interfaces; port 0 picks a free port, see
    :attr:`QuicServer.local_port`).

    ``create_protocol(quic, stream_handler=...)`` builds one protocol per connection once its
    handshake completes, or as soon as 0-RTT data arrives for it (then ``ProtocolNegotiated``
    and the 0-RTT data come before ``HandshakeCompleted``, as in aioquic).  Raises
    :class:`ValueError` for a configuration without a certificate or a ``port`` outside
    0..65535 (:class:`TypeError` if not an integer), :class:`OSError` when the address
    cannot be bound, and :class:`~aiopquic._native.NativeError` (an :class:`OSError`)
    naming the certificate and key files when GnuTLS rejects them.

    Session resumption and 0-RTT need no ticket store here: after each handshake the server
    sends one session ticket that GnuTLS encrypts under a key drawn once per
    ``configuration`` object (stateless tickets; servers made from the same object resume
    each other's), and a client that comes back with it resumes; its 0-RTT data is accepted
    unless ``configuration.early_data`` is False (GnuTLS's anti-replay check refuses a
    ClientHello it has seen within its window, and any ticket issued before this server
    started).  aioquic's ``session_ticket_fetcher`` and ``session_ticket_handler`` are
    therefore accepted for aioquic's signature and never called: the tickets never exist in
    Python on a server.  Tickets do not outlive the process (clients then fall back to a
    full handshake).

    ``retry`` chooses address validation (RFC 9000 8.1): ``True`` answers every client
    Initial without a valid token with a Retry packet (one extra round trip per handshake,
    and no connection state for forged source addresses); ``False`` never does; ``None``
    (the default) does so automatically while ``configuration.retry_threshold`` handshakes
    are in progress -- under a handshake flood.  A client that comes back with an invalid
    Retry token is closed with INVALID_TOKEN.  See :meth:`QuicServer.admission_stats`.

    ``workers`` *(aiopquic)* runs that many network threads, each with its own socket bound
    to the same port (SO_REUSEPORT): a classic BPF program attached to the group steers each
    packet by a byte of its destination connection ID, which each worker's connection IDs
    encode, so every packet of a connection reaches the thread that owns it (a client's first
    Initial, whose connection ID the client chose, lands on any worker, which then owns the
    connection).  Python still sees one server; the event loop stays one thread, so use
    workers when packet work (crypto, GSO/GRO, loss recovery) is what limits you.
    ``worker_index`` (with ``workers``) makes this process serve only that worker, for N
    processes on one port (as gunicorn-style deployments run): start them in index order
    0..N-1, since the kernel numbers the sockets of the group in the order they were bound.
    Raises :class:`ValueError` for ``workers`` outside 1..64 or ``worker_index`` outside
    0..workers-1.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(configuration, QuicConfiguration):  # dropin helper: name the culprit
        raise TypeError(f"serve() configuration must be a QuicConfiguration, "
                        f"got {type(configuration).__name__}")
    port = check_port(port)
    configuration.validate()
    if configuration.is_client:
        raise ValueError("serve() needs a server configuration (is_client=False)")
    if not configuration.certificate_chain or not configuration.private_key:
        raise ValueError("serve() needs a certificate: call configuration.load_cert_chain()")
    workers = check_int("workers", workers, 1, 65)
    if worker_index is not None:
        worker_index = check_int("worker_index", worker_index, 0, workers,
                                 high_text=f"workers ({workers})")
    ip, rport = await _loop.resolve(host, port)
    indexes = range(workers) if worker_index is None else [worker_index]
    endpoints: list[QuicEndpoint] = []
    try:
        for i in indexes:
            # bound in worker order: the kernel numbers the group's sockets that way
            endpoints.append(QuicEndpoint(configuration, ip, rport if not endpoints else
                                          endpoints[0].local_port, retry=retry, worker=i,
                                          workers=workers))
        remember_host(endpoints[0], ip)  # dropin helper: server._transport (aioquic's hook)
        server = QuicServer(endpoints[0], loop, create_protocol, stream_handler,
                            endpoints[1:])
        for ep in endpoints:
            ep.start()
    except BaseException:
        for ep in endpoints:
            ep.close()
        raise
    return server
