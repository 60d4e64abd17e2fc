#!/usr/bin/env python3
"""Time to the first response byte: a fresh connection against a resumed one with 0-RTT.

    python benchmarks/zerortt.py [--runs 15] [--rtt-ms 50] [--mtu 1472] [--json PATH]

One aiopquic server and, in front of it, the ``tests/impair`` UDP relay adding half the RTT
in each direction and dropping UDP payloads above ``--mtu`` bytes (1472: a 1500-byte IPv4
link).  Each run opens a new client connection (its own endpoint and network thread) with
``wait_connected=False``, writes a 100-byte request on a bidi stream with FIN at once, and
measures from the call to ``connect()`` to the first byte of the server's 1000-byte answer.
The modes, interleaved run by run:

- ``fresh``: no ticket, a full handshake (the request leaves after it: 2 RTT);
- ``resumed``: a session ticket but ``early_data=False`` (resumption saves the certificate,
  not a round trip: still 2 RTT);
- ``0rtt``: a session ticket and 0-RTT: the request travels with the ClientHello (1 RTT).

Each resumed run uses the newest ticket the server sent.  Prints the median, min and max per
mode (ms) and writes JSON (``--json``).  See docs/performance.md, section "0-RTT".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from impair import Relay  # noqa: E402 - tests/impair

from aiopquic._native import make_self_signed  # noqa: E402
from aiopquic.asyncio import connect, serve  # noqa: E402
from aiopquic.quic.configuration import QuicConfiguration  # noqa: E402
from aiopquic.tls import SessionTicket  # noqa: E402

REQUEST = b"r" * 100
ANSWER = b"a" * 1000
MODES = ("fresh", "resumed", "0rtt")


def answer_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def run() -> None:
        await reader.read()
        writer.write(ANSWER)
        writer.write_eof()

    task = asyncio.ensure_future(run())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


_TASKS: set[asyncio.Task[None]] = set()


async def one_request(host: str, port: int, configuration: QuicConfiguration,
                      tickets: list[SessionTicket]) -> tuple[float, bool, bool]:
    """Seconds to the first answer byte, session_resumed, early_data_accepted."""
    start = time.perf_counter()
    async with connect(host, port, configuration=configuration, wait_connected=False,
                       session_ticket_handler=tickets.append) as proto:
        reader, writer = await proto.create_stream()
        writer.write(REQUEST)
        writer.write_eof()
        first = await asyncio.wait_for(reader.read(1), 10)
        elapsed = time.perf_counter() - start
        assert first == ANSWER[:1]
        rest = await asyncio.wait_for(reader.read(), 10)
        assert first + rest == ANSWER
        await asyncio.wait_for(proto.wait_connected(), 10)
        quic = proto._quic
        # let the ticket of this connection arrive before closing
        for _ in range(100):
            if tickets:
                break
            await asyncio.sleep(0.005)
        return elapsed, bool(quic.session_resumed), bool(quic.early_data_accepted)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cert, key = make_self_signed("localhost,127.0.0.1", days=2)
    tmp = tempfile.mkdtemp(prefix="zerortt-")
    certfile, keyfile = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    with open(certfile, "wb") as f:
        f.write(cert)
    with open(keyfile, "wb") as f:
        f.write(key)
    scfg = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
    scfg.load_cert_chain(certfile, keyfile)
    server = await serve("127.0.0.1", 0, configuration=scfg, stream_handler=answer_handler)
    half = args.rtt_ms / 2.0
    results: dict[str, list[float]] = {m: [] for m in MODES}
    checks: dict[str, list[tuple[bool, bool]]] = {m: [] for m in MODES}
    try:
        with Relay(upstream=("127.0.0.1", server.local_port), listen_host="127.0.0.1",
                   delay_ms=half, mtu=args.mtu, seed=1) as relay:
            host, port = relay.address[0], relay.address[1]

            def config(**kw: Any) -> QuicConfiguration:
                return QuicConfiguration(is_client=True, alpn_protocols=["bench"],
                                         server_name="localhost", cafile=certfile,
                                         max_datagram_size=args.mtu, **kw)

            tickets: list[SessionTicket] = []
            await one_request(host, port, config(), tickets)  # warm-up, first ticket
            for _ in range(args.runs):
                for mode in MODES:
                    ticket: Optional[SessionTicket] = tickets[-1] if mode != "fresh" else None
                    got: list[SessionTicket] = []
                    cfg = config(session_ticket=ticket, early_data=(mode == "0rtt"))
                    elapsed, resumed, early = await one_request(host, port, cfg, got)
                    tickets.extend(got)
                    results[mode].append(elapsed * 1000.0)
                    checks[mode].append((resumed, early))
    finally:
        server.close()
    for mode, expect in (("fresh", (False, False)), ("resumed", (True, False)),
                         ("0rtt", (True, True))):
        bad = [c for c in checks[mode] if c != expect]
        if bad:
            raise SystemExit(f"{mode}: (session_resumed, early_data_accepted) was {bad[0]}, "
                             f"expected {expect}")
    return {"rtt_ms": args.rtt_ms, "mtu": args.mtu, "runs": args.runs,
            "ms": results,
            "median_ms": {m: statistics.median(v) for m, v in results.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--mtu", type=int, default=1472,
                        help="largest UDP payload the relay passes (1472: 1500-byte link)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    print(f"time to first response byte, RTT {args.rtt_ms:g} ms, UDP payload <= {args.mtu}, "
          f"{args.runs} runs per mode")
    print(f"{'mode':10} {'median':>8} {'min':>8} {'max':>8}   (ms)")
    for mode in MODES:
        v = out["ms"][mode]
        print(f"{mode:10} {statistics.median(v):8.1f} {min(v):8.1f} {max(v):8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
