"""Benchmark peer for this project's aiopquic (ngtcp2 + GnuTLS): the asyncio API as an
application uses it (``connect``/``serve``, ``create_stream``, ``writer.write`` +
``await writer.drain()``).  See benchlib.py for the protocol; run.py drives it.

    python aiopquic_peer.py server --cert C --key K [--port 0] [--impl cubic|reno|bbr]
    python aiopquic_peer.py client --port P --ca CA --job '{"op": "upload", ...}' [--impl ..]

``--impl`` (optional) picks the congestion controller on that side
(``QuicConfiguration.congestion_control_algorithm``); without it the default (cubic) is used.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
import zlib
from typing import Any

import benchlib as bl

from aiopquic.asyncio import QuicConnectionProtocol, connect, serve
from aiopquic.quic import events
from aiopquic.quic.configuration import QuicConfiguration

IDLE_TIMEOUT = 300.0


# ---------------------------------------------------------------------------- server

class ServerProtocol(QuicConnectionProtocol):
    """Counts datagrams; streams go to the stream handler (default behaviour)."""

    counter: bl.DgramCounter

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.DatagramFrameReceived):
            self.counter.feed(event.data)
            return
        super().quic_event_received(event)


async def handle_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        counter_of: Any) -> None:
    try:
        hdr = await reader.readexactly(bl.HEADER.size)
        op, size, chunk, extra = bl.HEADER.unpack(hdr)
        if op == b"U":
            sink = bl.UploadSink()
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                sink.feed(data)
            writer.write(sink.reply())
            writer.write_eof()
        elif op == b"D":
            parts, nfull, tail = bl.plan(size, chunk)
            n = len(parts)
            for i in range(nfull):
                writer.write(parts[i % n])
                await writer.drain()
            if tail:
                writer.write(tail)
            writer.write_eof()
            await writer.drain()
        elif op == b"E":
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
            writer.write_eof()
        elif op == b"Q":
            counter = counter_of(writer)
            deadline = time.monotonic() + extra / 1000.0
            while time.monotonic() < deadline and time.monotonic() - counter.last < 0.1:
                await asyncio.sleep(0.02)
            writer.write(bl.dgram_reply(counter))
            writer.write_eof()
        elif op == b"M":
            import json
            writer.write(json.dumps(bl.memory()).encode())
            writer.write_eof()
        else:
            writer.close()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass


async def run_server(args: dict[str, Any]) -> None:
    cfg = QuicConfiguration(is_client=False, alpn_protocols=[bl.ALPN],
                            max_datagram_frame_size=65535, idle_timeout=IDLE_TIMEOUT,
                            max_streams_bidi=1000,
                            # the load generator opens every connection from one address
                            handshake_rate_per_source=0, max_half_open=4096)
    if args.get("impl"):
        cfg.congestion_control_algorithm = args["impl"]
    cfg.load_cert_chain(args["cert"], args["key"])
    loop = asyncio.get_running_loop()
    tasks = set()

    def make_protocol(quic: Any, stream_handler: Any = None) -> ServerProtocol:
        p = ServerProtocol(quic, stream_handler=stream_handler)
        p.counter = bl.DgramCounter()
        return p

    def counter_of(writer: asyncio.StreamWriter) -> bl.DgramCounter:
        return writer.transport._protocol.counter  # type: ignore[attr-defined]

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t = loop.create_task(handle_stream(reader, writer, counter_of))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    server = await serve(args["host"], args["port"], configuration=cfg,
                         create_protocol=make_protocol, stream_handler=on_stream)
    bl.emit({"ready": True, "port": server.local_port, "pid": bl.pid()})
    await asyncio.Event().wait()  # until killed


# ---------------------------------------------------------------------------- client

def client_config(args: dict[str, Any]) -> QuicConfiguration:
    cfg = QuicConfiguration(alpn_protocols=[bl.ALPN], cafile=args["ca"],
                            server_name="localhost", max_datagram_frame_size=65535,
                            idle_timeout=IDLE_TIMEOUT)
    if args.get("impl"):
        cfg.congestion_control_algorithm = args["impl"]
    return cfg


def _connect(args: dict[str, Any]) -> Any:
    return connect(args["host"], args["port"], configuration=client_config(args))


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await reader.read()


async def upload(client: QuicConnectionProtocol, size: int, chunk: int, streams: int
                 ) -> dict[str, Any]:
    per = [size // streams + (1 if i < size % streams else 0) for i in range(streams)]
    crcs = [bl.expected_crc(n) for n in per]
    plans = [bl.plan(n, chunk) for n in per]
    pairs = [await client.create_stream() for _ in range(streams)]

    async def one(i: int) -> None:
        reader, writer = pairs[i]
        parts, nfull, tail = plans[i]
        n = len(parts)
        writer.write(bl.header(b"U", per[i], chunk))
        for k in range(nfull):
            writer.write(parts[k % n])
            await writer.drain()
        if tail:
            writer.write(tail)
        writer.write_eof()
        bl.check_upload_reply(await _read_all(reader), per[i], crcs[i])

    mem0 = bl.memory()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(streams)))
    dt = time.perf_counter() - t0
    return {"bytes": size, "seconds": dt, "mbps": size * 8 / dt / 1e6,
            "rss_before_kib": mem0["rss_kib"], **bl.memory()}


async def download(client: QuicConnectionProtocol, size: int, chunk: int) -> dict[str, Any]:
    crc_expect = bl.expected_crc(size)
    reader, writer = await client.create_stream()
    mem0 = bl.memory()
    t0 = time.perf_counter()
    writer.write(bl.header(b"D", size, chunk))
    writer.write_eof()
    crc = 0
    got = 0
    while True:
        data = await reader.read(1 << 20)
        if not data:
            break
        got += len(data)
        crc = zlib.crc32(data, crc)
    dt = time.perf_counter() - t0
    if got != size or crc != crc_expect:
        raise AssertionError(f"download: got {got} bytes crc {crc:#x}, "
                             f"expected {size} crc {crc_expect:#x}")
    return {"bytes": size, "seconds": dt, "mbps": size * 8 / dt / 1e6,
            "rss_before_kib": mem0["rss_kib"], **bl.memory()}


async def rtt(client: QuicConnectionProtocol, count: int, warmup: int) -> dict[str, Any]:
    reader, writer = await client.create_stream()
    writer.write(bl.header(b"E", bl.RTT_SIZE))
    msg = bl.block()[:bl.RTT_SIZE]
    samples: list[float] = []
    for i in range(warmup + count):
        t0 = time.perf_counter()
        writer.write(msg)
        back = await reader.readexactly(bl.RTT_SIZE)
        dt = time.perf_counter() - t0
        if back != msg:
            raise AssertionError("echo mismatch")
        if i >= warmup:
            samples.append(dt)
    writer.write_eof()
    await reader.read()
    return bl.rtt_result(samples)




async def datagrams(client: QuicConnectionProtocol, duration: float, burst: int
                    ) -> dict[str, Any]:
    quic = client._quic
    body = bl.dgram_body()
    pack = struct.Struct("!Q").pack
    # a new connection's datagrams fit the 1,200-byte minimum packet until path MTU
    # discovery has confirmed more (a few round trips; at once on a 64 KiB loopback)
    wait_until = time.perf_counter() + 5
    while quic.max_datagram_size < len(body) + 8 and time.perf_counter() < wait_until:
        await asyncio.sleep(0.005)
    sent = 0
    mem0 = bl.memory()
    t0 = time.perf_counter()
    end = t0 + duration
    while time.perf_counter() < end:
        for _ in range(burst):
            quic.send_datagram_frame(pack(sent) + body)
            sent += 1
        await asyncio.sleep(0)
    dt = time.perf_counter() - t0
    reader, writer = await client.create_stream()
    writer.write(bl.header(b"Q", extra=3000))
    writer.write_eof()
    return bl.dgram_result(sent, await _read_all(reader), dt, mem0)




async def handshakes(args: dict[str, Any], count: int, concurrency: int, warmup: int,
                     shared: bool = False) -> dict[str, Any]:
    """``shared``: every connection on one ClientEndpoint (2 network threads) instead of a
    socket and thread each."""
    if not shared:
        return await _handshakes(args, count, concurrency, warmup, lambda: _connect(args))
    from aiopquic.asyncio import ClientEndpoint
    async with ClientEndpoint(client_config(args), threads=2) as endpoint:
        return await _handshakes(args, count, concurrency, warmup,
                                 lambda: endpoint.connect(args["host"], args["port"]))


async def _handshakes(args: dict[str, Any], count: int, concurrency: int, warmup: int,
                      opener: Any) -> dict[str, Any]:
    for _ in range(warmup):
        async with opener():
            pass
    times: list[float] = []
    if concurrency <= 1:
        for _ in range(count):
            t0 = time.perf_counter()
            async with opener():
                times.append(time.perf_counter() - t0)
        wall = sum(times)
    else:
        all_up = asyncio.Event()

        async def one() -> None:
            t0 = time.perf_counter()
            async with opener():
                times.append(time.perf_counter() - t0)
                if len(times) == count:
                    all_up.set()
                await all_up.wait()

        start = time.perf_counter()
        tasks = [asyncio.ensure_future(one()) for _ in range(count)]
        await all_up.wait()
        wall = time.perf_counter() - start
        await asyncio.gather(*tasks)
    return bl.hs_result(times, wall, concurrency)




async def server_memory(client: QuicConnectionProtocol) -> dict[str, int]:
    import json
    reader, writer = await client.create_stream()
    writer.write(bl.header(b"M"))
    writer.write_eof()
    return json.loads(await _read_all(reader))


async def idle(args: dict[str, Any], count: int, batch: int, shared: bool = False,
               threads: int = 2) -> dict[str, Any]:
    endpoint = None
    if shared:  # every held connection on one ClientEndpoint (a few threads and sockets)
        from aiopquic.asyncio import ClientEndpoint
        endpoint = ClientEndpoint(client_config(args), threads=threads)
    try:
        return await _idle(args, count, batch, endpoint)
    finally:
        if endpoint is not None:
            endpoint.close()


async def _idle(args: dict[str, Any], count: int, batch: int, endpoint: Any
                ) -> dict[str, Any]:
    async with _connect(args) as first:
        base = await server_memory(first)
        release = asyncio.Event()
        up: list[int] = []
        errors: list[BaseException] = []
        sem = asyncio.Semaphore(batch)

        async def hold() -> None:
            try:
                async with sem:
                    cm = _connect(args) if endpoint is None else \
                        endpoint.connect(args["host"], args["port"])
                    proto = await cm.__aenter__()
                up.append(1)
                try:
                    await release.wait()
                finally:
                    if proto._quic.closed:
                        errors.append(ConnectionError("connection closed while idle"))
                    await cm.__aexit__(None, None, None)
            except BaseException as exc:  # noqa: B036 - recorded and re-raised below
                errors.append(exc)
                up.append(0)

        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(hold()) for _ in range(count)]
        while len(up) < count and not errors:
            await asyncio.sleep(0.05)
        opened = time.perf_counter() - t0
        await asyncio.sleep(0.5)  # let the server settle (timers, ACKs)
        after = await server_memory(first)
        client_mem = bl.memory()
        idle_s = float(args["job"].get("idle_seconds", 0))
        window = None
        if idle_s:  # nothing happens now: what do the idle connections cost the server?
            await asyncio.sleep(10.0)  # settle: path MTU searches, acknowledgements
            start = await server_memory(first)
            await asyncio.sleep(idle_s)
            window = (start, await server_memory(first))
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if errors:
            raise AssertionError(f"{len(errors)} idle connections failed: {errors[0]!r}")
    return bl.idle_result(count, base, after, opened, client_mem, window, idle_s)




async def run_client(args: dict[str, Any]) -> dict[str, Any]:
    job = args["job"]
    op = job["op"]
    if op == "handshake":
        return await handshakes(args, job["count"], job.get("concurrency", 1),
                                job.get("warmup", 3), job.get("shared", False))
    if op == "idle":
        return await idle(args, job["count"], job.get("batch", 50), job.get("shared", False),
                          job.get("threads", 2))
    async with _connect(args) as client:
        if op == "upload":
            return await upload(client, job["size"], job["chunk"], job.get("streams", 1))
        if op == "download":
            return await download(client, job["size"], job["chunk"])
        if op == "rtt":
            return await rtt(client, job["count"], job.get("warmup", 100))
        if op == "datagram":
            return await datagrams(client, job["duration"], job.get("burst", 32))
    raise ValueError(f"unknown op {op!r}")


def main() -> int:
    args = bl.job_from_argv(sys.argv[1:])
    bl.raise_nofile()
    if args["mode"] == "server":
        try:
            asyncio.run(run_server(args))
        except KeyboardInterrupt:
            pass
        return 0
    timeout = float(args["job"].get("timeout", 120))
    try:
        result = asyncio.run(asyncio.wait_for(run_client(args), timeout))
    except BaseException as exc:  # noqa: B036 - reported to the harness
        bl.emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    bl.emit({"ok": True, "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
