"""anyio QUIC client: :func:`connect`."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Callable, Optional

import anyio

from aiopquic.anyio._connection import Connection
from aiopquic.anyio._io import drive, resolve
from aiopquic.quic._checks import check_port
from aiopquic.quic._shared_endpoint import check_client_configuration
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnectionError, QuicEndpoint
from aiopquic.tls import SessionTicket

__all__ = ["connect"]


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    configuration: Optional[QuicConfiguration] = None,
    local_port: int = 0,
    session_ticket_handler: Optional[Callable[[SessionTicket], None]] = None,
) -> AsyncIterator[Connection]:
    """Connect to the QUIC server at ``host``:``port`` and yield a :class:`Connection` once
    the handshake has completed.

    ``host`` is a name or an IPv4/IPv6 address (resolved with :func:`anyio.getaddrinfo`);
    the configuration's ``server_name`` defaults to it.  ``configuration=None`` means
    ``QuicConfiguration(is_client=True)``.  ``local_port`` is the UDP port to bind (0: any).
    ``session_ticket_handler(ticket)`` is called with each session ticket the server sends
    (a :class:`aiopquic.tls.SessionTicket`; pass it as ``configuration.session_ticket`` on a
    later connection to resume, as with :func:`aiopquic.asyncio.connect`).

    Raises :class:`TypeError` when ``host`` is not a str or ``configuration`` is not a
    :class:`QuicConfiguration` (or None), :class:`ValueError` for a server configuration
    or a ``port`` outside 1..65535 (``local_port``: 0..65535; :class:`TypeError` if not an
    integer), :class:`OSError` when the name does not resolve or the socket cannot be
    bound, and :class:`ConnectionError`
    (:class:`~aiopquic.quic.connection.QuicConnectionError`) when the handshake fails:
    nobody answers within ``handshake_timeout``, the server refuses, no common ALPN, or the
    certificate does not verify (the message says which).

    Leaving the block normally closes the connection gracefully (data already sent is
    delivered first) and waits for it to close; leaving it with an exception or by
    cancellation closes it at once.  The exception propagates unchanged (not wrapped in an
    exception group), on asyncio and on trio.
    """
    configuration = check_client_arguments("connect()", host, configuration)
    async with open_connection(host, port, configuration, local_port, Connection,
                               session_ticket_handler) as conn:
        yield conn


def check_client_arguments(what: str, host: object,
                           configuration: Optional[QuicConfiguration]) -> QuicConfiguration:
    """The argument checks of every anyio client entry point (``what`` names it in the
    messages); returns the configuration to use (a default client one for ``None``)."""
    if not isinstance(host, str):
        raise TypeError(f"{what} host must be a str, got {type(host).__name__}")
    return check_client_configuration(what, configuration)


@asynccontextmanager
async def open_connection(
    host: str, port: int, configuration: QuicConfiguration, local_port: int,
    factory: Callable[..., Connection],
    session_ticket_handler: Optional[Callable[[SessionTicket], None]] = None,
) -> AsyncIterator[Connection]:
    """What :func:`connect` does after its argument checks, with ``factory(quic, endpoint,
    local_host=...)`` making the :class:`Connection` (the HTTP/3 layer passes its own)."""
    port = check_port(port, allow_zero=False)
    local_port = check_port(local_port, "local_port")
    ip, rport = await resolve(host, port)
    server_name = configuration.server_name or host
    bind = "::" if ipaddress.ip_address(ip).version == 6 else "0.0.0.0"
    endpoint = QuicEndpoint(configuration, bind, local_port, server_name=server_name)
    body_error: Optional[BaseException] = None
    connection: Optional[Connection] = None
    try:
        quic = endpoint.connect(ip, rport, server_name)
        quic._session_ticket_handler = session_ticket_handler
        connection = factory(quic, endpoint, local_host=bind)
        endpoint.on_events = lambda q: connection._on_events()
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, endpoint)
            try:
                try:
                    with anyio.fail_after(configuration.handshake_timeout + 5.0):
                        await connection._wait_connected()
                except TimeoutError:
                    raise QuicConnectionError(
                        f"handshake with {host}:{port} timed out after "
                        f"{configuration.handshake_timeout:g} s") from None
                except QuicConnectionError as exc:
                    raise QuicConnectionError(f"cannot connect to {host}:{port}: {exc}",
                                              exc.error_code, exc.reason_phrase) from None
                try:
                    yield connection
                except BaseException as exc:
                    body_error = exc
                else:
                    await connection.aclose()
            except BaseException as exc:
                # Raised outside the task group below, so trio's nursery does not wrap it
                # in an ExceptionGroup.
                if body_error is None:
                    body_error = exc
            finally:
                tg.cancel_scope.cancel()
    finally:
        if connection is not None:
            connection._abort()
        endpoint.close()
    if body_error is not None:
        try:
            raise body_error
        finally:
            body_error = None
