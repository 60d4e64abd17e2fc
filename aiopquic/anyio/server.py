"""anyio QUIC server: :func:`create_listener`, :func:`serve` and the :class:`Server`
listener."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Callable, Optional

import anyio
from anyio.abc import Listener, SocketAttribute, TaskGroup, TaskStatus

from aiopquic.anyio._connection import Connection, ConnectionClosedError
from aiopquic.anyio._io import drive, resolve
from aiopquic.quic._checks import check_int, check_port
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection, QuicEndpoint

if sys.version_info >= (3, 11):
    _Group = BaseExceptionGroup  # noqa: F821 - a builtin since 3.11
else:  # pragma: no cover - Python < 3.11
    from exceptiongroup import BaseExceptionGroup as _Group

__all__ = ["HANDLER_ERROR_CODE", "ConnectionHandler", "Server", "create_listener", "serve"]

ConnectionHandler = Callable[[Connection], Awaitable[object]]

HANDLER_ERROR_CODE = 0x1
"""Application error code of the CONNECTION_CLOSE sent when a handler fails (on an HTTP/3
connection ``H3_INTERNAL_ERROR``, 0x102, instead)."""

_H3_INTERNAL_ERROR = 0x102
_log = logging.getLogger("aiopquic.anyio")


def _only(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """True if ``exc`` (or every exception inside an exception group) is one of ``kinds``."""
    if isinstance(exc, _Group):
        return all(_only(inner, kinds) for inner in exc.exceptions)
    return isinstance(exc, kinds)


def _error_code(connection: Connection) -> int:
    alpn = connection.alpn_protocol or ""
    return _H3_INTERNAL_ERROR if alpn.startswith("h3") else HANDLER_ERROR_CODE


def _peer(connection: Connection) -> str:
    peer = connection.peer_address
    return f"{peer[0]}:{peer[1]}" if peer else "?"


async def _run_guarded(handler: ConnectionHandler, connection: Connection) -> None:
    """Run ``handler``; one connection's failure never reaches the other connections.

    The peer closing (``anyio.EndOfStream`` after a clean close, ``ConnectionClosedError``
    after an error close) ends the handler quietly (the latter is logged at INFO); any other
    exception is logged with its traceback and the connection is closed with
    :data:`HANDLER_ERROR_CODE`."""
    try:
        await handler(connection)
    except Exception as exc:
        if _only(exc, (anyio.EndOfStream,)):
            pass
        elif _only(exc, (anyio.EndOfStream, ConnectionClosedError)):
            _log.info("connection from %s ended: %s", _peer(connection), exc)
        elif _only(exc, (anyio.EndOfStream, anyio.ClosedResourceError)) \
                and connection._local_close:
            pass  # the handler closed the connection itself and then used it
        else:
            _log.error("connection handler failed for %s; closing that connection",
                       _peer(connection), exc_info=exc)
            connection._fail(_error_code(connection), "internal error in the handler")
            return
    await connection.aclose()


async def _run_crash_through(handler: ConnectionHandler, connection: Connection) -> None:
    """Run ``handler`` in the caller's task group: an exception closes the connection with
    :data:`HANDLER_ERROR_CODE` and propagates into that group (``anyio.EndOfStream`` from a
    clean close is not an error)."""
    try:
        await handler(connection)
    except Exception as exc:
        if not _only(exc, (anyio.EndOfStream,)):
            connection._fail(_error_code(connection), "internal error in the handler")
            raise
    await connection.aclose()


class Server(Listener[Connection]):
    """A bound QUIC server endpoint, as an :class:`anyio.abc.Listener` of
    :class:`Connection` objects.

    Made by :func:`create_listener` (or passed to ``task_status.started()`` by
    :func:`serve`).  :meth:`serve` accepts connections until cancelled or :meth:`aclose`.
    Typed attributes: anyio's :class:`~anyio.abc.SocketAttribute` ``local_address``,
    ``local_port`` and ``family``.
    """

    def __init__(self, endpoint: QuicEndpoint, local_host: str,
                 connection_factory: Callable[..., Connection] = Connection,
                 more_endpoints: Sequence[QuicEndpoint] = ()) -> None:
        self._factory = connection_factory
        self._endpoint = endpoint
        self._endpoints = [endpoint, *more_endpoints]
        self._local_host = local_host
        self._connections: dict[QuicConnection, Connection] = {}
        self._scope: Optional[anyio.CancelScope] = None
        self._done: Optional[anyio.Event] = None
        self._closed = False

    @property
    def local_port(self) -> int:
        """The UDP port the server is bound to (useful with port 0)."""
        return self._endpoint.local_port

    @property
    def workers(self) -> list[QuicEndpoint]:
        """*(aiopquic)* The worker endpoints serving the port (one unless ``workers=``)."""
        return list(self._endpoints)

    @property
    def connections(self) -> list[Connection]:
        """The connections currently open."""
        return list(self._connections.values())

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """``local_address``, ``local_port`` and ``family`` of the UDP socket."""
        family = socket.AF_INET6 if ipaddress.ip_address(
            self._local_host.split("%", 1)[0]).version == 6 else socket.AF_INET
        return {
            SocketAttribute.family: lambda: family,
            SocketAttribute.local_address: lambda: (self._local_host, self.local_port),
            SocketAttribute.local_port: lambda: self.local_port,
        }

    def _on_events(self, quic: QuicConnection) -> None:
        connection = self._connections.get(quic)
        if connection is None:
            return
        connection._on_events()
        if quic.closed:
            del self._connections[quic]

    async def serve(self, handler: ConnectionHandler,
                    task_group: Optional[TaskGroup] = None) -> None:
        """Accept connections and run ``await handler(connection)`` for each, until
        cancelled or :meth:`aclose`; then every connection is closed (CONNECTION_CLOSE,
        application error 0, "endpoint closed") and the socket is released.

        The handler gets the :class:`Connection` once its handshake has completed; when it
        returns, the connection is closed gracefully.  Without ``task_group``, handlers run
        in a task group of this call and a failing handler does not stop the server: its
        exception is logged (logger ``aiopquic.anyio``) and only its connection is closed,
        with :data:`HANDLER_ERROR_CODE` (``H3_INTERNAL_ERROR`` on HTTP/3).  With
        ``task_group`` (crash-through, as trio's ``handler_nursery``), handlers run there and
        a handler's exception closes its connection and propagates into that group.  In
        both modes ``anyio.EndOfStream`` escaping a handler (the peer closed cleanly) is a
        normal end.

        Raises :class:`anyio.ClosedResourceError` after :meth:`aclose`,
        :class:`RuntimeError` if this listener is already serving.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        if self._scope is not None:
            raise RuntimeError("this Server is already serving")
        done = self._done = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                async with anyio.create_task_group() as tg:

                    def accept_on(endpoint: QuicEndpoint) -> Callable[[QuicConnection], None]:
                        def on_accept(quic: QuicConnection) -> None:
                            connection = self._factory(quic, endpoint,
                                                       local_host=self._local_host)
                            self._connections[quic] = connection
                            name = f"aiopquic handler {quic.peer_address}"
                            if task_group is None:
                                tg.start_soon(_run_guarded, handler, connection, name=name)
                            else:
                                task_group.start_soon(_run_crash_through, handler,
                                                      connection, name=name)

                        return on_accept

                    for i, endpoint in enumerate(self._endpoints):
                        endpoint.on_accept = accept_on(endpoint)
                        endpoint.on_events = self._on_events
                        endpoint.start()
                        tg.start_soon(drive, endpoint, name=f"aiopquic endpoint {i}")
        finally:
            self._shutdown()
            done.set()

    def _shutdown(self) -> None:
        self._closed = True
        self._scope = None
        for endpoint in self._endpoints:
            endpoint.on_accept = None
            endpoint.on_events = None
        for connection in self._connections.values():
            connection._abort()
        self._connections.clear()
        for endpoint in self._endpoints:
            endpoint.close()

    async def aclose(self) -> None:
        """Stop :meth:`serve` (its handlers are cancelled) and release the socket; waits
        until that is done.  Idempotent."""
        scope, done = self._scope, self._done
        if scope is not None and done is not None:
            scope.cancel()
            await done.wait()
        elif not self._closed:
            self._shutdown()
        await anyio.lowlevel.checkpoint()


async def create_listener(host: str, port: int, *,
                          configuration: QuicConfiguration, workers: int = 1) -> Server:
    """Bind a QUIC server endpoint on ``host``:``port`` and return it as a :class:`Server`
    (an :class:`anyio.abc.Listener`); call :meth:`Server.serve` to accept connections.

    ``host`` is bound as given (use ``"::"`` or ``"0.0.0.0"`` for all interfaces); port 0
    picks a free port.  Raises :class:`TypeError` when ``configuration`` is not a
    :class:`QuicConfiguration` (or ``port`` not an integer), :class:`ValueError` for a client
    configuration, one without a certificate or a ``port`` outside 0..65535,
    :class:`OSError` when the address cannot be bound (``errno`` set, e.g.
    ``EADDRINUSE``), and :class:`~aiopquic._native.NativeError` (an :class:`OSError`)
    naming the certificate and key files when GnuTLS rejects them.

    ``workers`` *(aiopquic)*: that many network threads share the port, each packet steered
    to the one owning its connection (see :func:`aiopquic.asyncio.serve` and
    docs/scale.md); :class:`ValueError` outside 1..64.
    """
    if not isinstance(configuration, QuicConfiguration):
        raise TypeError(f"serve() configuration must be a QuicConfiguration, "
                        f"got {type(configuration).__name__}")
    port = check_port(port)
    configuration.validate()
    if configuration.is_client:
        raise ValueError("serve() needs a server configuration (is_client=False)")
    if not configuration.certificate_chain or not configuration.private_key:
        raise ValueError("serve() needs a certificate: call configuration.load_cert_chain()")
    workers = check_int("workers", workers, 1, 65)
    ip, rport = await resolve(host, port)
    endpoints: list[QuicEndpoint] = []
    try:
        for i in range(workers):  # bound in worker order: the BPF steering counts on it
            endpoints.append(QuicEndpoint(configuration, ip, endpoints[0].local_port
                                          if endpoints else rport, worker=i, workers=workers))
    except BaseException:
        for ep in endpoints:
            ep.close()
        raise
    return Server(endpoints[0], ip, more_endpoints=endpoints[1:])


async def serve(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    handler: ConnectionHandler,
    task_group: Optional[TaskGroup] = None,
    task_status: TaskStatus[Server] = anyio.TASK_STATUS_IGNORED,
    workers: int = 1,
) -> None:
    """Accept QUIC connections on ``host``:``port`` and run ``await handler(connection)``
    for each, until cancelled: :func:`create_listener` then :meth:`Server.serve`.

    Start it with ``await task_group.start(serve, ...)`` (or ``functools.partial``) to get
    the :class:`Server` (``server.local_port``) once it listens.  A failing handler is
    logged and only its connection is closed, unless ``task_group`` is given (then its
    exception propagates there; see :meth:`Server.serve`).  Cancelling ``serve()`` cancels
    every handler it runs and closes every connection.  ``workers``: network threads sharing
    the port (see :func:`create_listener`).  Raises as :func:`create_listener`.
    """
    server = await create_listener(host, port, configuration=configuration, workers=workers)
    try:
        task_status.started(server)
        await server.serve(handler, task_group)
    finally:
        if not server._closed:
            server._shutdown()
