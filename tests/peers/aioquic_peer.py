#!/usr/bin/env python3
"""An aioquic peer for interop tests (a QUIC stack nobody here wrote).

    aioquic_peer.py server --cert CERT --key KEY [--alpn aqtest] [--port 0]
        Echo server: for every stream, read until FIN, write it all back, FIN.
        Prints "LISTENING <port>" on stdout (flushed) once bound.
    aioquic_peer.py client --port PORT --ca CA [--alpn aqtest] [--size N]
        Connects, sends N bytes of a deterministic pattern on one bidi stream + FIN, reads
        the echo until FIN and compares byte for byte.  Exit status 0 on success, 1 on a
        mismatch, 2 on any error.

Both modes give up after --lifetime seconds so an orphaned peer never lingers.
Standalone on purpose: imports only aioquic and the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import traceback

from aioquic.asyncio import connect, serve
from aioquic.quic.configuration import QuicConfiguration

_TASKS = set()


def payload(size: int) -> bytes:
    return random.Random(0xA10).randbytes(size)


async def run_server(args) -> int:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=[args.alpn])
    configuration.load_cert_chain(args.cert, args.key)

    def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def echo() -> None:
            data = await reader.read()
            writer.write(data)
            writer.write_eof()

        task = asyncio.ensure_future(echo())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    server = await serve(args.host, args.port, configuration=configuration, stream_handler=handler)
    try:
        port = server._transport.get_extra_info("sockname")[1]
        print(f"LISTENING {port}", flush=True)
        await asyncio.Event().wait()  # until killed (or --lifetime)
    finally:
        server.close()
    return 0


async def run_client(args) -> int:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=[args.alpn], server_name=args.server_name
    )
    configuration.load_verify_locations(cafile=args.ca)
    data = payload(args.size)
    async with connect(args.host, args.port, configuration=configuration) as protocol:
        reader, writer = await protocol.create_stream()
        writer.write(data)
        writer.write_eof()
        echoed = await reader.read()
    if echoed != data:
        mismatch = next(
            (i for i, (a, b) in enumerate(zip(echoed, data)) if a != b), min(len(echoed), len(data))
        )
        print(
            f"MISMATCH sent {len(data)} bytes, got {len(echoed)} back,"
            f" first difference at {mismatch}",
            flush=True,
        )
        return 1
    print(f"OK {len(echoed)}", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--alpn", default="aqtest")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args(argv)
    run = run_server if args.mode == "server" else run_client
    try:
        return asyncio.run(asyncio.wait_for(run(args), args.lifetime))
    except asyncio.TimeoutError:
        if args.mode == "server":
            return 0
        print(f"TIMEOUT after {args.lifetime:.0f}s", file=sys.stderr, flush=True)
        return 2
    except Exception:
        traceback.print_exc()
        return 2


if __name__ == "__main__":
    sys.exit(main())
