"""asyncio QUIC client: :func:`connect`."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Callable, Optional

from aiopquic.asyncio import _loop
from aiopquic.asyncio._session import close_gracefully, wait_handshake
from aiopquic.asyncio._transport import remember_host
from aiopquic.asyncio.endpoint import ClientEndpoint
from aiopquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aiopquic.quic._checks import check_port
from aiopquic.quic._shared_endpoint import check_client_configuration
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicEndpoint
from aiopquic.tls import SessionTicket

__all__ = ["connect"]


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    configuration: Optional[QuicConfiguration] = None,
    create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
    session_ticket_handler: Optional[Callable[[SessionTicket], None]] = None,
    stream_handler: Optional[QuicStreamHandler] = None,
    token_handler: Optional[Callable[[bytes], None]] = None,
    wait_connected: bool = True,
    local_port: int = 0,
    endpoint: Optional[ClientEndpoint] = None,
) -> AsyncIterator[QuicConnectionProtocol]:
    """Connect to a QUIC server at ``host``:``port`` and yield the protocol.

    ``server_name`` defaults to ``host`` (used for SNI and certificate verification).  With
    ``wait_connected`` the handshake completes before the body runs; a refused, unanswered
    (``handshake_timeout``), rejected (ALPN, certificate) connection raises
    :class:`ConnectionError` with the reason.  On exit the connection is closed gracefully:
    data already written reaches the peer before CONNECTION_CLOSE.

    Raises :class:`ValueError` / :class:`TypeError` when ``port`` is not in 1..65535 or
    ``local_port`` not in 0..65535 (nothing is wrapped around), or for a server
    configuration.

    Raises :class:`TypeError` when ``host`` is not a str or ``configuration`` is not a
    :class:`QuicConfiguration` (or None).

    ``session_ticket_handler(ticket)`` is called with a :class:`aiopquic.tls.SessionTicket`
    for each session ticket the server sends: pass it as ``configuration.session_ticket`` on
    a later connection to resume the session.  With ``wait_connected=False`` and a ticket
    that allows it, stream data and datagrams written before the handshake completes go out
    as 0-RTT (see ``HandshakeCompleted.early_data_accepted``; if the server refuses them,
    the stream data is sent again after the handshake).  An exception it raises is logged.
    ``token_handler(token)`` is called with each address validation token the server sends
    (NEW_TOKEN): pass it as ``configuration.token`` on a later connection to the same server
    to skip its Retry round trip.  An exception it raises is logged, not propagated.

    *(aiopquic)* ``endpoint``: a :class:`~aiopquic.asyncio.ClientEndpoint` whose shared
    sockets and threads carry the connection (its configuration is used; ``configuration``
    and ``local_port`` must then be left out, else :class:`ValueError`).
    """
    if not isinstance(host, str):
        raise TypeError(f"connect() host must be a str, got {type(host).__name__}")
    if endpoint is not None:
        if not isinstance(endpoint, ClientEndpoint):
            raise TypeError(f"connect() endpoint must be a ClientEndpoint, "
                            f"got {type(endpoint).__name__}")
        if configuration is not None or local_port:
            raise ValueError("connect(endpoint=...) uses the endpoint's configuration and "
                             "sockets: leave configuration and local_port out")
        async with endpoint.connect(
                host, port, create_protocol=create_protocol,
                session_ticket_handler=session_ticket_handler, stream_handler=stream_handler,
                token_handler=token_handler, wait_connected=wait_connected) as shared:
            yield shared
        return
    configuration = check_client_configuration("connect()", configuration)
    loop = asyncio.get_running_loop()
    port = check_port(port, allow_zero=False)
    local_port = check_port(local_port, "local_port")
    ip, rport = await _loop.resolve(host, port)
    server_name = configuration.server_name or host
    bind = "::" if ipaddress.ip_address(ip).version == 6 else "0.0.0.0"
    own = QuicEndpoint(configuration, bind, local_port, server_name=server_name)
    remember_host(own, bind)
    protocol: Optional[QuicConnectionProtocol] = None
    try:
        quic = own.connect(ip, rport, server_name)
        quic._token_handler = token_handler
        quic._session_ticket_handler = session_ticket_handler
        protocol = create_protocol(quic, stream_handler=stream_handler)
        _loop.attach(own, loop, lambda q: protocol)
        if wait_connected:
            await wait_handshake(protocol, configuration, host, port)
        yield protocol
        await close_gracefully(protocol, configuration)
    finally:
        _loop.detach(own, loop)
