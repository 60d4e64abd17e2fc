"""Shared pieces of the benchmark peers: the wire protocol, the data pattern, CRCs, RSS.

Every peer script (one per QUIC implementation) imports this module from its own directory,
so it must run unchanged on every interpreter a peer uses (CPython 3.9+; the seed peer runs
on 3.12 in its own venv).  No third-party imports here.

Protocol (ALPN ``bench``), one bidirectional stream per operation, opened by the client.
The stream starts with a 17-byte header ``!cQII`` = (op, size, chunk, extra):

``U`` upload    client sends ``size`` bytes of the pattern (in ``chunk``-byte writes) and
                FIN; the server replies ``!QI`` (bytes received, CRC-32 of them) and FIN.
``D`` download  client sends the header and FIN; the server sends ``size`` bytes of the
                pattern in ``chunk``-byte writes and FIN; the client checks the CRC.
``E`` echo      the server writes back every byte it receives after the header, until FIN.
``Q`` datagram  the client sent datagrams; the server waits until none arrived for 100 ms
      query     (at most ``extra`` ms), then replies ``!QQd`` (datagrams received, bad ones,
                seconds between the first and the last arrival).
``M`` memory    the server replies JSON ``{"rss_kib": .., "hwm_kib": ..}`` and FIN.

Datagrams (1200 bytes) are ``!Q`` sequence number + ``DGRAM_BODY[:size-8]``.
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
import time
import zlib
from typing import Any, Optional

ALPN = "bench"
HEADER = struct.Struct("!cQII")
REPLY_UPLOAD = struct.Struct("!QI")
REPLY_DGRAM = struct.Struct("!QQd")
BLOCK_SIZE = 1 << 20
DGRAM_SIZE = 1200
RTT_SIZE = 64

_block: Optional[bytes] = None


def block() -> bytes:
    """The 1 MiB pseudo-random block the pattern repeats (same bytes on every interpreter)."""
    global _block
    if _block is None:
        _block = random.Random(0x5EED).getrandbits(BLOCK_SIZE * 8).to_bytes(BLOCK_SIZE, "little")
    return _block


DGRAM_BODY_LEN = DGRAM_SIZE - 8


def dgram_body() -> bytes:
    """Bytes after the sequence number in every datagram."""
    return block()[:DGRAM_BODY_LEN]


def chunks(chunk: int) -> list[bytes]:
    """The pattern cut into ``chunk``-byte writes (``chunk`` must divide 1 MiB); made before
    timing so the send loop copies nothing."""
    if chunk <= 0 or BLOCK_SIZE % chunk:
        raise ValueError(f"chunk {chunk} must be a positive divisor of {BLOCK_SIZE}")
    b = block()
    return [b[i:i + chunk] for i in range(0, BLOCK_SIZE, chunk)]


def plan(size: int, chunk: int) -> tuple[list[bytes], int, bytes]:
    """(chunk list, number of full writes, tail) for sending ``size`` bytes of pattern."""
    parts = chunks(chunk)
    nfull, rest = divmod(size, chunk)
    tail = parts[nfull % len(parts)][:rest] if rest else b""
    return parts, nfull, tail


def expected_crc(size: int) -> int:
    """CRC-32 of the first ``size`` bytes of the repeating pattern."""
    b = block()
    crc = 0
    full, rest = divmod(size, BLOCK_SIZE)
    for _ in range(full):
        crc = zlib.crc32(b, crc)
    if rest:
        crc = zlib.crc32(b[:rest], crc)
    return crc & 0xFFFFFFFF


def header(op: bytes, size: int = 0, chunk: int = 0, extra: int = 0) -> bytes:
    """Encode a stream header."""
    return HEADER.pack(op, size, chunk, extra)


def memory() -> dict[str, int]:
    """This process's VmRSS and VmHWM in KiB (from /proc/self/status), thread and open
    file counts."""
    import os
    out = {"rss_kib": 0, "hwm_kib": 0, "threads": len(os.listdir("/proc/self/task")),
           "fds": len(os.listdir("/proc/self/fd")), "cpu_ms": 0}
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out["cpu_ms"] = (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_kib"] = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    out["hwm_kib"] = int(line.split()[1])
    except OSError:
        pass
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


class UploadSink:
    """Server side of ``U``: counts and CRCs the payload."""

    __slots__ = ("count", "crc")

    def __init__(self) -> None:
        self.count = 0
        self.crc = 0

    def feed(self, data: Any) -> None:
        self.count += len(data)
        self.crc = zlib.crc32(data, self.crc)

    def reply(self) -> bytes:
        return REPLY_UPLOAD.pack(self.count, self.crc & 0xFFFFFFFF)


class DgramCounter:
    """Server side of the datagram test: counts good and bad datagrams."""

    def __init__(self) -> None:
        self.good = 0
        self.bad = 0
        self.first = 0.0
        self.last = 0.0
        self._body = dgram_body()

    def feed(self, data: Any) -> None:
        self.last = time.monotonic()
        if not self.first:
            self.first = self.last
        if len(data) == DGRAM_SIZE and data[8:] == self._body:
            self.good += 1
        else:
            self.bad += 1


def check_upload_reply(reply: bytes, size: int, crc: int) -> None:
    """Raise if the server's upload reply does not match what was sent."""
    if len(reply) != REPLY_UPLOAD.size:
        raise AssertionError(f"upload reply of {len(reply)} bytes")
    got, got_crc = REPLY_UPLOAD.unpack(reply)
    if got != size or got_crc != crc:
        raise AssertionError(f"server received {got} bytes crc {got_crc:#010x}, "
                             f"sent {size} bytes crc {crc:#010x}")

def rtt_result(samples: list[float]) -> dict[str, Any]:
    return {"count": len(samples), "p50_us": percentile(samples, 50) * 1e6,
            "p99_us": percentile(samples, 99) * 1e6,
            "mean_us": sum(samples) / len(samples) * 1e6}

def dgram_reply(counter: DgramCounter) -> bytes:
    """Server's answer to ``Q``."""
    return REPLY_DGRAM.pack(counter.good, counter.bad, counter.last - counter.first)


def dgram_result(sent: int, reply: bytes, dt: float, mem0: dict[str, int]) -> dict[str, Any]:
    """Client's datagram result: ``sent_per_s`` counts datagrams the API accepted during the
    sending window, ``recv_per_s`` is the server's arrival rate (first to last arrival),
    ``loss_pct`` the share of accepted datagrams that never arrived."""
    good, bad, span = REPLY_DGRAM.unpack(reply)
    if bad:
        raise AssertionError(f"{bad} corrupted datagrams")
    return {"sent": sent, "received": good, "seconds": dt, "sent_per_s": sent / dt,
            "recv_per_s": good / span if span > 0 else 0.0, "rx_seconds": span,
            "loss_pct": 100.0 * (1 - good / sent) if sent else 0.0,
            "rss_before_kib": mem0["rss_kib"], **memory()}

def hs_result(times: list[float], wall: float, concurrency: int) -> dict[str, Any]:
    return {"count": len(times), "concurrency": concurrency, "seconds": wall,
            "per_s": len(times) / wall, "p50_ms": percentile(times, 50) * 1e3,
            "p99_ms": percentile(times, 99) * 1e3}

def idle_result(count: int, base: dict[str, int], after: dict[str, int], opened: float,
                client_mem: dict[str, int],
                window: Optional[tuple[dict[str, int], dict[str, int]]] = None,
                idle_seconds: float = 0.0) -> dict[str, Any]:
    """``window``: the server's memory() at the start and end of ``idle_seconds`` in which
    nothing happens (after the connections settled): its CPU use while holding the idle
    connections, in percent of one core."""
    return {"conns": count, "server_rss_base_kib": base["rss_kib"],
            "server_rss_after_kib": after["rss_kib"],
            "per_conn_kib": (after["rss_kib"] - base["rss_kib"]) / count,
            "open_seconds": opened, "client_rss_kib": client_mem["rss_kib"],
            "client_threads": client_mem.get("threads", 0),
            "client_fds": client_mem.get("fds", 0),
            "idle_cpu_pct": (100.0 * (window[1]["cpu_ms"] - window[0]["cpu_ms"]) / 1000 /
                             idle_seconds if window is not None and idle_seconds else 0.0)}


def job_from_argv(argv: list[str]) -> dict[str, Any]:
    """Parse ``client --port P --ca FILE --job JSON`` / ``server --cert C --key K``."""
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server", "client"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ca")
    p.add_argument("--job", default="{}")
    p.add_argument("--impl", default="")
    a = p.parse_args(argv)
    d = vars(a)
    d["job"] = json.loads(a.job)
    return d


def emit(obj: dict[str, Any]) -> None:
    """Print one JSON line for the harness and flush."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def raise_nofile() -> None:
    """Raise the soft open-files limit to the hard one (many connections, many sockets)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def pid() -> int:
    return os.getpid()
