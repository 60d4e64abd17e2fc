#!/usr/bin/env python3
"""An HTTP/3 + WebTransport server on aiopquic's anyio API, for browser and aioquic tests
that need it on the trio backend (Playwright and aioquic's client run on asyncio, so the
server gets its own process).

    anyio_h3_peer.py --backend trio|asyncio --cert CERT --key KEY [--lifetime S]

    GET /                 a small HTML page ("anyio h3 ok")
    GET /bytes/N          N bytes of a deterministic pattern (sha256(b"aioquic-h3") blocks,
                          the pattern of tests/peers/aioquic_h3.py)
    CONNECT /echo         WebTransport echo: a bidi stream is echoed on the same stream (or,
                          with --own-stream, on a new bidi stream the server opens, which
                          the client answers with b"thanks"); a uni stream is echoed on a
                          new uni stream; datagrams are echoed; a bidi stream carrying
                          exactly b"close" closes the session with 4242 "bye from aiopquic".

Prints "LISTENING <port>" once bound, "THANKS <data>" for each answer on its own streams,
and exits after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import sys

import anyio

from aiopquic.anyio import http3
from aiopquic.quic.configuration import QuicConfiguration

CLOSE_CODE = 4242
CLOSE_REASON = "bye from aiopquic"
PAGE = b"<!doctype html><title>anyio</title><p id=msg>anyio h3 ok</p>\n"


def pattern(n: int) -> bytes:
    block = hashlib.sha256(b"aioquic-h3").digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


async def read_all(stream: http3.WebTransportStream) -> bytes:
    data = bytearray()
    try:
        while True:
            data += await stream.receive()
    except anyio.EndOfStream:
        return bytes(data)


async def app(request: http3.Request) -> None:
    if request.path == "/":
        await request.respond(200, [(b"content-type", b"text/html")], PAGE)
    elif request.path.startswith("/bytes/"):
        size = int(request.path.rsplit("/", 1)[1])
        data = pattern(size)
        await request.send_headers(200, [(b"content-length", str(size).encode())])
        for off in range(0, size, 1 << 16):
            await request.send(data[off:off + (1 << 16)])
        await request.send_eof()
    else:
        await request.respond(404)


def make_echo(own_stream: bool):  # noqa: ANN201 - a handler factory
    async def echo(session: http3.WebTransportSession) -> None:
        async def on_stream(stream: http3.WebTransportStream) -> None:
            if stream.is_unidirectional:
                data = await read_all(stream)
                out = await session.open_stream(bidirectional=False)
                await out.send(data)
                await out.send_eof()
                return
            if own_stream:
                data = await read_all(stream)
                await stream.send_eof()
                if data == b"close":
                    await session.aclose(CLOSE_CODE, CLOSE_REASON)
                    return
                back = await session.open_stream()
                await back.send(data)
                await back.send_eof()
                print(f"THANKS {(await read_all(back)).decode()}", flush=True)
                return
            first = await stream.receive(5)
            if first == b"close":
                await session.aclose(CLOSE_CODE, CLOSE_REASON)
                return
            await stream.send(first)
            try:
                while True:
                    await stream.send(await stream.receive())
            except anyio.EndOfStream:
                await stream.send_eof()

        async def datagrams() -> None:
            while True:
                await session.send_datagram(await session.receive_datagram())

        async with anyio.create_task_group() as tg:
            tg.start_soon(datagrams)
            async for stream in session:
                tg.start_soon(on_stream, stream)
            tg.cancel_scope.cancel()

    return echo


async def main_async(args: argparse.Namespace) -> None:
    config = QuicConfiguration(is_client=False)
    config.load_cert_chain(args.cert, args.key)
    with anyio.move_on_after(args.lifetime):
        async with anyio.create_task_group() as tg:
            server = await tg.start(functools.partial(
                http3.serve_http3, "127.0.0.1", args.port, configuration=config, handler=app,
                webtransport_handler=make_echo(args.own_stream), path="/echo"))
            print(f"LISTENING {server.local_port}", flush=True)


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="trio")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--own-stream", action="store_true")
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args(argv)
    anyio.run(main_async, args, backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
