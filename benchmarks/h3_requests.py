#!/usr/bin/env python3
"""Small HTTP/3 requests per second: aiopquic's server, aioquic's and ngtcp2's gtlsserver,
driven by the same load generator in the same run.

    python benchmarks/h3_requests.py [--seconds 5] [--repeat 3] [--connections 4]
                                     [--streams 25] [--size 1024] [--lo-mtu 1500]

Servers (each in its own process):

- aiopquic: benchmarks/peers/aiopquic_h3_server.py (``GET /bytes/N`` from memory, answered
  in the event callback: the HTTP/3 stack's own cost);
- aiopquic-fs: ``python -m aiopquic serve --root DIR`` (the project's file server: a task,
  a path check, a stat and a read per request);
- aioquic: tests/peers/aioquic_h3.py (aioquic's H3Connection, ``GET /bytes/N`` from
  memory, like the first);
- gtlsserver: Debian's ngtcp2 example server (C, nghttp3), files from ``-d DIR``.

The load generator is aiopquic's HTTP/3 client in this process: ``--connections``
connections, each keeping ``--streams`` GETs of a ``--size``-byte body in flight (100
concurrent requests by default), for ``--seconds`` after a warm-up request per stream; every
body's length is checked.  Printed per server: requests per second (median, min-max) and the
server process's CPU time (user + system, /proc) per request, with ratios to aiopquic.  The
generator shares the machine's cores with the server, so the rate is bounded by both; the
CPU time per request is the server's own cost.

``--lo-mtu N`` re-runs the whole benchmark in a private network namespace whose loopback has
MTU N (``unshare -n``); otherwise it runs on the host's loopback (MTU 65536 here).  Not part
of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchutil import certs, lo_mtu  # noqa: E402

from aiopquic.asyncio.client import connect  # noqa: E402
from aiopquic.h3.events import DataReceived, HeadersReceived  # noqa: E402
from aiopquic.http3_tools import _ClientProtocol  # noqa: E402
from aiopquic.quic.configuration import QuicConfiguration  # noqa: E402

AIOQUIC_PEER = os.path.join(ROOT, "tests", "peers", "aioquic_h3.py")
AIOPQUIC_PEER = os.path.join(HERE, "peers", "aiopquic_h3_server.py")


def _gtlsserver() -> Optional[str]:
    found = shutil.which("gtlsserver")
    if found:
        return found
    return "/usr/sbin/gtlsserver" if os.path.exists("/usr/sbin/gtlsserver") else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, name: str, argv: list[str], path: str, port: int) -> None:
        self.name, self.argv, self.path, self.port = name, argv, path, port
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def servers(directory: str, cert: str, key: str, size: int) -> list[Server]:
    with open(os.path.join(directory, "body.bin"), "wb") as f:
        f.write(b"x" * size)
    out = []
    port = _free_port()
    out.append(Server("aiopquic", [sys.executable, AIOPQUIC_PEER, "--port", str(port),
                                   "--cert", cert, "--key", key], f"/bytes/{size}", port))
    port = _free_port()
    out.append(Server("aiopquic-fs", [sys.executable, "-m", "aiopquic", "serve", "--host",
                                      "127.0.0.1", "--port", str(port), "--cert", cert,
                                      "--key", key, "--root", directory, "--quiet"],
                      "/body.bin", port))
    port = _free_port()
    out.append(Server("aioquic", [sys.executable, AIOQUIC_PEER, "server", "--cert", cert,
                                  "--key", key, "--port", str(port), "--lifetime", "100000"],
                      f"/bytes/{size}", port))
    gtls = _gtlsserver()
    if gtls:
        port = _free_port()
        out.append(Server("gtlsserver", [gtls, "-q", "-d", directory, "127.0.0.1", str(port),
                                         key, cert], "/body.bin", port))
    return out


async def request(proto: Any, path: str) -> tuple[bytes, bytes]:
    """GET ``path`` on the connection of ``proto`` (an ``http3_tools._ClientProtocol``):
    (status, body), the body's credit returned as it arrives.  Raises RuntimeError when
    the response is cut short."""
    http = proto.http
    sid = proto._quic.get_next_available_stream_id()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    proto.responses[sid] = queue
    http.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                            (b":authority", b"localhost"), (b":path", path.encode())],
                      end_stream=True)
    proto.transmit()
    chunks: list[bytes] = []
    status = b""
    while True:
        ev = await queue.get()
        if ev is None:
            raise RuntimeError(f"GET {path} cut short")
        if isinstance(ev, HeadersReceived):
            status = dict(ev.headers).get(b":status", b"")
        if isinstance(ev, DataReceived):
            chunks.append(ev.data)
            http.consumed(sid, len(ev.data))
        if isinstance(ev, (HeadersReceived, DataReceived)) and ev.stream_ended:
            break
    del proto.responses[sid]
    return status, b"".join(chunks)


async def _get(proto: Any, path: str, size: int) -> None:
    status, body = await request(proto, path)
    if status != b"200" or len(body) != size:
        raise RuntimeError(f"GET {path}: status {status!r}, {len(body)} bytes")


async def _wait_ready(server: Server, cafile: str) -> None:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], cafile=cafile,
                            server_name="localhost", handshake_timeout=1.0)
    deadline = time.monotonic() + 30
    while True:
        try:
            async with connect("127.0.0.1", server.port, configuration=cfg,
                               create_protocol=_ClientProtocol):
                return
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not start") from None
            await asyncio.sleep(0.2)


async def measure(server: Server, cafile: str, size: int, seconds: float, connections: int,
                  streams: int) -> tuple[float, float]:
    """(requests per second, server CPU seconds per request)."""
    await _wait_ready(server, cafile)
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], cafile=cafile,
                            server_name="localhost", max_streams_bidi=1000)
    done = 0
    deadline = 0.0
    ready = asyncio.Event()
    go = asyncio.Event()  # set once the deadline is
    waiting = connections

    async def one_connection() -> None:
        nonlocal done, waiting
        async with connect("127.0.0.1", server.port, configuration=cfg,
                           create_protocol=_ClientProtocol) as proto:
            await asyncio.gather(*(_get(proto, server.path, size) for _ in range(streams)))
            waiting -= 1
            if not waiting:
                ready.set()
            await go.wait()

            async def lane() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    await _get(proto, server.path, size)
                    done += 1

            await asyncio.gather(*(lane() for _ in range(streams)))

    assert server.proc is not None
    tasks = [asyncio.ensure_future(one_connection()) for _ in range(connections)]
    await asyncio.wait_for(ready.wait(), 60)
    cpu0 = _cpu_seconds(server.proc.pid)
    started = time.perf_counter()
    deadline = started + seconds
    go.set()
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + 120)
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(server.proc.pid) - cpu0
    return done / elapsed, cpu / max(done, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--streams", type=int, default=25)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--lo-mtu", type=int, default=0)
    p.add_argument("--servers", default="",
                   help="comma-separated subset of aiopquic,aiopquic-fs,aioquic,gtlsserver")
    args = p.parse_args()
    if args.lo_mtu:
        argv = [a for a in sys.argv[1:]]
        i = argv.index("--lo-mtu")
        del argv[i:i + 2]
        script = (f"ip link set lo mtu {args.lo_mtu} && ip link set lo up && exec "
                  f"{sys.executable} {os.path.abspath(__file__)} " + " ".join(argv))
        return subprocess.call(["unshare", "-n", "sh", "-c", script])
    tmp = tempfile.mkdtemp(prefix="h3req-")
    cert, key, cafile = certs(tmp)
    stacks = servers(tmp, cert, key, args.size)
    if args.servers:
        wanted = args.servers.split(",")
        unknown = set(wanted) - {s.name for s in stacks}
        if unknown:
            p.error(f"--servers: unknown or unavailable: {', '.join(sorted(unknown))}")
        stacks = [s for s in stacks if s.name in wanted or s.name == "aiopquic"]
    results: dict[str, list[tuple[float, float]]] = {s.name: [] for s in stacks}
    print(f"HTTP/3 GET of {args.size} bytes, {args.connections} connections x "
          f"{args.streams} streams in flight, {args.seconds:g} s per run, loopback MTU "
          f"{lo_mtu()}; stacks alternate, {args.repeat} runs each")
    for run in range(args.repeat):
        for server in stacks:
            with server:
                rate, cpu = asyncio.run(measure(server, cafile, args.size, args.seconds,
                                                args.connections, args.streams))
            results[server.name].append((rate, cpu))
            print(f"  run {run + 1} {server.name:<12} {rate:9,.0f} req/s  "
                  f"{cpu * 1e6:7.1f} us CPU/req", flush=True)
    ours_rate = statistics.median(r for r, _ in results["aiopquic"])
    ours_cpu = statistics.median(c for _, c in results["aiopquic"])
    print(f"\n{'server':<11} {'req/s median':>13} {'min-max':>19} {'CPU/req':>10} "
          f"{'rate ratio':>11} {'CPU vs ours':>11}")
    for name, rows in results.items():
        rates = [r for r, _ in rows]
        cpu = statistics.median(c for _, c in rows)
        rate = statistics.median(rates)
        ratio = "ours" if name == "aiopquic" else f"{ours_rate / max(rate, 1e-9):.2f}x"
        cratio = "ours" if name == "aiopquic" else f"{cpu / max(ours_cpu, 1e-12):.2f}x"
        print(f"{name:<12} {rate:13,.0f} {min(rates):9,.0f}-{max(rates):<9,.0f} "
              f"{cpu * 1e6:7.1f} us {ratio:>11} {cratio:>10}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
