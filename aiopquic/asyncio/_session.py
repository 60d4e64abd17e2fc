"""The two ends of a client connection's life that :func:`aiopquic.asyncio.connect` and
:meth:`aiopquic.asyncio.ClientEndpoint.connect` share."""

from __future__ import annotations

import asyncio

from aiopquic.asyncio.protocol import QuicConnectionProtocol
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnectionError


async def wait_handshake(protocol: QuicConnectionProtocol, configuration: QuicConfiguration,
                         host: str, port: int) -> None:
    """Wait for the handshake.  Raises :class:`ConnectionError` after
    ``handshake_timeout`` (+5 s) and :class:`QuicConnectionError` naming ``host``:``port``
    when the connection failed."""
    try:
        await asyncio.wait_for(protocol.wait_connected(), configuration.handshake_timeout + 5.0)
    except asyncio.TimeoutError:
        raise ConnectionError(f"handshake with {host}:{port} timed out after "
                              f"{configuration.handshake_timeout:g} s") from None
    except QuicConnectionError as exc:
        raise QuicConnectionError(f"cannot connect to {host}:{port}: {exc}",
                                  exc.error_code, exc.reason_phrase) from None


async def close_gracefully(protocol: QuicConnectionProtocol,
                           configuration: QuicConfiguration) -> None:
    """Close and wait until closed (data already written is delivered first), giving up
    after the idle timeout (+5 s)."""
    protocol.close()
    try:
        await asyncio.wait_for(protocol.wait_closed(),
                               max(configuration.idle_timeout, 1.0) + 5.0)
    except asyncio.TimeoutError:
        pass
