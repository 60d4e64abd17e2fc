"""Measure the relay's unimpaired (or impaired) forwarding rate on this machine.

    .venv/bin/python tests/impair/throughput.py [--sender c|python] [--size 1500]
        [--seconds 2] [--runs 3] [PARAM=VALUE ...]

``--sender c`` (default): blast.c sends ``size``-byte datagrams with sendmmsg as fast as
it can; nobody reads the upstream socket, so the relay's ``forwarded`` counter per second
is the relay's own limit (the sender and the relay each get one of the two cores).

``--sender python``: a Python sender process and a Python receiver process; the result is
what reached the receiver per second (end to end, usually limited by the Python sender).

Extra ``PARAM=VALUE`` arguments are impairments for both directions (e.g. ``delay_ms=1``
to measure the held-packet path).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from impair import Relay, build_tool  # noqa: E402


def _receiver(sock: socket.socket, seconds: float, result: multiprocessing.Queue) -> None:
    sock.settimeout(0.5)
    buf = bytearray(65536)
    count = 0
    nbytes = 0
    first = last = 0.0
    deadline = time.monotonic() + seconds + 5
    while time.monotonic() < deadline:
        try:
            n = sock.recv_into(buf)
        except socket.timeout:
            if count:
                break
            continue
        last = time.monotonic()
        if not count:
            first = last
        count += 1
        nbytes += n
    result.put((count, nbytes, last - first))


def _sender(address: tuple, size: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    payload = os.urandom(size)
    end = time.monotonic() + seconds
    send = sock.sendto
    while time.monotonic() < end:
        for _ in range(256):
            try:
                send(payload, address)
            except BlockingIOError:
                pass


def _upstream_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    return sock


def _settled(relay: Relay, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    stats = relay.stats()
    while stats["c2s"]["held"] and time.monotonic() < deadline:
        stats = relay.stats()
    return stats["c2s"]


def run_python(size: int, seconds: float, params: dict) -> tuple:
    upstream = _upstream_socket()
    with Relay(upstream=upstream.getsockname(), **params) as relay:
        result: multiprocessing.Queue = multiprocessing.Queue()
        rx = multiprocessing.Process(target=_receiver, args=(upstream, seconds, result))
        rx.start()
        tx = multiprocessing.Process(target=_sender, args=(relay.address, size, seconds))
        tx.start()
        tx.join()
        count, nbytes, span = result.get(timeout=seconds + 15)
        rx.join()
        stats = _settled(relay)
    upstream.close()
    mbit = nbytes * 8 / span / 1e6 if span > 0 else 0.0
    note = f"{count} datagrams reached the receiver"
    return mbit, note, stats


def run_c(size: int, seconds: float, params: dict) -> tuple:
    blaster = build_tool("blast.c")
    upstream = _upstream_socket()  # never read: the relay's send succeeds regardless
    with Relay(upstream=upstream.getsockname(), **params) as relay:
        out = subprocess.run(
            [blaster, str(relay.address[1]), str(size), str(seconds)],
            check=True,
            stdout=subprocess.PIPE,
            timeout=seconds + 30,
        )
        stats = _settled(relay)
    upstream.close()
    mbit = stats["forwarded"] * size * 8 / seconds / 1e6
    note = f"blaster sent {int(out.stdout)}"
    return mbit, note, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sender", choices=("c", "python"), default="c")
    parser.add_argument("--size", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("params", nargs="*", help="impairments, e.g. delay_ms=1")
    args = parser.parse_args()
    params = {k: float(v) for k, v in (p.split("=", 1) for p in args.params)}
    run = run_c if args.sender == "c" else run_python
    results = []
    for i in range(args.runs):
        mbit, note, stats = run(args.size, args.seconds, params)
        results.append(mbit)
        kpps = mbit * 1e6 / 8 / args.size / 1000
        print(
            f"run {i + 1}: {mbit:6.0f} Mbit/s ({kpps:.0f} kpps); {note}; relay received "
            f"{stats['received']}, forwarded {stats['forwarded']}, "
            f"send drops {stats['dropped_send']}, queue drops {stats['dropped_queue']}"
        )
    print(
        f"median: {statistics.median(results):.0f} Mbit/s "
        f"({args.size}-byte payloads, {args.sender} sender, {params or 'no impairment'})"
    )


if __name__ == "__main__":
    main()
