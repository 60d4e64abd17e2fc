"""asyncio QUIC server: :func:`serve`."""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

from aiopquic.asyncio import _loop
from aiopquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection, QuicEndpoint

__all__ = ["QuicServer", "serve"]


class QuicServer:
    """A listening QUIC endpoint; :meth:`close` stops it and drops its connections."""

    def __init__(self, endpoint: QuicEndpoint, loop: asyncio.AbstractEventLoop,
                 create_protocol: Callable[..., QuicConnectionProtocol],
                 stream_handler: Optional[QuicStreamHandler]) -> None:
        self._endpoint = endpoint
        self._loop = loop
        self._create_protocol = create_protocol
        self._stream_handler = stream_handler
        self._protocols: dict[int, QuicConnectionProtocol] = {}
        self._closed = False
        endpoint.on_accept = self._on_accept
        _loop.attach(endpoint, loop, self._protocol_for)

    @property
    def local_port(self) -> int:
        """The UDP port the server is bound to (useful with port 0)."""
        return self._endpoint.local_port

    @property
    def protocols(self) -> list[QuicConnectionProtocol]:
        """Protocols of the connections currently open."""
        return list(self._protocols.values())

    def _on_accept(self, quic: QuicConnection) -> None:
        self._protocols[quic._handle] = self._create_protocol(
            quic, stream_handler=self._stream_handler)

    def _protocol_for(self, quic: QuicConnection) -> Optional[QuicConnectionProtocol]:
        proto = self._protocols.get(quic._handle)
        if proto is not None and quic.closed:
            # deliver the final events, then forget the connection
            self._loop.call_soon(self._protocols.pop, quic._handle, None)
        return proto

    def close(self) -> None:
        """Stop listening and free the endpoint (idempotent).  Every open connection gets an
        immediate CONNECTION_CLOSE (application error 0, "endpoint closed") without waiting
        for unacknowledged data: close connections first for a graceful shutdown."""
        if self._closed:
            return
        self._closed = True
        _loop.detach(self._endpoint, self._loop)
        for proto in self._protocols.values():
            proto._closed.set()
        self._protocols.clear()


async def serve(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
    session_ticket_fetcher: Optional[Callable[..., None]] = None,
    session_ticket_handler: Optional[Callable[..., None]] = None,
    retry: bool = False,
    stream_handler: Optional[QuicStreamHandler] = None,
) -> QuicServer:
    """Listen for QUIC connections on ``host``:``port`` (``host`` is bound as given: use
    ``"::"`` or ``"0.0.0.0"`` explicitly for all interfaces; port 0 picks a free port, see
    :attr:`QuicServer.local_port`).

    ``create_protocol(quic, stream_handler=...)`` builds one protocol per connection once its
    handshake completes.  Raises :class:`ValueError` for a configuration without a
    certificate, :class:`OSError` when the address cannot be bound.  ``retry`` and the
    session-ticket hooks are accepted for aioquic compatibility and ignored for now.
    """
    loop = asyncio.get_running_loop()
    configuration.validate()
    if configuration.is_client:
        raise ValueError("serve() needs a server configuration (is_client=False)")
    if not configuration.certificate_chain or not configuration.private_key:
        raise ValueError("serve() needs a certificate: call configuration.load_cert_chain()")
    ip, rport = await _loop.resolve(host, port)
    endpoint = QuicEndpoint(configuration, ip, rport)
    try:
        server = QuicServer(endpoint, loop, create_protocol, stream_handler)
        endpoint.start()
    except BaseException:
        endpoint.close()
        raise
    return server
