"""Glue between a :class:`QuicEndpoint` and an asyncio loop."""

from __future__ import annotations

import asyncio
import socket
from typing import Callable, Optional

from aiopquic.quic.connection import QuicConnection, QuicEndpoint


def attach(endpoint: QuicEndpoint, loop: asyncio.AbstractEventLoop,
           protocol_for: Callable[[QuicConnection], Optional[object]]) -> None:
    """Wake ``loop`` on the endpoint's eventfd and pump events into protocols."""

    def on_events(quic: QuicConnection) -> None:
        proto = protocol_for(quic)
        if proto is not None:
            proto._process_events()  # type: ignore[attr-defined]

    def on_error(exc: BaseException, quic: QuicConnection) -> None:
        loop.call_exception_handler({
            "message": "unhandled exception in a QUIC protocol's event handler",
            "exception": exc,
            "protocol": protocol_for(quic),
        })

    endpoint.on_events = on_events
    endpoint.on_error = on_error
    scheduled = False

    def pump() -> None:
        # One bounded batch per wake: if the batch was full, more events wait (the wake fd
        # was cleared), so run again on the next loop iteration, after other callbacks.
        nonlocal scheduled
        scheduled = False
        if endpoint.process() and not scheduled:
            scheduled = True
            loop.call_soon(pump)

    loop.add_reader(endpoint.fileno, pump)


def detach(endpoint: QuicEndpoint, loop: asyncio.AbstractEventLoop) -> None:
    """Stop watching the endpoint and free it."""
    try:
        loop.remove_reader(endpoint.fileno)
    except (ValueError, OSError):
        pass
    endpoint.close()


async def resolve(host: str, port: int) -> tuple[str, int]:
    """Resolve ``host`` to a numeric address (first answer, as aioquic does)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    addr = infos[0][4]
    return str(addr[0]), int(addr[1])
