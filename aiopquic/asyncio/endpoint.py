"""Shared client endpoints: many client connections on a few sockets and network threads.

``connect()`` gives every connection its own UDP socket and network thread, which is what
one connection wants (its own core, ICMP errors seen at once, migration).  A process that
holds hundreds or thousands of client connections -- a relay dialling many origins, a load
generator -- shares them instead::

    async with ClientEndpoint(configuration, threads=2) as endpoint:
        async with endpoint.connect("example.com", 4433) as protocol:
            ...
        # or: async with connect("example.com", 4433, endpoint=endpoint) as protocol:

Each of the ``threads`` network threads owns one unconnected UDP socket per address family
(created on first use) and carries any number of connections, told apart by connection ID;
a new connection goes to the thread with the fewest.  The configuration is the endpoint's:
every connection uses its TLS settings, ALPN and transport parameters (``server_name``
defaults to the host given to :meth:`ClientEndpoint.connect`).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Callable, Optional

from aiopquic.asyncio import _loop
from aiopquic.asyncio._session import close_gracefully, wait_handshake
from aiopquic.asyncio._transport import remember_host
from aiopquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aiopquic.quic._checks import check_port
from aiopquic.quic._shared_endpoint import SharedEndpoints
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection, QuicEndpoint
from aiopquic.tls import SessionTicket

__all__ = ["ClientEndpoint"]


class ClientEndpoint(SharedEndpoints):
    """Client connections sharing ``threads`` network threads and their sockets.

    ``configuration`` (default: ``QuicConfiguration(is_client=True)``) applies to every
    connection; it may not carry a ``session_ticket``, ``session_ticket_file`` or ``token``,
    which belong to one server (use :func:`aiopquic.asyncio.connect` without ``endpoint=``
    for those).  ``local_host`` binds the IPv4 sockets (default ``"0.0.0.0"``; IPv6 sockets
    bind ``"::"``), ``local_port`` the first thread's IPv4 socket (0: any; other sockets
    always take any port).

    Connections of a shared endpoint cannot :meth:`~QuicConnectionProtocol.migrate` (the
    socket carries others), and a peer that is not there (an ICMP port unreachable) fails
    them by ``handshake_timeout`` rather than at once.  Raises :class:`TypeError` /
    :class:`ValueError` for a bad argument or a server configuration; binding errors raise
    :class:`OSError` from :meth:`connect` (sockets open on first use).
    """

    def __init__(self, configuration: Optional[QuicConfiguration] = None, *,
                 threads: int = 1, local_host: str = "0.0.0.0", local_port: int = 0) -> None:
        super().__init__(configuration, threads, local_host, local_port)
        self._protocols: dict[QuicConnection, QuicConnectionProtocol] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closed = False

    def _endpoint_for(self, version: int, loop: asyncio.AbstractEventLoop) -> QuicEndpoint:
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a ClientEndpoint is used from the event loop that first "
                               "connected through it")

        def started(ep: QuicEndpoint, host: str) -> None:
            remember_host(ep, host)
            _loop.attach(ep, loop, self._protocols.get)

        return self._pick(version, started)

    @asynccontextmanager
    async def connect(
        self,
        host: str,
        port: int,
        *,
        create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
        session_ticket_handler: Optional[Callable[[SessionTicket], None]] = None,
        stream_handler: Optional[QuicStreamHandler] = None,
        token_handler: Optional[Callable[[bytes], None]] = None,
        wait_connected: bool = True,
        server_name: Optional[str] = None,
    ) -> AsyncIterator[QuicConnectionProtocol]:
        """Connect to ``host``:``port`` through this endpoint and yield the protocol, as
        :func:`aiopquic.asyncio.connect` does (same arguments and errors; ``server_name``
        defaults to the configuration's, else ``host``).  Raises :class:`RuntimeError` once
        the endpoint is closed."""
        if self._closed:
            raise RuntimeError("ClientEndpoint is closed")
        if not isinstance(host, str):
            raise TypeError(f"connect() host must be a str, got {type(host).__name__}")
        port = check_port(port, allow_zero=False)
        loop = asyncio.get_running_loop()
        ip, rport = await _loop.resolve(host, port)
        name = server_name or self.configuration.server_name or host
        endpoint = self._endpoint_for(ipaddress.ip_address(ip).version, loop)
        quic = endpoint.connect(ip, rport, name)
        quic._token_handler = token_handler
        quic._session_ticket_handler = session_ticket_handler
        protocol = create_protocol(quic, stream_handler=stream_handler)
        self._protocols[quic] = protocol
        try:
            if wait_connected:
                await wait_handshake(protocol, self.configuration, host, port)
            yield protocol
            await close_gracefully(protocol, self.configuration)
        finally:
            if not quic.closed:
                quic.close(0, None, "connection abandoned")
            self._protocols.pop(quic, None)

    def close(self) -> None:
        """Close every socket and thread (idempotent).  Connections still open end at once
        with CONNECTION_CLOSE ("endpoint closed"): leave their ``connect()`` blocks first
        for a graceful close."""
        if self._closed:
            return
        self._closed = True
        for ep in self._take_endpoints():
            _loop.detach(ep, self._loop)
        self._protocols.clear()

    async def __aenter__(self) -> ClientEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
