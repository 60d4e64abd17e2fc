#!/usr/bin/env python3
"""Hypercorn's HTTP/3 on aioquic and on aiopquic, in the same run.

    python benchmarks/hypercorn.py [--repeat 3] [--download-mib 64] [--seconds 3] [--quick]

Hypercorn 0.18.0 (unchanged) runs in a subprocess (tests/peers/hypercorn_peer.py) either on
the real aioquic package or with every ``aioquic`` module mapped to aiopquic's, which drives
our sans-IO QuicConnection under Hypercorn's own UDP socket.  The client is the same for
both servers (aiopquic's, in this process), so the server side is what differs:

- download: one GET of N MiB (byte-verified), Mbps;
- small GETs: 10 concurrent clients, each on its own connection, GET /small back to back
  for --seconds; requests per second;
- handshakes: 10 clients, each connecting, finishing the handshake and closing, one
  connection after the other, for --seconds; per second.

Beside each rate, the server process's CPU time (user + system, from /proc) per request or
per handshake: the client shares the machine's cores, so the rate is bounded by both
processes, while the CPU time per operation is the server's own cost.

The stacks alternate (aioquic, aiopquic, aioquic, ...); medians are printed with min-max and
the ratio aiopquic / aioquic.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER = os.path.join(ROOT, "tests", "peers", "hypercorn_peer.py")
sys.path.insert(0, os.path.dirname(PEER))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import h3_requests  # noqa: E402
import hypercorn_peer  # noqa: E402

from aiopquic.asyncio.client import connect  # noqa: E402
from aiopquic.http3_tools import _ClientProtocol, fetch  # noqa: E402
from aiopquic.quic.configuration import QuicConfiguration  # noqa: E402

STACKS = ("aioquic", "aiopquic")


def _certs(directory: str) -> tuple[str, str, str]:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, cafile = (os.path.join(directory, n) for n in ("c.pem", "k.pem", "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(cafile)
    return cert, key, cafile


class Server:
    def __init__(self, stack: str, cert: str, key: str, log: str) -> None:
        self.err = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, PEER, "server", "--stack", stack, "--cert", cert, "--key", key,
             "--lifetime", "600"], stdout=subprocess.PIPE, stderr=self.err,
            stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("LISTENING"):
            self.stop()
            raise RuntimeError(f"{stack} Hypercorn did not start; see {log}")
        self.port = int(line.split()[1])

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        self.err.close()


def _config(cafile: str) -> QuicConfiguration:
    return QuicConfiguration(is_client=True, alpn_protocols=["h3"], cafile=cafile,
                             server_name="localhost")


async def download(port: int, cafile: str, mib: int) -> float:
    size = mib << 20
    out = io.BytesIO()
    started = time.perf_counter()
    status, _, received = await asyncio.wait_for(
        fetch(f"https://127.0.0.1:{port}/bytes/{size}", out, configuration=_config(cafile)),
        300)
    elapsed = time.perf_counter() - started
    if status != 200 or received != size or \
            out.getvalue() != b"".join(hypercorn_peer.pattern_chunks(size)):
        raise RuntimeError("download: wrong answer")
    return size * 8 / elapsed / 1e6


async def _get_small(proto: Any) -> None:
    status, body = await h3_requests.request(proto, "/small")
    if status != b"200" or body != b"ok":
        raise RuntimeError(f"small GET: {status!r} {body!r}")


async def small_gets(port: int, cafile: str, seconds: float, clients: int = 10) -> float:
    done = 0
    deadline = 0.0

    async def one_client() -> None:
        nonlocal done
        async with connect("127.0.0.1", port, configuration=_config(cafile),
                           create_protocol=_ClientProtocol) as proto:
            await _get_small(proto)  # warm: the connection and H3 streams are up
            while time.perf_counter() < deadline:
                await _get_small(proto)
                done += 1

    deadline = time.perf_counter() + seconds + 1.0  # handshakes fall in the first second
    started = time.perf_counter() + 1.0
    await asyncio.wait_for(asyncio.gather(*(one_client() for _ in range(clients))),
                           seconds + 120)
    return done / (time.perf_counter() - started)


async def handshakes(port: int, cafile: str, seconds: float, concurrency: int = 10) -> float:
    """Complete handshakes per second: ``concurrency`` clients, each connecting, finishing
    the handshake and closing, one connection after the other, for ``seconds``."""
    count = 0
    started = time.perf_counter()

    async def one_client() -> None:
        nonlocal count
        while time.perf_counter() - started < seconds:
            async with connect("127.0.0.1", port, configuration=_config(cafile)):
                count += 1

    await asyncio.wait_for(asyncio.gather(*(one_client() for _ in range(concurrency))),
                           seconds + 120)
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--download-mib", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 16 MiB, 1 s")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.download_mib, args.seconds = 1, 16, 1.0
    results: dict[str, dict[str, list[float]]] = {
        s: {k: [] for k in ("download", "small", "handshakes", "small_cpu", "handshakes_cpu")}
        for s in STACKS}
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, cafile = _certs(tmp)
        for rep in range(args.repeat):
            for stack in STACKS:
                server = Server(stack, cert, key, os.path.join(tmp, f"{stack}.err"))
                try:
                    r = results[stack]
                    r["download"].append(asyncio.run(download(server.port, cafile,
                                                              args.download_mib)))
                    for key_, run in (("small", small_gets), ("handshakes", handshakes)):
                        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
                        rate = asyncio.run(run(server.port, cafile, args.seconds))
                        ops = rate * (time.perf_counter() - t0)
                        r[key_].append(rate)
                        r[key_ + "_cpu"].append((server.cpu_seconds() - cpu0) / ops * 1e6)
                finally:
                    server.stop()
                print(f"run {rep + 1}/{args.repeat} {stack}: "
                      f"download {r['download'][-1]:.0f} Mbps, "
                      f"small GETs {r['small'][-1]:.0f}/s "
                      f"({r['small_cpu'][-1]:.0f} us server CPU each), "
                      f"handshakes {r['handshakes'][-1]:.0f}/s "
                      f"({r['handshakes_cpu'][-1]:.0f} us server CPU each)", flush=True)
    rows = [("download", f"{args.download_mib} MiB download (Mbps)", False),
            ("small", "small GETs/s, 10 clients", False),
            ("small_cpu", "server CPU per small GET (us)", True),
            ("handshakes", "handshakes/s, 10 clients", False),
            ("handshakes_cpu", "server CPU per handshake (us)", True)]
    print()
    print("| Hypercorn HTTP/3 | on aioquic | on aiopquic | aiopquic is |")
    print("|---|---|---|---|")
    for key_, label, lower_is_better in rows:
        a = results["aioquic"][key_]
        b = results["aiopquic"][key_]
        ma, mb = statistics.median(a), statistics.median(b)
        ratio = ma / mb if lower_is_better else mb / ma
        word = "less" if lower_is_better else "more"
        print(f"| {label} | {ma:.0f} ({min(a):.0f}-{max(a):.0f}) | "
              f"{mb:.0f} ({min(b):.0f}-{max(b):.0f}) | {ratio:.2f}x {word} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
