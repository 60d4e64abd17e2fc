"""``python -m aiopquic perf``: a loopback transfer demo and sanity check.

Starts a server (in a child process, so that client and server each have their own
interpreter, as in real use; ``--in-process`` keeps both here) and a client on 127.0.0.1
(``--host ::1`` for IPv6), with a self-signed ECDSA certificate made at run time.  The client
uploads ``--mib`` MiB over ``--streams`` streams in ``--chunk``-byte writes (``await
writer.drain()`` after each); the server checks a CRC-32 of every stream against the expected
pattern and answers "ok".  Prints the handshake time, the throughput and the packet size the
path settled on; exits 1 if any byte was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Optional

from aiopquic._native import make_self_signed
from aiopquic.asyncio import connect, serve
from aiopquic.asyncio.server import QuicServer
from aiopquic.quic.configuration import QuicConfiguration

ALPN = "aiopquic-perf"
_BLOCK = 1 << 20


def _pattern(stream_index: int) -> bytes:
    """The deterministic 1 MiB block stream ``stream_index`` repeats."""
    seed = hashlib.sha256(b"aiopquic-perf-%d" % stream_index).digest()
    return (seed * (_BLOCK // len(seed) + 1))[:_BLOCK]


def _expected_crc(stream_index: int, size: int) -> int:
    block = _pattern(stream_index)
    crc = 0
    for _ in range(size // _BLOCK):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(block[:size % _BLOCK], crc)


def _split(total: int, streams: int) -> list[int]:
    return [total // streams + (1 if i < total % streams else 0) for i in range(streams)]


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled
        self.start = time.perf_counter()
        self._last = 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            rate = self.done * 8 / max(now - self.start, 1e-9) / 1e6
            pct = 100.0 * self.done / self.total if self.total else 100.0
            bar = "#" * int(pct / 4)
            sys.stdout.write(f"\r  [{bar:<25}] {pct:5.1f}%  {self.done >> 20:6d} MiB  "
                             f"{rate:8.0f} Mbps")
            sys.stdout.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stdout.write("\n")


# ---------------------------------------------------------------------------- server side

async def _serve(cert: str, key: str, mib: int, streams: int,
                 host: str = "127.0.0.1") -> tuple[QuicServer, asyncio.Event]:
    """Serve the verifying sink; returns the server and an event set when every stream was
    checked."""
    sizes = _split(mib << 20, streams)
    expected = [_expected_crc(i, n) for i, n in enumerate(sizes)]  # before any timing
    config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
    config.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    all_done = asyncio.Event()
    finished: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def check(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = int.from_bytes(await reader.readexactly(4), "big")
        crc, got = 0, 0
        while True:
            data = await reader.read(_BLOCK)
            if not data:
                break
            crc = zlib.crc32(data, crc)
            got += len(data)
        ok = 0 <= index < streams and got == sizes[index] and crc == expected[index]
        writer.write(b"ok" if ok else b"bad: stream %d, %d bytes" % (index, got))
        writer.write_eof()
        finished.append(index)
        if len(finished) == streams:
            all_done.set()

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = loop.create_task(check(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await serve(host, 0, configuration=config, stream_handler=on_stream)
    return server, all_done


async def _serve_child(cert: str, key: str, mib: int, streams: int, host: str) -> None:
    server, all_done = await _serve(cert, key, mib, streams, host)
    print(f"PORT {server.local_port}", flush=True)
    try:
        await asyncio.wait_for(all_done.wait(), 3600)
        await asyncio.sleep(0.5)  # let the last answers be acknowledged
    finally:
        server.close()


# ---------------------------------------------------------------------------- client side

async def _client(port: int, cert: str, mib: int, chunk: int, streams: int,
                  progress: bool, host: str = "127.0.0.1") -> int:
    sizes = _split(mib << 20, streams)
    meter = _Progress(mib << 20, progress)
    config = QuicConfiguration(alpn_protocols=[ALPN], cafile=cert, server_name="localhost")
    t0 = time.perf_counter()
    async with connect(host, port, configuration=config) as client:
        handshake = time.perf_counter() - t0
        print(f"aiopquic perf: {mib} MiB over {streams} stream(s), {chunk}-byte writes, "
              f"ALPN {client._quic.alpn_protocol}")
        print(f"  handshake: {handshake * 1e3:.2f} ms")

        async def send(index: int) -> bytes:
            reader, writer = await client.create_stream()
            writer.write(index.to_bytes(4, "big"))
            block = _pattern(index)
            left, off = sizes[index], 0
            while left:
                n = min(chunk, left, _BLOCK - off)
                writer.write(block[off:off + n])
                await writer.drain()
                meter.add(n)
                left -= n
                off = (off + n) % _BLOCK
            writer.write_eof()
            return await reader.read()

        start = time.perf_counter()
        answers = await asyncio.gather(*(send(i) for i in range(streams)))
        elapsed = time.perf_counter() - start
        stats = await client.get_stats()
    meter.finish()
    bad = [a.decode(errors="replace") for a in answers if a != b"ok"]
    if bad:
        for answer in bad:
            print("  FAILED:", answer)
        return 1
    total = mib << 20
    print(f"  transfer:  {elapsed:.3f} s, {total * 8 / elapsed / 1e6:.0f} Mbps "
          f"({total / elapsed / (1 << 20):.0f} MiB/s), every byte verified")
    extra = ""
    if stats.emsgsize or stats.blackholes:
        extra = f", {stats.emsgsize} EMSGSIZE, {stats.blackholes} black hole(s)"
    print(f"  path: {stats.max_datagram_size}-byte packets, "
          f"RTT {stats.smoothed_rtt * 1e6:.0f} us{extra}")
    return 0


async def _in_process(cert: str, key: str, mib: int, chunk: int, streams: int,
                      progress: bool, host: str) -> int:
    server, _ = await _serve(cert, key, mib, streams, host)
    try:
        return await _client(server.local_port, cert, mib, chunk, streams, progress, host)
    finally:
        server.close()


def _two_processes(cert: str, key: str, mib: int, chunk: int, streams: int,
                   progress: bool, host: str) -> int:
    cmd = [sys.executable, "-m", "aiopquic.perf", "--serve-child", cert, key, str(mib),
           str(streams), "--host", host]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.startswith("PORT "):
                print("perf: the server process did not start", file=sys.stderr)
                return 1
            rc = asyncio.run(_client(int(line.split()[1]), cert, mib, chunk, streams,
                                     progress, host))
            child.wait(timeout=30)
            return rc
        finally:
            if child.poll() is None:
                child.kill()
            with contextlib.suppress(Exception):
                child.wait(timeout=5)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``python -m aiopquic perf``."""
    parser = argparse.ArgumentParser(prog="python -m aiopquic perf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="MiB to transfer (default 256)")
    parser.add_argument("--chunk", type=int, default=16384,
                        help="bytes per write (default 16384)")
    parser.add_argument("--streams", type=int, default=1, help="parallel streams (default 1)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the server in this process too (one Python thread for both)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress line")
    parser.add_argument("--host", default="127.0.0.1",
                        help="loopback address to use: 127.0.0.1 (default) or ::1 for IPv6")
    parser.add_argument("--serve-child", nargs=4, metavar=("CERT", "KEY", "MIB", "STREAMS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_child:
        cert, key, mib, streams = args.serve_child
        asyncio.run(_serve_child(cert, key, int(mib), int(streams), args.host))
        return 0
    for name in ("mib", "chunk", "streams"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    progress = sys.stdout.isatty() and not args.no_progress
    cert_pem, key_pem = make_self_signed("localhost,127.0.0.1,::1")
    with tempfile.TemporaryDirectory() as tmp:
        cert = os.path.join(tmp, "cert.pem")
        key = os.path.join(tmp, "key.pem")
        with open(cert, "wb") as f:
            f.write(cert_pem)
        with open(key, "wb") as f:
            f.write(key_pem)
        if args.in_process:
            return asyncio.run(_in_process(cert, key, args.mib, args.chunk, args.streams,
                                           progress, args.host))
        return _two_processes(cert, key, args.mib, args.chunk, args.streams, progress,
                              args.host)


if __name__ == "__main__":
    sys.exit(main())
