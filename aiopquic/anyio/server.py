"""anyio QUIC server: :func:`serve`."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Callable

import anyio
from anyio.abc import TaskGroup, TaskStatus

from aiopquic.anyio._connection import Connection
from aiopquic.anyio._io import drive, resolve
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection, QuicEndpoint

__all__ = ["Server", "serve"]

ConnectionHandler = Callable[[Connection], Awaitable[object]]


class Server:
    """A running :func:`serve`: passed to ``task_status.started()``."""

    def __init__(self, endpoint: QuicEndpoint) -> None:
        self._endpoint = endpoint
        self._connections: dict[int, Connection] = {}

    @property
    def local_port(self) -> int:
        """The UDP port the server is bound to (useful with port 0)."""
        return self._endpoint.local_port

    @property
    def connections(self) -> list[Connection]:
        """The connections currently open."""
        return list(self._connections.values())

    def _on_events(self, quic: QuicConnection) -> None:
        connection = self._connections.get(quic._handle)
        if connection is None:
            return
        connection._on_events()
        if quic.closed:
            del self._connections[quic._handle]


async def _run_handler(handler: ConnectionHandler, connection: Connection) -> None:
    await handler(connection)
    await connection.aclose()


async def serve(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    handler: ConnectionHandler,
    task_status: TaskStatus[Server] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept QUIC connections on ``host``:``port`` and run ``await handler(connection)``
    for each, in a task group, until cancelled.

    ``host`` is bound as given (use ``"::"`` or ``"0.0.0.0"`` for all interfaces); port 0
    picks a free port.  Start it with ``await task_group.start(serve, ...)`` (or
    ``functools.partial``) to get the :class:`Server` (``server.local_port``) once it
    listens.

    The handler receives a :class:`Connection` once its handshake has completed.  When the
    handler returns, the connection is closed gracefully.  Structured concurrency: an
    exception in a handler cancels every other handler and propagates out of ``serve()``
    (inside an exception group, as with any anyio task group) -- catch exceptions in the
    handler if one connection's failure must not stop the server.  Cancelling ``serve()``
    cancels every handler and closes every connection (CONNECTION_CLOSE with application
    error 0, "endpoint closed").  Raises :class:`ValueError` for a client configuration or
    one without a certificate and :class:`OSError` when the address cannot be bound.
    """
    configuration.validate()
    if configuration.is_client:
        raise ValueError("serve() needs a server configuration (is_client=False)")
    if not configuration.certificate_chain or not configuration.private_key:
        raise ValueError("serve() needs a certificate: call configuration.load_cert_chain()")
    ip, rport = await resolve(host, port)
    endpoint = QuicEndpoint(configuration, ip, rport)
    server = Server(endpoint)
    try:
        async with anyio.create_task_group() as tg:

            def on_accept(quic: QuicConnection, tg: TaskGroup = tg) -> None:
                connection = Connection(quic, endpoint)
                server._connections[quic._handle] = connection
                tg.start_soon(_run_handler, handler, connection,
                              name=f"aiopquic handler {quic.peer_address}")

            endpoint.on_accept = on_accept
            endpoint.on_events = server._on_events
            endpoint.start()
            tg.start_soon(drive, endpoint, name="aiopquic endpoint")
            task_status.started(server)
    finally:
        endpoint.on_accept = None
        endpoint.on_events = None
        for connection in server._connections.values():
            connection._abort()
        server._connections.clear()
        endpoint.close()
