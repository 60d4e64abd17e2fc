"""Event-driven benchmark peer shared by the stacks whose natural API is
``protocol._quic.send_stream_data`` + ``quic_event_received`` (aioquic, qh3, and the
picoquic-based aiopquic 0.6.1 "seed").  A small adapter (``Impl``) supplies what differs:
imports, configuration, how bulk data is pushed, datagrams.  See benchlib.py for the protocol.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import zlib
from typing import Any, Callable, Optional

import benchlib as bl


class Impl:
    """What a stack must provide (subclassed by each peer script)."""

    name = "?"
    StreamDataReceived: Any = None
    DatagramFrameReceived: Any = None
    ProtocolBase: Any = None

    def server_config(self, args: dict[str, Any]) -> Any:
        raise NotImplementedError

    def client_config(self, args: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def serve(self, args: dict[str, Any], cfg: Any, create_protocol: Any) -> Any:
        raise NotImplementedError

    def connect(self, args: dict[str, Any], cfg: Any, create_protocol: Any) -> Any:
        """An async context manager yielding the protocol."""
        raise NotImplementedError

    def send_now(self, proto: Any, sid: int, data: bytes, end: bool = False) -> None:
        """Queue a small write and flush it (never waits)."""
        raise NotImplementedError

    async def send_bulk(self, proto: Any, sid: int, parts: list[bytes], nfull: int,
                        tail: bytes, job: dict[str, Any]) -> None:
        """Send ``nfull`` writes cycling through ``parts``, then ``tail`` and FIN."""
        raise NotImplementedError

    async def send_datagram(self, proto: Any, data: bytes) -> None:
        raise NotImplementedError

    def flush(self, proto: Any) -> None:
        """Make queued frames leave (aioquic: transmit())."""

    def next_stream_id(self, proto: Any) -> int:
        return int(proto._quic.get_next_available_stream_id())

    def is_closed(self, proto: Any) -> bool:
        return False


# ---------------------------------------------------------------------------- per-stream

class ServerStream:
    """Server side of one benchmark stream."""

    def __init__(self, proto: Any, sid: int) -> None:
        self.proto = proto
        self.sid = sid
        self.hdr = b""
        self.op: Optional[bytes] = None
        self.sink: Optional[bl.UploadSink] = None

    def data(self, data: Any, fin: bool) -> None:
        proto = self.proto
        impl: Impl = proto.bench_impl
        if self.op is None:
            need = bl.HEADER.size - len(self.hdr)
            self.hdr += bytes(data[:need])
            data = data[need:]
            if len(self.hdr) < bl.HEADER.size:
                return
            op, size, chunk, extra = bl.HEADER.unpack(self.hdr)
            self.op = op
            if op == b"U":
                self.sink = bl.UploadSink()
            elif op == b"D":
                parts, nfull, tail = bl.plan(size, chunk)
                proto.bench_spawn(impl.send_bulk(proto, self.sid, parts, nfull, tail, {}))
            elif op == b"Q":
                proto.bench_spawn(self._dgram_reply(extra))
            elif op == b"M":
                impl.send_now(proto, self.sid, json.dumps(bl.memory()).encode(), True)
        op = self.op
        if op == b"U":
            if data:
                self.sink.feed(data)  # type: ignore[union-attr]
            if fin:
                impl.send_now(proto, self.sid, self.sink.reply(), True)  # type: ignore
        elif op == b"E":
            if data or fin:
                impl.send_now(proto, self.sid, bytes(data), fin)

    async def _dgram_reply(self, extra_ms: int) -> None:
        counter = self.proto.bench_dgrams
        deadline = time.monotonic() + extra_ms / 1000.0
        while time.monotonic() < deadline and time.monotonic() - counter.last < 0.1:
            await asyncio.sleep(0.02)
        self.proto.bench_impl.send_now(
            self.proto, self.sid, bl.dgram_reply(counter), True)


class Collect:
    """Client side: keep (or CRC) everything until FIN."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.buf = bytearray()
        self.count = 0
        self.crc = 0
        self.done = asyncio.get_running_loop().create_future()

    def data(self, data: Any, fin: bool) -> None:
        if self.keep:
            self.buf += data
        else:
            self.count += len(data)
            self.crc = zlib.crc32(data, self.crc)
        if fin and not self.done.done():
            self.done.set_result(None)


class Exact:
    """Client side for echo: wait for exactly ``n`` more bytes."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.need = 0
        self.fut: Optional[asyncio.Future[None]] = None
        self.fin = False

    def data(self, data: Any, fin: bool) -> None:
        self.buf += data
        self.fin = self.fin or fin
        if self.fut is not None and (len(self.buf) >= self.need or fin) and not self.fut.done():
            self.fut.set_result(None)

    async def read(self, n: int) -> bytes:
        if len(self.buf) < n and not self.fin:
            self.need = n
            self.fut = asyncio.get_running_loop().create_future()
            await self.fut
            self.fut = None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def make_protocol_class(impl: Impl, server: bool) -> Any:
    base = impl.ProtocolBase
    sdr = impl.StreamDataReceived
    dfr = impl.DatagramFrameReceived

    class BenchProtocol(base):  # type: ignore[misc, valid-type]
        bench_impl = impl
        bench_server = server

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.bench_streams: dict[int, Any] = {}
            self.bench_dgrams = bl.DgramCounter()
            self.bench_tasks: set = set()

        def bench_spawn(self, coro: Any) -> None:
            t = asyncio.ensure_future(coro)
            self.bench_tasks.add(t)
            t.add_done_callback(self.bench_tasks.discard)

        def quic_event_received(self, event: Any) -> None:
            t = type(event)
            if t is sdr:
                sid = event.stream_id
                h = self.bench_streams.get(sid)
                if h is None:
                    if not self.bench_server:
                        return
                    h = self.bench_streams[sid] = ServerStream(self, sid)
                h.data(event.data, event.end_stream)
            elif t is dfr:
                self.bench_dgrams.feed(event.data)

    return BenchProtocol


# ---------------------------------------------------------------------------- server

async def run_server(impl: Impl, args: dict[str, Any]) -> None:
    proto_cls = make_protocol_class(impl, server=True)
    cfg = impl.server_config(args)
    server = await impl.serve(args, cfg, proto_cls)
    bl.emit({"ready": True, "port": args["port"], "pid": bl.pid()})
    try:
        await asyncio.Event().wait()
    finally:
        server.close()


# ---------------------------------------------------------------------------- client

class Client:
    def __init__(self, impl: Impl, args: dict[str, Any]) -> None:
        self.impl = impl
        self.args = args
        self.proto_cls = make_protocol_class(impl, server=False)

    def connect(self) -> Any:
        return self.impl.connect(self.args, self.impl.client_config(self.args), self.proto_cls)

    def open(self, proto: Any, handler: Any) -> int:
        sid = self.impl.next_stream_id(proto)
        proto.bench_streams[sid] = handler
        return sid

    async def upload(self, proto: Any, job: dict[str, Any]) -> dict[str, Any]:
        size, chunk, streams = job["size"], job["chunk"], job.get("streams", 1)
        impl = self.impl
        per = [size // streams + (1 if i < size % streams else 0) for i in range(streams)]
        crcs = [bl.expected_crc(n) for n in per]
        plans = [bl.plan(n, chunk) for n in per]

        async def one(i: int) -> None:
            col = Collect(keep=True)
            sid = self.open(proto, col)
            parts, nfull, tail = plans[i]
            impl.send_now(proto, sid, bl.header(b"U", per[i], chunk))
            await impl.send_bulk(proto, sid, parts, nfull, tail, job)
            await col.done
            bl.check_upload_reply(bytes(col.buf), per[i], crcs[i])

        mem0 = bl.memory()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(streams)))
        dt = time.perf_counter() - t0
        return {"bytes": size, "seconds": dt, "mbps": size * 8 / dt / 1e6,
                "rss_before_kib": mem0["rss_kib"], **bl.memory()}

    async def download(self, proto: Any, job: dict[str, Any]) -> dict[str, Any]:
        size, chunk = job["size"], job["chunk"]
        crc_expect = bl.expected_crc(size)
        col = Collect(keep=False)
        mem0 = bl.memory()
        t0 = time.perf_counter()
        sid = self.open(proto, col)
        self.impl.send_now(proto, sid, bl.header(b"D", size, chunk), True)
        await col.done
        dt = time.perf_counter() - t0
        if col.count != size or (col.crc & 0xFFFFFFFF) != crc_expect:
            raise AssertionError(f"download: got {col.count} bytes crc {col.crc:#x}, "
                                 f"expected {size} crc {crc_expect:#x}")
        return {"bytes": size, "seconds": dt, "mbps": size * 8 / dt / 1e6,
                "rss_before_kib": mem0["rss_kib"], **bl.memory()}

    async def rtt(self, proto: Any, job: dict[str, Any]) -> dict[str, Any]:
        count, warmup = job["count"], job.get("warmup", 100)
        ex = Exact()
        sid = self.open(proto, ex)
        impl = self.impl
        impl.send_now(proto, sid, bl.header(b"E", bl.RTT_SIZE))
        msg = bl.block()[:bl.RTT_SIZE]
        samples: list[float] = []
        for i in range(warmup + count):
            t0 = time.perf_counter()
            impl.send_now(proto, sid, msg)
            back = await ex.read(bl.RTT_SIZE)
            dt = time.perf_counter() - t0
            if back != msg:
                raise AssertionError(f"echo mismatch ({len(back)} bytes)")
            if i >= warmup:
                samples.append(dt)
        impl.send_now(proto, sid, b"", True)
        return bl.rtt_result(samples)

    async def datagram(self, proto: Any, job: dict[str, Any]) -> dict[str, Any]:
        duration, burst = job["duration"], job.get("burst", 32)
        impl = self.impl
        body = bl.dgram_body()
        pack = struct.Struct("!Q").pack
        sent = 0
        mem0 = bl.memory()
        t0 = time.perf_counter()
        end = t0 + duration
        while time.perf_counter() < end:
            for _ in range(burst):
                await impl.send_datagram(proto, pack(sent) + body)
                sent += 1
            impl.flush(proto)
            await asyncio.sleep(0)
        dt = time.perf_counter() - t0
        col = Collect(keep=True)
        sid = self.open(proto, col)
        impl.send_now(proto, sid, bl.header(b"Q", extra=3000), True)
        await col.done
        return bl.dgram_result(sent, bytes(col.buf), dt, mem0)

    async def handshake(self, job: dict[str, Any]) -> dict[str, Any]:
        count, conc, warmup = job["count"], job.get("concurrency", 1), job.get("warmup", 3)
        for _ in range(warmup):
            async with self.connect():
                pass
        times: list[float] = []
        if conc <= 1:
            for _ in range(count):
                t0 = time.perf_counter()
                async with self.connect():
                    times.append(time.perf_counter() - t0)
            wall = sum(times)
        else:
            all_up = asyncio.Event()

            async def one() -> None:
                t0 = time.perf_counter()
                async with self.connect():
                    times.append(time.perf_counter() - t0)
                    if len(times) == count:
                        all_up.set()
                    await all_up.wait()

            start = time.perf_counter()
            tasks = [asyncio.ensure_future(one()) for _ in range(count)]
            waiter = asyncio.ensure_future(all_up.wait())
            done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_EXCEPTION)
            wall = time.perf_counter() - start
            if not all_up.is_set():
                for t in tasks:
                    t.cancel()
                failed = [t for t in done if t is not waiter and t.exception()]
                raise AssertionError(f"concurrent handshakes failed: {failed[0].exception()!r}")
            await asyncio.gather(*tasks)
        return bl.hs_result(times, wall, conc)

    async def memory_of_server(self, proto: Any) -> dict[str, int]:
        col = Collect(keep=True)
        sid = self.open(proto, col)
        self.impl.send_now(proto, sid, bl.header(b"M"), True)
        await col.done
        return json.loads(bytes(col.buf))

    async def idle(self, job: dict[str, Any]) -> dict[str, Any]:
        count, batch = job["count"], job.get("batch", 50)
        async with self.connect() as first:
            base = await self.memory_of_server(first)
            release = asyncio.Event()
            up: list[int] = []
            errors: list[BaseException] = []
            sem = asyncio.Semaphore(batch)

            async def hold() -> None:
                try:
                    async with sem:
                        cm = self.connect()
                        proto = await cm.__aenter__()
                    up.append(1)
                    try:
                        await release.wait()
                    finally:
                        if self.impl.is_closed(proto):
                            errors.append(ConnectionError("connection closed while idle"))
                        await cm.__aexit__(None, None, None)
                except BaseException as exc:  # noqa: B036 - reported below
                    errors.append(exc)
                    up.append(0)

            t0 = time.perf_counter()
            tasks = [asyncio.ensure_future(hold()) for _ in range(count)]
            while len(up) < count and not errors:
                await asyncio.sleep(0.05)
            opened = time.perf_counter() - t0
            await asyncio.sleep(0.5)
            after = await self.memory_of_server(first)
            client_mem = bl.memory()
            idle_s = float(job.get("idle_seconds", 0))
            window = None
            if idle_s:  # nothing happens now: what do the idle connections cost the server?
                await asyncio.sleep(10.0)  # settle: path MTU searches, acknowledgements
                start = await self.memory_of_server(first)
                await asyncio.sleep(idle_s)
                window = (start, await self.memory_of_server(first))
            release.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if errors:
                raise AssertionError(f"{len(errors)} idle connections failed: {errors[0]!r}")
        return bl.idle_result(count, base, after, opened, client_mem, window, idle_s)

    async def run(self) -> dict[str, Any]:
        job = self.args["job"]
        op = job["op"]
        if op == "handshake":
            return await self.handshake(job)
        if op == "idle":
            return await self.idle(job)
        fn: Optional[Callable[..., Any]] = {
            "upload": self.upload, "download": self.download, "rtt": self.rtt,
            "datagram": self.datagram}.get(op)
        if fn is None:
            raise ValueError(f"unknown op {op!r}")
        async with self.connect() as proto:
            return await fn(proto, job)


def main(impl: Impl, argv: list[str]) -> int:
    args = bl.job_from_argv(argv)
    bl.raise_nofile()
    if args["mode"] == "server":
        try:
            asyncio.run(run_server(impl, args))
        except KeyboardInterrupt:
            pass
        return 0
    timeout = float(args["job"].get("timeout", 120))
    try:
        result = asyncio.run(asyncio.wait_for(Client(impl, args).run(), timeout))
    except BaseException as exc:  # noqa: B036 - reported to the harness
        bl.emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    bl.emit({"ok": True, "result": result})
    return 0
