"""anyio's shared client endpoint (aiopquic.anyio.ClientEndpoint) on asyncio and trio: a
hundred concurrent connections over two network threads, against our anyio server."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from quic_helpers import HOST, anyio_roundtrip

import aiopquic.anyio as aq

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

N = 100


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: Any) -> str:
    """Every test in this module runs on both backends."""
    if request.param == "trio":
        pytest.importorskip("trio")
    return str(request.param)


async def _echo(conn) -> None:
    async for stream in conn:
        async with stream:
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except anyio.EndOfStream:
                pass
            await stream.send(data)


async def test_connections_share_two_threads(server_config, client_config):
    listener = await aq.create_listener(HOST, 0, configuration=server_config())
    port = listener.local_port
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, _echo)
            async with aq.ClientEndpoint(client_config(), threads=2) as endpoint:
                count = 0

                async def one(i: int) -> None:
                    nonlocal count
                    async with endpoint.connect(HOST, port) as conn:
                        payload = i.to_bytes(4, "big") * 100
                        assert await anyio_roundtrip(conn, payload) == payload
                        count += 1

                with anyio.fail_after(60):
                    async with anyio.create_task_group() as clients:
                        for i in range(N):
                            clients.start_soon(one, i)
                assert count == N
                assert len(endpoint.local_ports) == 2
                assert endpoint.connection_count == 0
            await listener.aclose()
    finally:
        await listener.aclose()


async def test_errors(client_config, server_config):
    endpoint = aq.ClientEndpoint(client_config())
    with pytest.raises(RuntimeError, match="async with"):
        async with endpoint.connect(HOST, 4433):
            pass
    with pytest.raises(ValueError, match="is_client"):
        aq.ClientEndpoint(server_config())
    async with aq.ClientEndpoint(client_config(handshake_timeout=1.0)) as endpoint:
        with anyio.fail_after(20), pytest.raises(ConnectionError):
            async with endpoint.connect(HOST, 9):  # nobody there: handshake timeout
                pass
