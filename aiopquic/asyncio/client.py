"""asyncio QUIC client: :func:`connect`."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Callable, Optional

from aiopquic.asyncio import _loop
from aiopquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicEndpoint

__all__ = ["connect"]


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    configuration: Optional[QuicConfiguration] = None,
    create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
    session_ticket_handler: Optional[Callable[..., None]] = None,
    stream_handler: Optional[QuicStreamHandler] = None,
    wait_connected: bool = True,
    local_port: int = 0,
) -> AsyncIterator[QuicConnectionProtocol]:
    """Connect to a QUIC server at ``host``:``port`` and yield the protocol.

    ``server_name`` defaults to ``host`` (used for SNI and certificate verification).  With
    ``wait_connected`` the handshake completes before the body runs; a refused, unanswered
    (``handshake_timeout``), rejected (ALPN, certificate) connection raises
    :class:`ConnectionError` with the reason.  On exit the connection is closed gracefully:
    data already written reaches the peer before CONNECTION_CLOSE.

    ``session_ticket_handler`` is accepted for aioquic compatibility and not called yet.
    """
    loop = asyncio.get_running_loop()
    if configuration is None:
        configuration = QuicConfiguration(is_client=True)
    configuration.validate()
    if not configuration.is_client:
        raise ValueError("connect() needs a client configuration (is_client=True)")
    ip, rport = await _loop.resolve(host, port)
    server_name = configuration.server_name or host
    bind = "::" if ipaddress.ip_address(ip).version == 6 else "0.0.0.0"
    endpoint = QuicEndpoint(configuration, bind, local_port)
    protocol: Optional[QuicConnectionProtocol] = None
    try:
        quic = endpoint.connect(ip, rport, server_name)
        protocol = create_protocol(quic, stream_handler=stream_handler)
        _loop.attach(endpoint, loop, lambda q: protocol)
        if wait_connected:
            try:
                await asyncio.wait_for(protocol.wait_connected(),
                                       configuration.handshake_timeout + 5.0)
            except asyncio.TimeoutError:
                raise ConnectionError(
                    f"handshake with {host}:{port} timed out after "
                    f"{configuration.handshake_timeout:g} s") from None
        yield protocol
        protocol.close()
        try:
            await asyncio.wait_for(protocol.wait_closed(),
                                   max(configuration.idle_timeout, 1.0) + 5.0)
        except asyncio.TimeoutError:
            pass
    finally:
        _loop.detach(endpoint, loop)
