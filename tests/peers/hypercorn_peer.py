#!/usr/bin/env python3
"""Hypercorn (unchanged) serving HTTP/3, on aioquic or on aiopquic, and an aioquic client.

    hypercorn_peer.py server --cert CERT --key KEY [--stack aiopquic|aioquic]
        Hypercorn's asyncio worker with an HTTP/3 (QUIC) socket on 127.0.0.1, port 0.
        With --stack aiopquic (the default) every ``aioquic`` module Hypercorn imports is
        aiopquic's module of the same name (a meta path finder installed before Hypercorn is
        imported), so Hypercorn drives aiopquic's sans-IO QuicConnection over its own UDP
        socket.  The ASGI application:
          GET  /bytes/N   N bytes of pattern(N) (see below), streamed in 256 KiB chunks
          GET  /small     b"ok"
          POST /upload    reads the body; answers b"LENGTH <n> SHA256 <hex>"
        Prints "LISTENING <udp port>" once bound; runs until SIGTERM or --lifetime.
    hypercorn_peer.py get|post --port PORT --ca CA [--size N] [--count C]
        aioquic's own client (the real package): GET /bytes/N, or POST N bytes of
        pattern(N) to /upload; C requests, one after the other, on one connection.  Prints
        "RESULT <status> LENGTH <n> SHA256 <hex>" per request (the body's, for a GET; the
        server's answer, for a POST) and "DONE <seconds>"; "RECEIVING" once the first body
        bytes of a response arrive.

pattern(n): a 65521-byte pseudo-random block (seed 1) repeated, cut to n bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import importlib.abc
import importlib.util
import random
import sys
import time
from typing import Any

BLOCK = random.Random(1).randbytes(65521)
CHUNK = 256 * 1024


def pattern_chunks(n: int):
    """pattern(n) in chunks of about CHUNK bytes."""
    reps = CHUNK // len(BLOCK) + 2
    big = BLOCK * reps
    pos = 0
    while pos < n:
        start = pos % len(BLOCK)
        take = min(CHUNK, n - pos)
        yield big[start:start + take]
        pos += take


def pattern_sha256(n: int) -> str:
    h = hashlib.sha256()
    for chunk in pattern_chunks(n):
        h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- the alias


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``aioquic`` and ``aioquic.x.y`` are ``aiopquic`` and ``aiopquic.x.y``."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "aioquic" and not fullname.startswith("aioquic."):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        real = importlib.import_module("aiopquic" + spec.name[len("aioquic"):])
        sys.modules[spec.name] = real
        return real

    def exec_module(self, module: Any) -> None:
        pass


def install_alias() -> None:
    sys.meta_path.insert(0, _Alias())


# ----------------------------------------------------------------------------- server


async def app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if scope["method"] == "POST" and path == "/upload":
        h = hashlib.sha256()
        n = 0
        while True:
            message = await receive()
            body = message.get("body", b"")
            h.update(body)
            n += len(body)
            if not message.get("more_body"):
                break
        answer = f"LENGTH {n} SHA256 {h.hexdigest()}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})
        return
    if path == "/small":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if path.startswith("/bytes/"):
        n = int(path.split("/")[2])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(n).encode())]})
        for chunk in pattern_chunks(n):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def run_server(args: argparse.Namespace) -> int:
    if args.stack == "aiopquic":
        install_alias()
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.config import Config
    from hypercorn.utils import wrap_app

    config = Config()
    config.certfile = args.cert
    config.keyfile = args.key
    config.bind = ["127.0.0.1:0"]
    config.quic_bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = "-"
    sockets = config.create_sockets()
    print(f"LISTENING {sockets.quic_sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(args.lifetime, stop.set)
    import signal

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await worker_serve(wrap_app(app, config.wsgi_max_body_size, None), config,
                           sockets=sockets, shutdown_trigger=stop.wait)
    except Exception as exc:
        if not (stop.is_set() and _only_shutdown_race(exc)):
            raise
        # Hypercorn 0.18's own shutdown race: a QUIC timer that fires while its task group is
        # closing restarts a task in it ("TaskGroup ... is shutting down").  Not ours to fix.
        print("hypercorn: timer fired during shutdown (Hypercorn race, ignored)",
              file=sys.stderr, flush=True)
    return 0


def _only_shutdown_race(exc: BaseException) -> bool:
    """True when ``exc`` (possibly nested exception groups) holds only Hypercorn's
    'TaskGroup ... is shutting down' RuntimeError."""
    inner = getattr(exc, "exceptions", None)
    if inner is not None:
        return all(_only_shutdown_race(e) for e in inner)
    return isinstance(exc, RuntimeError) and "is shutting down" in str(exc)


# ----------------------------------------------------------------------------- aioquic client


async def run_client(args: argparse.Namespace) -> int:
    from aioquic.asyncio import QuicConnectionProtocol, connect
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration

    class Client(QuicConnectionProtocol):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.http = H3Connection(self._quic)
            self.queue: asyncio.Queue = asyncio.Queue()

        def quic_event_received(self, event: Any) -> None:
            for ev in self.http.handle_event(event):
                self.queue.put_nowait(ev)

    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                                      server_name="localhost")
    configuration.load_verify_locations(cafile=args.ca)
    started = time.monotonic()
    async with connect("127.0.0.1", args.port, configuration=configuration,
                       create_protocol=Client) as proto:
        for _ in range(args.count):
            sid = proto._quic.get_next_available_stream_id()
            post = args.mode == "post"
            path = "/upload" if post else (f"/bytes/{args.size}" if args.size else "/small")
            proto.http.send_headers(sid, [
                (b":method", b"POST" if post else b"GET"), (b":scheme", b"https"),
                (b":authority", f"localhost:{args.port}".encode()), (b":path", path.encode())],
                end_stream=not post)
            if post:
                chunks = list(pattern_chunks(args.size))
                for i, chunk in enumerate(chunks):
                    proto.http.send_data(sid, chunk, end_stream=i == len(chunks) - 1)
                    proto.transmit()
                    await asyncio.sleep(0)  # let acknowledgements in (aioquic buffers all)
                if not chunks:
                    proto.http.send_data(sid, b"", end_stream=True)
            proto.transmit()
            status, body = b"", bytearray()
            while True:
                ev = await proto.queue.get()
                if isinstance(ev, HeadersReceived) and ev.stream_id == sid:
                    status = dict(ev.headers).get(b":status", b"")
                elif isinstance(ev, DataReceived) and ev.stream_id == sid:
                    if not body and ev.data:
                        print("RECEIVING", flush=True)
                    body += ev.data
                else:
                    continue
                if ev.stream_ended:
                    break
            if post:
                print(f"RESULT {status.decode()} {body.decode()}", flush=True)
            else:
                print(f"RESULT {status.decode()} LENGTH {len(body)} "
                      f"SHA256 {hashlib.sha256(body).hexdigest()}", flush=True)
    print(f"DONE {time.monotonic() - started:.3f}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["server", "get", "post"])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stack", choices=["aiopquic", "aioquic"], default="aiopquic")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args()
    coro = run_server(args) if args.mode == "server" else run_client(args)

    async def bounded() -> int:
        return await asyncio.wait_for(coro, args.lifetime)

    return asyncio.run(bounded())


if __name__ == "__main__":
    sys.exit(main())
