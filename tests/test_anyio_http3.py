"""HTTP/3 and WebTransport on anyio (aiopquic.anyio.http3) over real UDP on 127.0.0.1, on the
asyncio AND trio backends: requests with bodies both ways (byte-verified), streamed
responses, handler failures, 404s, WebTransport streams both ways, datagrams, close codes,
refusals, and receive credit that follows the reader."""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Optional

import anyio
import pytest

import aiopquic.anyio as aq
from aiopquic.anyio import http3

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
from anyio_h3_peer import CLOSE_CODE, CLOSE_REASON, make_echo  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

HOST = "127.0.0.1"
MiB = 1024 * 1024


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: Any) -> str:
    if request.param == "trio":
        pytest.importorskip("trio")
    return str(request.param)


def pattern(n: int, seed: int = 7) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


async def app(request: http3.Request) -> None:
    if request.path == "/echo":
        body = await request.read()
        await request.respond(200, [(b"x-len", str(len(body)).encode())], body)
    elif request.path.startswith("/bytes/"):
        size = int(request.path.rsplit("/", 1)[1])
        await request.send_headers(200, [(b"content-length", str(size).encode())])
        data = pattern(size)
        for off in range(0, size, 256 * 1024):
            await request.send(data[off:off + 256 * 1024])
        await request.send_eof()
    elif request.path == "/fail":
        raise RuntimeError("handler bug (expected by the test)")
    elif request.path == "/silent":
        return
    else:
        await request.respond(404)


wt_echo = make_echo(own_stream=False)  # the echo of tests/peers/anyio_h3_peer.py


@asynccontextmanager
async def running(server_config: Any, **kwargs: Any) -> AsyncIterator[aq.Server]:
    kwargs.setdefault("handler", app)
    kwargs.setdefault("webtransport_handler", wt_echo)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(15):
            server = await tg.start(functools.partial(
                http3.serve_http3, HOST, 0, configuration=server_config(alpn_protocols=["h3"]),
                **kwargs))
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def client(client_config: Any, port: int) -> Any:
    return http3.connect_http3(HOST, port, configuration=client_config(alpn_protocols=["h3"]))


async def test_get_post_and_streamed_download(server_config, client_config):
    async with running(server_config) as server, client(client_config, server.local_port) as h:
        body = pattern(MiB + 17, seed=3)
        with anyio.fail_after(60):
            r = await h.request("POST", "/echo", body=body)
            assert r.status == 200 and r.body == body
            assert (b"x-len", str(len(body)).encode()) in r.headers
            r = await h.request("GET", "/bytes/3000000", stream=True)
            assert r.status == 200 and r.body == b""
            got = bytearray()
            async for chunk in r:
                got += chunk
            assert bytes(got) == pattern(3000000)
            assert (await h.get("/nowhere")).status == 404


async def test_failing_and_silent_handlers_answer_500_and_the_connection_lives(
        server_config, client_config, caplog):
    async with running(server_config) as server, client(client_config, server.local_port) as h:
        with anyio.fail_after(30):
            r = await h.get("/fail")
            assert r.status == 500 and b"internal error" in r.body
            r = await h.get("/silent")
            assert r.status == 500 and b"no response" in r.body
            r = await h.request("POST", "/echo", body=b"still here")
            assert r.body == b"still here"
    assert "handler bug (expected by the test)" in caplog.text


async def test_many_concurrent_requests_on_one_connection(server_config, client_config):
    async with running(server_config) as server, client(client_config, server.local_port) as h:
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            r = await h.request("POST", "/echo", body=pattern(1000 + i, seed=i))
            results[i] = r.body

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(one, i)
        assert all(results[i] == pattern(1000 + i, seed=i) for i in range(200))


async def test_webtransport_streams_datagrams_and_close_code(server_config, client_config):
    async with running(server_config) as server:
        url = f"https://{HOST}:{server.local_port}/wt"
        cfg = client_config(alpn_protocols=["h3"])
        with anyio.fail_after(60):
            async with http3.connect_webtransport(url, configuration=cfg) as session:
                data = pattern(MiB, seed=11)
                stream = await session.open_stream()

                async def feed() -> None:
                    for off in range(0, len(data), 100_000):
                        await stream.send(data[off:off + 100_000])
                    await stream.send_eof()

                got = bytearray()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(feed)
                    try:
                        while True:
                            got += await stream.receive()
                    except anyio.EndOfStream:
                        pass
                assert bytes(got) == data

                uni = await session.open_stream(bidirectional=False)
                await uni.send(b"one way")
                await uni.send_eof()
                back = await session.accept_stream()
                assert back.is_unidirectional
                echoed = b""
                try:
                    while True:
                        echoed += await back.receive()
                except anyio.EndOfStream:
                    pass
                assert echoed == b"one way"

                received = set()
                for i in range(50):
                    await session.send_datagram(b"dgram %d" % i)
                with anyio.move_on_after(5):
                    while len(received) < 45:
                        received.add(await session.receive_datagram())
                assert len(received) >= 45  # datagrams may be lost; on loopback they are not

                closer = await session.open_stream()
                await closer.send(b"close")
                await session.wait_closed()
                assert session.close_code == CLOSE_CODE
                assert session.close_reason == CLOSE_REASON
                with pytest.raises(http3.WebTransportSessionClosed) as info:
                    await session.accept_stream()
                assert info.value.code == CLOSE_CODE and info.value.by_peer


async def test_webtransport_refusals(server_config, client_config):
    async with running(server_config, path="/wt") as server:
        cfg = client_config(alpn_protocols=["h3"])
        with anyio.fail_after(30):
            with pytest.raises(http3.WebTransportRejected) as info:
                async with http3.connect_webtransport(
                        f"https://{HOST}:{server.local_port}/elsewhere", configuration=cfg):
                    pass
            assert info.value.status == 404
            async with http3.connect_webtransport(
                    f"https://{HOST}:{server.local_port}/wt?x=1", configuration=cfg) as s:
                assert s.path == "/wt?x=1"
    async with running(server_config, webtransport_handler=None) as server:
        with anyio.fail_after(30):
            with pytest.raises(RuntimeError, match="does not support WebTransport"):
                async with http3.connect_webtransport(
                        f"https://{HOST}:{server.local_port}/wt", configuration=cfg):
                    pass


async def test_session_closed_by_client_ends_the_server_handler(server_config, client_config):
    seen: list[Optional[int]] = []
    done = anyio.Event()

    async def handler(session: http3.WebTransportSession) -> None:
        try:
            async for _ in session:
                pass
        finally:
            seen.append(session.close_code)
            done.set()

    async with running(server_config, webtransport_handler=handler) as server:
        cfg = client_config(alpn_protocols=["h3"])
        with anyio.fail_after(30):
            async with http3.connect_webtransport(
                    f"https://{HOST}:{server.local_port}/wt", configuration=cfg) as session:
                await session.aclose(7, "done")
                assert session.close_code == 7
            await done.wait()
    assert seen == [7]


async def read_slowly(response: http3.Response, chunk: int) -> tuple[int, int]:
    """Read the body ``chunk`` bytes at a time with a pause after each (a slow consumer,
    not a synchronisation); return (bytes read, most bytes ever waiting unread)."""
    peak = total = 0
    while True:
        peak = max(peak, response._inbox.nbytes)
        try:
            total += len(await response.receive(chunk))
        except anyio.EndOfStream:
            return total, peak
        await anyio.sleep(0.002)


async def test_slow_reader_holds_the_sender_back(server_config, client_config):
    """Credit follows the reader: while a client reads a 16 MiB response slowly (64 KiB,
    then a pause), what waits unread never exceeds its 1 MiB stream window."""
    async with running(server_config) as server:
        cfg = client_config(alpn_protocols=["h3"], max_stream_data=MiB, max_data=4 * MiB)
        async with http3.connect_http3(HOST, server.local_port, configuration=cfg) as h:
            with anyio.fail_after(90):
                r = await h.request("GET", "/bytes/16777216", stream=True)
                total, peak = await read_slowly(r, 64 * 1024)
                assert total == 16 * MiB
                # bytes do pile up (the reader is slow), but only up to the window (which
                # starts at 256 KiB and grows towards max_stream_data as the reader keeps up)
                assert 128 * 1024 < peak <= MiB + 64 * 1024


async def test_arguments_are_checked(server_config, client_config):
    async with running(server_config) as server, client(client_config, server.local_port) as h:
        with pytest.raises(ValueError, match="path"):
            await h.request("GET", "no-slash")
        with pytest.raises(TypeError, match="body"):
            await h.request("POST", "/echo", body="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="https"):
        async with http3.connect_webtransport("http://x/y"):
            pass
    with pytest.raises(ValueError, match="lacks 'h3'"):
        async with http3.connect_http3(HOST, 1, configuration=client_config()):
            pass


async def test_stream_window_start_is_a_configuration_field(server_config, client_config):
    """stream_window_start bounds what a slow reader has queued before the window grows
    (here 64 KiB instead of the default 256 KiB)."""
    async with running(server_config) as server:
        cfg = client_config(alpn_protocols=["h3"], max_stream_data=MiB, max_data=4 * MiB,
                            stream_window_start=64 * 1024, network_poll_us=0,
                            ack_floor_us=500)
        async with http3.connect_http3(HOST, server.local_port, configuration=cfg) as h:
            with anyio.fail_after(90):
                r = await h.request("GET", "/bytes/2097152", stream=True)
                total, peak = await read_slowly(r, 16 * 1024)
                assert total == 2 * MiB
                # the window may double once (when the reader keeps up within a few RTTs,
                # csrc/conn.c rx_window_grow); with the default start (256 KiB) the peak is
                # ~256 KiB
                assert 16 * 1024 < peak <= 2 * 64 * 1024 + 16 * 1024, peak
