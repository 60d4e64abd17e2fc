"""Multi-core servers: ``serve(workers=N)`` runs N network threads on N SO_REUSEPORT sockets
of one port, and a classic BPF program steers each packet by the worker number its
connection IDs carry.  Checked with hundreds of connections over 2 workers: both workers
own connections, every connection completes an echo, and no packet reaches a worker that
does not own its connection (``stray_packets`` stays 0).  Also the multi-process form
(``worker_index``), QUIC-LB IDs combined with workers, and the argument checks."""

from __future__ import annotations

import asyncio
import os

import anyio
import pytest
from quic_helpers import HOST, anyio_roundtrip, client, echo_roundtrip, echo_stream_handler

from aiopquic.asyncio import serve

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


async def _many_clients(port: int, client_config, count: int, concurrency: int = 25) -> int:
    done = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal done
        async with sem:
            async with client(port, client_config()) as p:
                payload = os.urandom(2000 + i)
                assert await echo_roundtrip(p, payload) == payload
                done += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return done


@pytest.mark.parametrize("lb", [False, True])
async def test_two_workers_own_their_connections(server_config, client_config, lb):
    extra = {"quic_lb_server_id": b"\x42\x43", "connection_id_length": 12} if lb else {}
    server = await serve(HOST, 0, configuration=server_config(**extra),
                         stream_handler=echo_stream_handler, workers=2)
    try:
        workers = server.workers
        assert len(workers) == 2 and workers[0].local_port == workers[1].local_port
        accepted = [0, 0]
        for i, ep in enumerate(workers):
            inner = ep.on_accept

            def counting(quic, i=i, inner=inner):
                accepted[i] += 1
                inner(quic)

            ep.on_accept = counting
        with anyio.fail_after(150):
            assert await _many_clients(server.local_port, client_config, 200) == 200
        assert min(accepted) >= 40, accepted  # the kernel spread the first Initials
        assert sum(accepted) == 200
        assert [ep.stray_packets for ep in workers] == [0, 0]
    finally:
        server.close()


async def test_worker_processes_form(server_config, client_config):
    """worker_index: each "process" (here: two serve() calls, in index order) runs one
    worker of the group; connections complete whichever socket their first Initial hit."""
    first = await serve(HOST, 0, configuration=server_config(), workers=2, worker_index=0,
                        stream_handler=echo_stream_handler)
    second = await serve(HOST, first.local_port, configuration=server_config(), workers=2,
                         worker_index=1, stream_handler=echo_stream_handler)
    try:
        with anyio.fail_after(90):
            assert await _many_clients(first.local_port, client_config, 60) == 60
        assert first.protocols or second.protocols is not None
        assert first.workers[0].stray_packets == second.workers[0].stray_packets == 0
    finally:
        first.close()
        second.close()


async def test_worker_arguments(server_config):
    for kwargs, what in (({"workers": 0}, "workers"), ({"workers": 65}, "workers"),
                         ({"workers": 2, "worker_index": 2}, "worker_index")):
        with pytest.raises(ValueError, match=what):
            await serve(HOST, 0, configuration=server_config(), **kwargs)


async def test_rebinding_client_stays_with_its_worker(server_config, client_config):
    """The kernel's own SO_REUSEPORT hash follows the 4-tuple, so a client whose NAT binding
    changes would land on another worker half of the time; the connection-ID steering keeps
    every packet with the owning worker.  12 rebinds on each of 4 connections (through the
    impairment relay): without steering, about half of them would go astray."""
    from impair import Relay

    server = await serve(HOST, 0, configuration=server_config(),
                         stream_handler=echo_stream_handler, workers=2)
    try:
        with Relay(upstream=(HOST, server.local_port)) as relay:
            with anyio.fail_after(120):
                for _ in range(4):
                    async with client(relay.address[1], client_config()) as p:
                        for _ in range(12):
                            payload = os.urandom(50_000)
                            assert await echo_roundtrip(p, payload) == payload
                            relay.rebind("port")
                        payload = os.urandom(50_000)
                        assert await echo_roundtrip(p, payload) == payload
        assert [ep.stray_packets for ep in server.workers] == [0, 0]
    finally:
        server.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_serve_with_workers(server_config, client_config, backend):
    """The anyio server takes workers= too, on both backends."""
    if backend == "trio":
        pytest.importorskip("trio")
    import functools

    import aiopquic.anyio as aq

    async def echo(conn) -> None:
        async for stream in conn:
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except anyio.EndOfStream:
                pass
            await stream.send(data)
            await stream.send_eof()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            server = await tg.start(functools.partial(
                aq.serve, HOST, 0, configuration=server_config(), handler=echo, workers=2))
            assert len(server.workers) == 2

            async def one(i: int) -> None:
                async with aq.connect(HOST, server.local_port,
                                      configuration=client_config()) as conn:
                    payload = os.urandom(1000 + i)
                    assert await anyio_roundtrip(conn, payload) == payload

            with anyio.fail_after(90):
                async with anyio.create_task_group() as clients:
                    for i in range(60):
                        clients.start_soon(one, i)
            assert [ep.stray_packets for ep in server.workers] == [0, 0]
            tg.cancel_scope.cancel()

    anyio.run(main, backend=backend)
