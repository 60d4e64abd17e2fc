#!/usr/bin/env python3
"""aiomoqt's loopback bench (``moq-loopback-bench``: a MoQT publisher and subscriber in one
process, no relay) on this tree's aiopquic and on aiopquic 0.6.1, in alternation, same run.

    python3 tests/aiomoqt_suite.py                                   # makes .venv-aiomoqt
    python3 tests/aiomoqt_suite.py --aiopquic ==0.6.1 --venv .venv-aiomoqt-seed -- -k nothing
    python3 benchmarks/moq_bench.py [--repeats 3] [--duration 5] [--lo-mtu 1500]

Modes: raw QUIC subgroup streams and WebTransport subgroup streams at the highest rate the
stack sustains (``-r 0``: throughput; latency there is queueing), the same at 8,000 4-KiB
objects/s (about 270 Mbit/s, which both stacks sustain: latency), and raw QUIC object
datagrams of 1,000 bytes at 20,000 objects/s and at the highest rate.  For each mode and
stack it prints the medians of throughput, objects lost and object latency p50 / p95, and
ours / 0.6.1 ratios (throughput: higher is better; latency: lower is better).  With
``--lo-mtu`` every run happens in a private network namespace (``unshare -n``) whose loopback
has that MTU, as on a real link; without it, on this machine's loopback (MTU printed).
Results go to ``benchmarks/results/moq-bench-lo<MTU>.json``.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from benchutil import lo_mtu

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "build" / "aiomoqt" / "aiomoqt-0.13.3"
STACKS = {"ours": ROOT / ".venv-aiomoqt", "0.6.1": ROOT / ".venv-aiomoqt-seed"}
MODES = {
    "quic-streams": ["-Q", "-r", "0", "-s", "4096"],
    "wt-streams": ["-W", "-r", "0", "-s", "4096"],
    # latency at a load both stacks sustain (at the highest rate, latency is queueing)
    "quic-streams-paced": ["-Q", "-r", "8000", "-s", "4096"],
    "wt-streams-paced": ["-W", "-r", "8000", "-s", "4096"],
    "quic-datagrams": ["-Q", "-D", "-r", "20000", "-s", "1000"],
    # datagrams as fast as the publisher makes them (it waits when send_datagram_frame
    # refuses one): bound by aiomoqt's Python per object on both stacks
    "quic-datagrams-max": ["-Q", "-D", "-r", "0", "-s", "1000"],
}


def parse(out: str) -> dict[str, Optional[float]]:
    """Throughput (Mbit/s), objects, lost objects and latency p50 / p95 (ms) from the
    bench's final summary."""
    def num(pattern: str) -> Optional[float]:
        m = re.search(pattern, out)
        return float(m.group(1).replace(",", "")) if m else None
    return {
        "mbps": num(r"Throughput:\s+([\d.,]+) Mbps"),
        "objects": num(r"Objects:\s+([\d,]+)"),
        "lost": num(r"Lost:\s+([\d,]+)"),
        "p50_ms": num(r"p50=([\d.]+)"),
        "p95_ms": num(r"p95=([\d.]+)"),
    }


def run_once(stack: str, mode: str, args: argparse.Namespace, port: int) -> dict[str, Any]:
    vpy = STACKS[stack] / "bin" / "python"
    cmd = [str(vpy), "-m", "aiomoqt.tools.loopback_bench", "--draft", "18",
           "-t", str(args.duration), "-i", str(args.duration), "-p", str(port),
           "--cert", str(SRC / "certs" / "cert.pem"), "--key", str(SRC / "certs" / "key.pem"),
           "-k", *MODES[mode]]
    if args.lo_mtu:
        inner = " ".join(shlex.quote(c) for c in cmd)
        cmd = ["unshare", "-n", "sh", "-c",
               f"ip link set lo mtu {args.lo_mtu} && ip link set lo up && exec {inner}"]
    started = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=SRC,
                           timeout=args.duration + 60)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as exc:
        out, rc = str(exc.stdout or "") + str(exc.stderr or ""), -1
    result: dict[str, Any] = {"rc": rc, "seconds": round(time.monotonic() - started, 2),
                              **parse(out)}
    if result["mbps"] is None:
        result["tail"] = out[-600:]
    return result


def median(runs: list[dict[str, Any]], key: str) -> Optional[float]:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per run")
    ap.add_argument("--lo-mtu", type=int, default=None,
                    help="run in a network namespace whose loopback has this MTU")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: " +
                    ", ".join(MODES))
    args = ap.parse_args()
    missing = [str(v) for v in STACKS.values() if not (v / "bin" / "python").exists()]
    if missing or not (SRC / "certs").is_dir():
        print("moq_bench: needs " + ", ".join(missing or [str(SRC)]) + " (see the module "
              "docstring: tests/aiomoqt_suite.py makes them)", file=sys.stderr)
        return 2
    if args.lo_mtu and not shutil.which("unshare"):
        print("moq_bench: --lo-mtu needs unshare(1)", file=sys.stderr)
        return 2
    mtu = args.lo_mtu or lo_mtu()
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        m: {s: [] for s in STACKS} for m in modes}
    port = 24500
    for rep in range(args.repeats):
        for mode in modes:
            order = list(STACKS) if rep % 2 == 0 else list(reversed(STACKS))
            for stack in order:
                port += 1
                r = run_once(stack, mode, args, port)
                results[mode][stack].append(r)
                print(f"  run {rep + 1}/{args.repeats} {mode:15} {stack:6} "
                      f"{r['mbps']} Mbit/s, lost {r['lost']}, p50 {r['p50_ms']} ms, "
                      f"p95 {r['p95_ms']} ms" + ("" if r["mbps"] is not None else
                                                 f"\n{r.get('tail', '')}"), flush=True)
    print(f"\nmoq-loopback-bench, draft 18, {args.duration} s runs, medians of "
          f"{args.repeats}, loopback MTU {mtu}")
    print(f"{'mode':15} {'stack':6} {'Mbit/s':>9} {'lost':>6} {'p50 ms':>7} {'p95 ms':>7}")
    summary: dict[str, Any] = {}
    for mode in modes:
        row: dict[str, Any] = {}
        for stack in STACKS:
            runs = results[mode][stack]
            row[stack] = {k: median(runs, k) for k in ("mbps", "lost", "p50_ms", "p95_ms")}
            v = row[stack]
            print(f"{mode:15} {stack:6} {v['mbps'] or 0:9.1f} {v['lost'] or 0:6.0f} "
                  f"{v['p50_ms'] or 0:7.2f} {v['p95_ms'] or 0:7.2f}")
        ours, seed = row["ours"], row["0.6.1"]
        print(f"{'':15} {'ratio':6} {ratio(ours['mbps'], seed['mbps']):>9} {'':6} "
              f"{ratio(ours['p50_ms'], seed['p50_ms']):>7} "
              f"{ratio(ours['p95_ms'], seed['p95_ms']):>7}")
        summary[mode] = row
    out = ROOT / "benchmarks" / "results" / f"moq-bench-lo{mtu}.json"
    out.write_text(json.dumps({"lo_mtu": mtu, "duration": args.duration,
                               "repeats": args.repeats, "medians": summary,
                               "runs": results}, indent=1))
    print(f"results in {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
