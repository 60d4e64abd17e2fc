#!/usr/bin/env python3
"""One server process with 1 or 2 workers (``serve(workers=N)``), a load generator in its
own process: aggregate upload throughput with 1, 2, 4 and 8 concurrent connections, and
handshakes per second with 10 concurrent clients.

    python benchmarks/workers.py [--repeat 3] [--mib 64] [--seconds 3] [--workers 1,2]

Worker counts alternate (1, 2, 1, 2, ...) so both see the same machine; medians with
min-max.  Loopback, MTU 65536 (the default namespace).  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from aiopquic.asyncio import connect, serve  # noqa: E402
from aiopquic.quic.configuration import QuicConfiguration  # noqa: E402

ALPN = ["bench-workers"]
CHUNK = 64 * 1024


async def run_server(args: argparse.Namespace) -> None:
    cfg = QuicConfiguration(is_client=False, alpn_protocols=ALPN)
    cfg.load_cert_chain(args.cert, args.key)

    def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def sink() -> None:
            n = 0
            while True:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break
                n += len(chunk)
            writer.write(str(n).encode())
            writer.write_eof()

        asyncio.ensure_future(sink())

    server = await serve("127.0.0.1", 0, configuration=cfg, stream_handler=handler,
                         workers=args.workers)
    print(json.dumps({"port": server.local_port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    server.close()


def client_config(ca: str) -> QuicConfiguration:
    return QuicConfiguration(is_client=True, alpn_protocols=ALPN, cafile=ca,
                             server_name="localhost")


async def upload(port: int, ca: str, size: int) -> None:
    data = b"\x5a" * CHUNK
    async with connect("127.0.0.1", port, configuration=client_config(ca)) as proto:
        reader, writer = await proto.create_stream()
        sent = 0
        while sent < size:
            writer.write(data)
            await writer.drain()
            sent += len(data)
        writer.write_eof()
        answer = await reader.read()
        if int(answer) != sent:
            raise RuntimeError(f"server counted {answer!r}, sent {sent}")


async def run_client(args: argparse.Namespace) -> None:
    if args.op == "throughput":
        size = args.mib << 20
        start = time.perf_counter()
        await asyncio.gather(*(upload(args.port, args.ca, size) for _ in range(args.conns)))
        elapsed = time.perf_counter() - start
        print(json.dumps({"mbps": args.conns * size * 8 / elapsed / 1e6}), flush=True)
        return
    count = 0
    start = time.perf_counter()

    async def loop() -> None:
        nonlocal count
        while time.perf_counter() - start < args.seconds:
            async with connect("127.0.0.1", args.port, configuration=client_config(args.ca)):
                count += 1

    await asyncio.gather(*(loop() for _ in range(10)))
    print(json.dumps({"per_s": count / (time.perf_counter() - start)}), flush=True)


def certs(directory: str) -> tuple[str, str, str]:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    paths = [os.path.join(directory, n) for n in ("c.pem", "k.pem", "ca.pem")]
    leaf.cert_chain_pems[0].write_to_path(paths[0])
    leaf.private_key_pem.write_to_path(paths[1])
    ca.cert_pem.write_to_path(paths[2])
    return paths[0], paths[1], paths[2]


def measure(workers: int, cert: str, key: str, ca: str, jobs: list[list[str]]) -> list[float]:
    server = subprocess.Popen([sys.executable, __file__, "server", "--workers", str(workers),
                               "--cert", cert, "--key", key], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdin is not None
        port = json.loads(server.stdout.readline())["port"]
        out = []
        for job in jobs:
            res = subprocess.run([sys.executable, __file__, "client", "--port", str(port),
                                  "--ca", ca, *job], capture_output=True, text=True,
                                 timeout=300, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"client {job} failed: {res.stderr[-2000:]}")
            value = json.loads(res.stdout.strip().splitlines()[-1])
            out.append(float(value.get("mbps", value.get("per_s", 0.0))))
        server.stdin.write(b"\n")
        server.stdin.flush()
        server.wait(30)
        return out
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="bench",
                        choices=["bench", "server", "client"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mib", type=int, default=64, help="MiB per connection")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--port", type=int)
    parser.add_argument("--op", default="throughput", choices=["throughput", "handshakes"])
    parser.add_argument("--conns", type=int, default=1)
    args = parser.parse_args()
    if args.mode == "server":
        args.workers = int(args.workers)
        asyncio.run(run_server(args))
        return 0
    if args.mode == "client":
        asyncio.run(run_client(args))
        return 0
    counts = [int(w) for w in args.workers.split(",")]
    conns = (1, 2, 4, 8)
    jobs = [["--op", "throughput", "--conns", str(c), "--mib", str(max(8, args.mib // c))]
            for c in conns] + [["--op", "handshakes", "--seconds", str(args.seconds)]]
    labels = [f"{c} connection(s), Mbit/s" for c in conns] + ["handshakes/s, 10 clients"]
    results: dict[int, list[list[float]]] = {w: [] for w in counts}
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, ca = certs(tmp)
        for rep in range(args.repeat):
            for w in counts:
                results[w].append(measure(w, cert, key, ca, jobs))
                print(f"run {rep + 1}/{args.repeat} workers={w}: "
                      + ", ".join(f"{v:.0f}" for v in results[w][-1]), flush=True)
    print()
    print("| load (upload, one stream per connection) | "
          + " | ".join(f"{w} worker(s)" for w in counts) + " | ratio |")
    print("|---|" + "---|" * (len(counts) + 1))
    for i, label in enumerate(labels):
        meds = [statistics.median(r[i] for r in results[w]) for w in counts]
        cells = [f"{statistics.median(r[i] for r in results[w]):.0f} "
                 f"({min(r[i] for r in results[w]):.0f}-{max(r[i] for r in results[w]):.0f})"
                 for w in counts]
        ratio = f"{meds[-1] / meds[0]:.2f}x" if meds[0] else "-"
        print(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
