"""WebTransport throughput peer, written once against aiopquic 0.6.1's WebTransport API
(``aiopquic.asyncio.webtransport``: ``serve_webtransport(host, port, path, handler=,
cert_file=, key_file=)``, ``connect_webtransport(host, port, path, ...)``, the session's
``create_stream`` / ``send_stream_data_drained`` / ``receive_stream_data`` / ``events`` /
``send_datagram_frame`` / ``get_datagram_tx_drain_event``), which this project provides too.
The same file runs on either stack: whichever ``aiopquic`` the interpreter imports (this
tree's venv, or the 0.6.1 wheel in its Python 3.12 venv).  benchmarks/wt_throughput.py
drives it; not part of the test suite.

    python wt_peer.py server --port P --cert C --key K [--lifetime 600]
    python wt_peer.py client --port P --ca CA --scenario upload|download|datagrams
                             [--mib 64] [--seconds 3] [--crc] [--timeout 120]

The server prints ``READY <version>`` once listening.  The client prints one line
``RESULT {json}`` and exits 0 (1 on failure, with ``"error"`` in the JSON).

Wire protocol (one session per client run, one bidirectional stream):
  client -> server: 10-byte header: op (``U`` upload, ``D`` download, ``G`` datagrams),
  size (8 bytes big-endian), flags (bit 0: CRC-32 wanted);
  ``U``: then ``size`` bytes and FIN; the server answers with a JSON report and FIN;
  ``D``: the header carries FIN; the server sends ``size`` bytes and FIN;
  ``G``: the client sends datagrams, then FIN; the server answers with a JSON report of the
  datagrams it received so far, and FIN.
Python 3.9 syntax (the seed venv is 3.12, this tree's may be older).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
import zlib
from typing import Any, Optional

import aiopquic
from aiopquic.asyncio.webtransport import connect_webtransport, serve_webtransport
from aiopquic.quic import events as qev

PATH = "/bench"
HEADER = struct.Struct("!cQB")  # op, size, flags
WRITE = 16 * 1024
DGRAM = 1000
CHUNK = bytes(range(256)) * (WRITE // 256)  # 16 KiB of a fixed pattern
MAX_DGRAM_SENDS = 50_000_000  # bound on the datagram loop besides its deadline


def version() -> str:
    return str(getattr(aiopquic, "__version__", "?"))


def expected_crc(size: int) -> int:
    crc = 0
    full, tail = divmod(size, WRITE)
    for _ in range(full):
        crc = zlib.crc32(CHUNK, crc)
    return zlib.crc32(CHUNK[:tail], crc)


async def send_bytes(session: Any, sid: int, size: int) -> None:
    """``size`` bytes of the pattern in 16 KiB writes, FIN with the last (0.6.1's
    recommended sustained-send path on both stacks)."""
    full, tail = divmod(size, WRITE)
    last = full - 1 if not tail else -1
    for i in range(full):
        await session.send_stream_data_drained(sid, CHUNK, end_stream=i == last)
    if tail or not full:
        await session.send_stream_data_drained(sid, CHUNK[:tail], end_stream=True)


class Sink:
    """Counts the bytes after the header; times them from the first payload event to the
    FIN (the receiver's goodput)."""

    def __init__(self, crc: bool) -> None:
        self.header = b""
        self.count = 0
        self.first_len = 0
        self.t_first: Optional[float] = None
        self.t_last: Optional[float] = None
        self.want_crc = crc
        self.crc = 0
        self.fin = False
        self.reset: Optional[int] = None
        self.cpu0 = time.process_time()

    def feed(self, ev: Any, with_header: bool) -> None:
        if isinstance(ev, qev.WebTransportStreamReset):
            self.reset = ev.error_code
            return
        data = ev.data
        if with_header and len(self.header) < HEADER.size:
            need = HEADER.size - len(self.header)
            self.header += bytes(data[:need])
            data = data[need:]
            if len(self.header) == HEADER.size:
                self.want_crc = bool(HEADER.unpack(self.header)[2] & 1)
                self.cpu0 = time.process_time()
        n = len(data)
        if n:
            now = time.perf_counter()
            if self.t_first is None:
                self.t_first, self.first_len = now, n
            self.t_last = now
            self.count += n
            if self.want_crc:
                self.crc = zlib.crc32(data, self.crc)
        if ev.end_stream:
            self.fin = True
            if self.t_last is None or n == 0:
                self.t_last = time.perf_counter()

    def report(self) -> dict[str, Any]:
        span = (self.t_last - self.t_first) if self.t_first is not None and \
            self.t_last is not None else 0.0
        # bytes that arrived after the first event, over the time they took
        moved = self.count - self.first_len
        return {"bytes": self.count, "seconds": round(span, 6),
                "mbps": round(moved * 8 / span / 1e6, 2) if span > 0 else None,
                "crc": self.crc if self.want_crc else None, "fin": self.fin,
                "reset": self.reset}


# Where datagrams were lost, on stacks that count it (this tree: the sender's network thread
# drops the oldest datagrams when more than 1 MiB waits; a session's events() queue drops
# what arrives while 1024 events wait).  0.6.1 has neither counter: None there.


def _quic_of(session: Any) -> Any:
    proto = getattr(getattr(session, "_state", None), "_protocol", None)
    return getattr(proto, "_quic", None)


async def sender_dropped(session: Any) -> Optional[int]:
    quic = _quic_of(session)
    if quic is None or not hasattr(quic, "request_stats"):
        return None
    fut = asyncio.get_running_loop().create_future()
    quic.request_stats(lambda st: fut.done() or fut.set_result(st))
    try:
        stats = await asyncio.wait_for(fut, 5.0)
    except asyncio.TimeoutError:
        return None
    return int(stats.datagrams_dropped)


def receiver_dropped(session: Any) -> Optional[int]:
    quic = _quic_of(session)
    if quic is None or not hasattr(session, "events_dropped"):
        return None
    return int(session.events_dropped) + int(getattr(quic, "received_datagrams_dropped", 0))


# ---------------------------------------------------------------------- server


class Datagrams:
    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.t_first: Optional[float] = None
        self.t_last: Optional[float] = None

    def report(self) -> dict[str, Any]:
        span = (self.t_last - self.t_first) if self.t_first is not None and \
            self.t_last is not None else 0.0
        return {"received": self.count, "bytes": self.bytes, "seconds": round(span, 6),
                "per_s": round((self.count - 1) / span, 1) if span > 0 else None}


async def serve_stream(session: Any, sid: int, dgrams: Datagrams) -> None:
    sink = Sink(crc=False)
    async for ev in session.receive_stream_data(sid):
        sink.feed(ev, True)
        if sink.reset is not None or sink.fin:
            break
    if len(sink.header) < HEADER.size:
        return
    op, size, _flags = HEADER.unpack(sink.header)
    if op == b"U":
        reply = sink.report()
    elif op == b"D":
        await send_bytes(session, sid, size)
        return
    elif op == b"G":
        reply = dgrams.report()
        reply["receiver_dropped"] = receiver_dropped(session)
    else:
        reply = {"error": f"unknown op {op!r}"}
    reply["server_cpu"] = round(time.process_time() - sink.cpu0, 3)
    await session.send_stream_data_drained(sid, json.dumps(reply).encode(), end_stream=True)


async def handle(session: Any, lifetime: float) -> None:
    dgrams = Datagrams()
    tasks: set[asyncio.Future[Any]] = set()

    async def run() -> None:
        async for ev in session.events():  # ends with the session's close
            if isinstance(ev, qev.WebTransportDatagramReceived):
                now = time.perf_counter()
                if dgrams.t_first is None:
                    dgrams.t_first = now
                dgrams.t_last = now
                dgrams.count += 1
                dgrams.bytes += len(ev.data)
            elif isinstance(ev, qev.WebTransportNewStream):
                t = asyncio.ensure_future(serve_stream(session, ev.stream_id, dgrams))
                tasks.add(t)
                t.add_done_callback(tasks.discard)

    try:
        await asyncio.wait_for(run(), lifetime)
    except asyncio.TimeoutError:
        pass
    finally:
        for t in list(tasks):
            t.cancel()


async def server(args: argparse.Namespace) -> None:
    srv = await serve_webtransport("127.0.0.1", args.port, PATH,
                                   handler=lambda s: handle(s, args.lifetime),
                                   cert_file=args.cert, key_file=args.key)
    print(f"READY {version()}", flush=True)
    try:
        await asyncio.sleep(args.lifetime)  # the driver terminates us sooner
    finally:
        srv.close()


# ---------------------------------------------------------------------- client


async def read_all(session: Any, sid: int) -> bytes:
    parts: list[bytes] = []
    async for ev in session.receive_stream_data(sid):
        if isinstance(ev, qev.WebTransportStreamReset):
            raise ConnectionError(f"stream {sid} reset ({ev.error_code:#x})")
        parts.append(bytes(ev.data))
        if ev.end_stream:
            break
    return b"".join(parts)


async def upload(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    size = args.mib * 1024 * 1024
    sid = await session.create_stream(bidir=True)
    cpu = time.process_time()
    t0 = time.perf_counter()
    await session.send_stream_data_drained(sid, HEADER.pack(b"U", size, int(args.crc)))
    await send_bytes(session, sid, size)
    sent = time.perf_counter() - t0
    reply = json.loads(await read_all(session, sid))
    out = {"bytes": reply["bytes"], "mbps": reply["mbps"], "seconds": reply["seconds"],
           "sender_seconds": round(sent, 6),
           "client_cpu": round(time.process_time() - cpu, 3),
           "server_cpu": reply.get("server_cpu"),
           "ok": reply["bytes"] == size and reply["fin"]}
    if args.crc:
        out["crc_ok"] = reply["crc"] == expected_crc(size)
        out["ok"] = out["ok"] and out["crc_ok"]
    return out


async def download(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    size = args.mib * 1024 * 1024
    want = expected_crc(size) if args.crc else None
    sid = await session.create_stream(bidir=True)
    cpu = time.process_time()
    sink = Sink(crc=args.crc)
    await session.send_stream_data_drained(sid, HEADER.pack(b"D", size, int(args.crc)),
                                           end_stream=True)
    async for ev in session.receive_stream_data(sid):
        sink.feed(ev, False)
        if sink.reset is not None or sink.fin:
            break
    out = sink.report()
    out["client_cpu"] = round(time.process_time() - cpu, 3)
    out["ok"] = sink.count == size and sink.fin
    if args.crc:
        out["crc_ok"] = sink.crc == want
        out["ok"] = out["ok"] and out["crc_ok"]
    return out


async def datagrams(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    sid = await session.create_stream(bidir=True)
    await session.send_stream_data_drained(sid, HEADER.pack(b"G", 0, 0))
    payload = b"d" * DGRAM
    sent = full = 0
    drain = session.get_datagram_tx_drain_event()
    cpu = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + args.seconds
    for _ in range(MAX_DGRAM_SENDS):
        now = time.perf_counter()
        if now >= deadline:
            break
        if session.send_datagram_frame(payload):
            sent += 1
            if sent % 64 == 0:
                await asyncio.sleep(0)  # let the loop take events (drain, acks)
            continue
        full += 1  # queue full: wait for room (bounded by the deadline), resend
        try:
            await asyncio.wait_for(drain.wait(), max(deadline - now, 0.001))
        except asyncio.TimeoutError:
            pass
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu
    await session.send_stream_data_drained(sid, b"", end_stream=True)
    reply = json.loads(await read_all(session, sid))
    dropped = await sender_dropped(session)
    return {"sent": sent, "sent_per_s": round(sent / elapsed, 1), "queue_full": full,
            "received": reply["received"], "recv_per_s": reply["per_s"],
            "recv_seconds": reply["seconds"], "client_cpu": round(cpu, 3),
            "loss": round(1 - reply["received"] / sent, 4) if sent else None,
            "sender_dropped": dropped, "receiver_dropped": reply.get("receiver_dropped"),
            "ok": reply["received"] > 0}


SCENARIOS = {"upload": upload, "download": download, "datagrams": datagrams}


async def client(args: argparse.Namespace) -> dict[str, Any]:
    async with connect_webtransport("127.0.0.1", args.port, PATH, sni="localhost",
                                    ca_file=args.ca, timeout=10.0) as session:
        result = await SCENARIOS[args.scenario](session, args)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("role", choices=("server", "client"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--ca")
    ap.add_argument("--lifetime", type=float, default=600.0, help="server: seconds to live")
    ap.add_argument("--scenario", choices=tuple(SCENARIOS), default="upload")
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--crc", action="store_true")
    ap.add_argument("--timeout", type=float, default=120.0, help="client: whole run")
    args = ap.parse_args()
    if args.role == "server":
        asyncio.run(server(args))
        return 0
    result: dict[str, Any] = {"scenario": args.scenario, "version": version()}
    try:
        result.update(asyncio.run(asyncio.wait_for(client(args), args.timeout)))
    except Exception as exc:  # reported to the driver, which shows it
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
