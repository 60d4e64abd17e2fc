"""anyio shared client endpoints: many client connections on a few network threads.

The anyio face of :class:`aiopquic.asyncio.ClientEndpoint` (see docs/scale.md)::

    async with ClientEndpoint(configuration, threads=2) as endpoint:
        async with endpoint.connect("example.com", 4433) as conn:
            stream = await conn.open_stream()

The endpoint is an async context manager: its network threads are driven by tasks of its
own task group, and leaving the block closes every socket and thread.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Callable, Optional

import anyio
import anyio.abc

from aiopquic.anyio._connection import Connection
from aiopquic.anyio._io import drive, resolve
from aiopquic.quic._checks import check_port
from aiopquic.quic._shared_endpoint import SharedEndpoints
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection, QuicConnectionError, QuicEndpoint
from aiopquic.tls import SessionTicket

__all__ = ["ClientEndpoint"]


class ClientEndpoint(SharedEndpoints):
    """Client connections sharing ``threads`` network threads and their sockets (one
    unconnected UDP socket per thread and address family, opened on first use).

    Arguments and limits are those of :class:`aiopquic.asyncio.ClientEndpoint`: the
    configuration applies to every connection (none with ``session_ticket``,
    ``session_ticket_file`` or ``token``); a peer that is not there fails a connection by
    ``handshake_timeout``.  Use it as ``async with``; :meth:`connect` outside the block
    raises :class:`RuntimeError`.
    """

    def __init__(self, configuration: Optional[QuicConfiguration] = None, *,
                 threads: int = 1, local_host: str = "0.0.0.0", local_port: int = 0) -> None:
        super().__init__(configuration, threads, local_host, local_port)
        self._connections: dict[QuicConnection, Connection] = {}
        self._tg: Optional[anyio.abc.TaskGroup] = None
        self._closed = False

    async def __aenter__(self) -> ClientEndpoint:
        if self._tg is not None or self._closed:
            raise RuntimeError("a ClientEndpoint is entered once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(self, *exc: Any) -> Optional[bool]:
        tg, self._tg = self._tg, None
        self._closed = True
        for conn in list(self._connections.values()):
            conn._abort()
        if tg is not None:
            tg.cancel_scope.cancel()
            try:
                return await tg.__aexit__(*exc)
            finally:
                self._close_endpoints()
        self._close_endpoints()
        return None

    def _close_endpoints(self) -> None:
        for ep in self._take_endpoints():
            ep.close()  # after their drive() tasks ended (see drive())
        self._connections.clear()

    def _on_events(self, quic: QuicConnection) -> None:
        conn = self._connections.get(quic)
        if conn is not None:
            conn._on_events()

    def _endpoint_for(self, version: int) -> QuicEndpoint:
        tg = self._tg
        assert tg is not None

        def started(ep: QuicEndpoint, host: str) -> None:
            ep.on_events = self._on_events
            tg.start_soon(drive, ep)

        return self._pick(version, started)

    @asynccontextmanager
    async def connect(
        self,
        host: str,
        port: int,
        *,
        session_ticket_handler: Optional[Callable[[SessionTicket], None]] = None,
        server_name: Optional[str] = None,
    ) -> AsyncIterator[Connection]:
        """Connect to ``host``:``port`` through this endpoint and yield the
        :class:`~aiopquic.anyio.Connection` once the handshake completed, as
        :func:`aiopquic.anyio.connect` does (same errors; ``server_name`` defaults to the
        configuration's, else ``host``).  Leaving the block normally closes the connection
        gracefully; with an exception, at once."""
        if self._tg is None:
            raise RuntimeError("ClientEndpoint.connect() needs `async with ClientEndpoint()`"
                               " around it (the endpoint is closed or not entered)")
        if not isinstance(host, str):
            raise TypeError(f"connect() host must be a str, got {type(host).__name__}")
        port = check_port(port, allow_zero=False)
        ip, rport = await resolve(host, port)
        version = ipaddress.ip_address(ip).version
        name = server_name or self.configuration.server_name or host
        endpoint = self._endpoint_for(version)
        quic = endpoint.connect(ip, rport, name)
        quic._session_ticket_handler = session_ticket_handler
        conn = Connection(quic, endpoint, local_host=self._local_host_for(version))
        self._connections[quic] = conn
        try:
            timeout = self.configuration.handshake_timeout
            try:
                with anyio.fail_after(timeout + 5.0):
                    await conn._wait_connected()
            except TimeoutError:
                raise QuicConnectionError(
                    f"handshake with {host}:{port} timed out after {timeout:g} s") from None
            except QuicConnectionError as exc:
                raise QuicConnectionError(f"cannot connect to {host}:{port}: {exc}",
                                          exc.error_code, exc.reason_phrase) from None
            yield conn
            await conn.aclose()
        finally:
            if not quic.closed:
                conn._fail(0, "connection abandoned")
            self._connections.pop(quic, None)
