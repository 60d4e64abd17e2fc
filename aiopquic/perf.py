"""``python -m aiopquic perf``: a loopback transfer demo and sanity check.

Starts a server and a client on 127.0.0.1 (in this process, each endpoint with its own
network thread), with a self-signed certificate made at run time, uploads ``--mib`` MiB over
``--streams`` streams in ``--chunk``-byte writes (``writer.drain()`` after each), has the
server verify every byte, and prints the handshake time and throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from typing import Optional

from aiopquic._native import make_self_signed
from aiopquic.asyncio import connect, serve
from aiopquic.quic.configuration import QuicConfiguration

ALPN = "aiopquic-perf"


def _pattern(stream_index: int, size: int) -> bytes:
    """Deterministic block for one stream (the server regenerates it to verify)."""
    seed = hashlib.sha256(b"aiopquic-perf-%d" % stream_index).digest()
    return (seed * (size // len(seed) + 1))[:size]


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


async def run(mib: int, chunk: int, streams: int, progress: bool) -> int:
    """Run the demo; returns a process exit code (0 when every byte verified)."""
    cert, key = make_self_signed("localhost,127.0.0.1")
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert)
        with open(key_path, "wb") as f:
            f.write(key)
        server_cfg = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
        server_cfg.load_cert_chain(cert_path, key_path)
        client_cfg = QuicConfiguration(alpn_protocols=[ALPN], cafile=cert_path,
                                       server_name="localhost")
        return await _transfer(server_cfg, client_cfg, mib, chunk, streams, progress)


async def _transfer(server_cfg: QuicConfiguration, client_cfg: QuicConfiguration, mib: int,
                    chunk: int, streams: int, progress: bool) -> int:
    total = mib << 20
    per_stream = [total // streams + (1 if i < total % streams else 0) for i in range(streams)]
    loop = asyncio.get_running_loop()
    verified: asyncio.Queue[Optional[str]] = asyncio.Queue()
    meter = _Progress(total, progress)

    async def check(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(4)
        index = int.from_bytes(header, "big")
        expect = per_stream[index]
        block = _pattern(index, 1 << 20)
        got = 0
        error: Optional[str] = None
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            if error is None:
                off = got % len(block)
                view = memoryview(data)
                pos = 0
                while pos < len(view):
                    n = min(len(view) - pos, len(block) - off)
                    if view[pos:pos + n] != block[off:off + n]:
                        error = f"stream {index}: mismatch near byte {got + pos}"
                        break
                    pos += n
                    off = 0
            got += len(data)
            meter.add(len(data))
        if error is None and got != expect:
            error = f"stream {index}: got {got} bytes, expected {expect}"
        writer.write(b"ok" if error is None else b"bad")
        writer.write_eof()
        await verified.put(error)

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop.create_task(check(reader, writer))

    server = await serve("127.0.0.1", 0, configuration=server_cfg, stream_handler=on_stream)
    try:
        t0 = time.perf_counter()
        async with connect("127.0.0.1", server.local_port, configuration=client_cfg) as client:
            handshake = time.perf_counter() - t0
            print(f"aiopquic perf: {mib} MiB over {streams} stream(s), {chunk}-byte writes, "
                  f"ALPN {client._quic.alpn_protocol}")
            print(f"  handshake: {handshake * 1e3:.2f} ms")

            async def send(index: int) -> None:
                reader, writer = await client.create_stream()
                writer.write(index.to_bytes(4, "big"))
                block = _pattern(index, 1 << 20)
                left, off = per_stream[index], 0
                while left:
                    n = min(chunk, left, len(block) - off)
                    writer.write(block[off:off + n])
                    await writer.drain()
                    left -= n
                    off = (off + n) % len(block)
                writer.write_eof()
                await reader.read()

            start = time.perf_counter()
            await asyncio.gather(*(send(i) for i in range(streams)))
            errors: list[str] = []
            for _ in range(streams):
                err = await verified.get()
                if err:
                    errors.append(err)
            elapsed = time.perf_counter() - start
        meter.finish()
    finally:
        server.close()
    if errors:
        for err in errors:
            print("  FAILED:", err)
        return 1
    print(f"  transfer:  {elapsed:.3f} s, {total * 8 / elapsed / 1e6:.0f} Mbps "
          f"({total / elapsed / (1 << 20):.0f} MiB/s), every byte verified")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``python -m aiopquic perf``."""
    parser = argparse.ArgumentParser(prog="python -m aiopquic perf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="MiB to transfer (default 256)")
    parser.add_argument("--chunk", type=int, default=16384,
                        help="bytes per write (default 16384)")
    parser.add_argument("--streams", type=int, default=1, help="parallel streams (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress line")
    args = parser.parse_args(argv)
    for name in ("mib", "chunk", "streams"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    progress = sys.stdout.isatty() and not args.no_progress
    return asyncio.run(run(args.mib, args.chunk, args.streams, progress))
