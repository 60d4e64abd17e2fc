"""Glue between a :class:`QuicEndpoint` and an asyncio loop."""

from __future__ import annotations

import asyncio
import socket
import weakref
from typing import Callable, Optional

from aiopquic.quic.connection import QuicConnection, QuicEndpoint

# the loop each attached endpoint's wake fd is registered with
_ATTACHED: weakref.WeakKeyDictionary[QuicEndpoint, asyncio.AbstractEventLoop] = \
    weakref.WeakKeyDictionary()


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
        if endpoint.process():
            scheduled = True
            loop.call_soon(pump)

    def on_readable() -> None:
        # A pump already scheduled reads the wake fd (and the events) this iteration:
        # running one here too would start a second chain of pumps, and under a steady
        # backlog the chains would multiply, each taking a full batch before any task runs.
        if not scheduled:
            pump()

    loop.add_reader(endpoint.fileno, on_readable)
    _ATTACHED[endpoint] = loop


def detach(endpoint: QuicEndpoint, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
    """Stop watching the endpoint and free it (idempotent: an endpoint closed before, e.g.
    through ``protocol._transport.close()``, is left alone).  ``loop``: the loop it was
    attached to (default: the one :func:`attach` recorded)."""
    attached = _ATTACHED.pop(endpoint, None)
    loop = loop or attached
    if endpoint._closed:
        return
    if loop is not None:
        try:
            loop.remove_reader(endpoint.fileno)
        except (ValueError, OSError, RuntimeError):
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
