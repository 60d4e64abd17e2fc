"""Event-loop glue for the anyio API: wait on the endpoint's wake fd, resolve names.

Nothing here is asyncio-specific: the endpoint's eventfd is awaited with
:func:`anyio.wait_readable` (anyio >= 4.7), which works on both the asyncio and the trio
backends for any file descriptor on Linux.  Older anyio releases only have
``wait_socket_readable`` (sockets only, and an eventfd is not a socket), so there the
backend's own primitive is used: ``trio.lowlevel.wait_readable`` or ``loop.add_reader``.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

import anyio
import anyio.lowlevel

from aiopquic.quic.connection import QuicEndpoint

__all__ = ["drive", "resolve", "wait_readable"]


def _legacy_wait_readable() -> Callable[[int], Any]:  # pragma: no cover - anyio < 4.7
    async def wait(fd: int) -> None:
        import sniffio

        if sniffio.current_async_library() == "trio":
            import trio

            await trio.lowlevel.wait_readable(fd)
            return
        import asyncio

        loop = asyncio.get_running_loop()
        event = anyio.Event()
        loop.add_reader(fd, event.set)
        try:
            await event.wait()
        finally:
            loop.remove_reader(fd)

    return wait


wait_readable: Callable[[int], Any] = getattr(anyio, "wait_readable", None) or \
    _legacy_wait_readable()
"""Wait until a file descriptor is readable (anyio's primitive, or a fallback)."""


async def drive(endpoint: QuicEndpoint) -> None:
    """Run forever: each time the endpoint's wake fd is readable, call
    :meth:`QuicEndpoint.process` (which dispatches to ``on_accept``/``on_events``).

    Cancel the enclosing scope to stop; close the endpoint only after this task has ended
    (closing the fd under a waiting task is an error on trio)."""
    fd = endpoint.fileno
    while True:
        # One bounded batch per call: while batches come back full, yield to other tasks
        # between them instead of waiting on the wake fd (it was cleared).
        while endpoint.process():
            await anyio.lowlevel.checkpoint()
        await wait_readable(fd)


async def resolve(host: str, port: int) -> tuple[str, int]:
    """Resolve ``host`` to a numeric address with :func:`anyio.getaddrinfo` (first answer,
    as aioquic does).  Raises :class:`OSError` (``socket.gaierror``) when it cannot."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    addr = infos[0][4]
    return str(addr[0]), int(addr[1])
