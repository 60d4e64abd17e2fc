#!/usr/bin/env python3
"""WebTransport stream and datagram throughput: this tree against aiopquic 0.6.1 (the
picoquic-based release), side by side in the same run.

    .venv/bin/python benchmarks/wt_throughput.py [--repeat 3] [--mib 64] [--seconds 3]
        [--scenarios upload,download,datagrams] [--crc] [--lo-mtu 1500]
        [--seed-venv .bench-venvs/seed]

One peer script, benchmarks/peers/wt_peer.py, written once against 0.6.1's WebTransport API
(``serve_webtransport`` / ``connect_webtransport`` and the session's stream and datagram
methods, which this tree provides too), runs under two interpreters: this tree's venv and the
seed venv (Python 3.12 with the 0.6.1 wheel; ``sh benchmarks/setup_peers.sh --no-apt``
makes it).  Client and server are separate processes of the same stack.  Scenarios, each
on a new session:

- ``upload``: one bidirectional WT stream, the client sends ``--mib`` MiB in 16 KiB writes
  (``send_stream_data_drained``) and FIN; the server counts the bytes (the count is checked,
  and with ``--crc`` a CRC-32) and times them from the first to the last byte: Mbit/s at
  the receiver;
- ``download``: the same from server to client;
- ``datagrams``: the client sends 1,000-byte WT datagrams as fast as
  ``send_datagram_frame`` accepts them (on 0, it waits for
  ``get_datagram_tx_drain_event()``) for ``--seconds``; printed: datagrams accepted per
  second at the sender, and received per second at the server (first to last arrival).
  Loss is allowed and reported; where this tree counts where the loss happened (sender
  queue, receiver's event queue), that is printed too.

Each scenario runs ``--repeat`` times per stack, stacks alternating run by run; printed are
medians with min-max and ours / 0.6.1 ratios (higher is better).  Everything runs in a
private network namespace (``unshare -n``: 0.6.1's server listens on the wildcard address),
whose loopback has MTU 65536 unless ``--lo-mtu N`` sets it.  Results go to
``benchmarks/results/wt-throughput-lo<MTU>.json``.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from benchutil import certs, lo_mtu

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "benchmarks" / "peers" / "wt_peer.py"
SCENARIOS = ("upload", "download", "datagrams")
# (scenario, metric, label) rows of the table
METRICS = (
    ("upload", "mbps", "upload Mbit/s"),
    ("download", "mbps", "download Mbit/s"),
    ("datagrams", "sent_per_s", "datagrams sent/s"),
    ("datagrams", "recv_per_s", "datagrams received/s"),
    ("datagrams", "loss", "datagram loss"),
)


def peer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def probe(python: str) -> Optional[str]:
    """``version file`` of the aiopquic that ``python`` imports, or None."""
    try:
        p = subprocess.run([python, "-c", "import aiopquic, importlib.metadata as m; "
                            "print(m.version('aiopquic'), aiopquic.__file__)"],
                           capture_output=True, text=True, timeout=60, env=peer_env(),
                           cwd=tempfile.gettempdir())
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except asyncio.TimeoutError:
        proc.kill()
        await asyncio.wait_for(proc.wait(), 5)


class Stack:
    def __init__(self, name: str, python: str) -> None:
        self.name, self.python = name, python


async def run_stack(stack: Stack, scenarios: list[str], args: argparse.Namespace,
                    port: int, files: tuple[str, str, str], logdir: str
                    ) -> dict[str, dict[str, Any]]:
    """Start the stack's server, run one client process per scenario, stop the server."""
    cert, key, cafile = files
    log = os.path.join(logdir, f"server-{stack.name}-{port}.log")
    out: dict[str, dict[str, Any]] = {}
    with open(log, "wb") as err:
        server = await asyncio.create_subprocess_exec(
            stack.python, str(PEER), "server", "--port", str(port), "--cert", cert,
            "--key", key, "--lifetime", str(args.timeout * (len(scenarios) + 1)),
            stdout=asyncio.subprocess.PIPE, stderr=err, env=peer_env(), cwd=logdir)
        try:
            assert server.stdout is not None
            line = await asyncio.wait_for(server.stdout.readline(), 30)
            if not line.startswith(b"READY"):
                raise RuntimeError(f"{stack.name} server did not start (see {log})")
            for scenario in scenarios:
                out[scenario] = await run_client(stack, scenario, args, port, cafile)
        finally:
            await stop(server)
    return out


async def run_client(stack: Stack, scenario: str, args: argparse.Namespace, port: int,
                     cafile: str) -> dict[str, Any]:
    cmd = [stack.python, str(PEER), "client", "--port", str(port), "--ca", cafile,
           "--scenario", scenario, "--mib", str(args.mib), "--seconds", str(args.seconds),
           "--timeout", str(args.timeout)] + (["--crc"] if args.crc else [])
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=peer_env(), cwd=os.path.dirname(cafile))
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), args.timeout + 30)
    except asyncio.TimeoutError:
        await stop(proc)
        return {"ok": False, "error": "client timed out"}
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            if not result.get("ok") and "error" not in result:
                result["error"] = "check failed"
            return result
    return {"ok": False, "error": f"no result (rc {proc.returncode}): "
            + stderr.decode(errors="replace")[-400:]}


def stats(runs: list[dict[str, Any]], key: str) -> Optional[dict[str, float]]:
    values = [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def fmt(value: float, key: str) -> str:
    if key == "loss":
        return f"{value * 100:.1f}%"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def line_of(run: dict[str, Any]) -> str:
    if not run.get("ok"):
        return f"FAILED: {run.get('error')}"
    if run["scenario"] == "datagrams":
        s = (f"sent {run['sent_per_s']:,.0f}/s (queue full {run['queue_full']}x), received "
             f"{run['recv_per_s'] or 0:,.0f}/s, loss {run['loss'] * 100:.1f}%")
        if run.get("sender_dropped") is not None:
            s += (f" (dropped: {run['sender_dropped']:,} by the sender's queue, "
                  f"{run['receiver_dropped']:,} by the server's event queue)")
        return s
    return f"{run['mbps']:,.0f} Mbit/s ({run['bytes']:,} bytes in {run['seconds']:.3f} s)"


async def bench(args: argparse.Namespace, stacks: list[Stack], scenarios: list[str]
                ) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="wtbench-")
    files = certs(tmp)
    mtu = lo_mtu()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.name: {sc: [] for sc in scenarios} for s in stacks}
    print(f"WebTransport throughput, loopback MTU {mtu}: {args.mib} MiB on one stream in "
          f"16 KiB writes; 1,000-byte datagrams for {args.seconds:g} s; {args.repeat} runs "
          f"per stack, alternating; CRC {'on' if args.crc else 'off'}", flush=True)
    port = 24400
    try:
        for rep in range(args.repeat):
            order = stacks if rep % 2 == 0 else list(reversed(stacks))
            for stack in order:
                port += 1
                got = await run_stack(stack, scenarios, args, port, files, tmp)
                for sc in scenarios:
                    runs[stack.name][sc].append(got[sc])
                    print(f"  run {rep + 1}/{args.repeat} {stack.name:6} {sc:10} "
                          f"{line_of(got[sc])}", flush=True)
    finally:
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs in {tmp}")
    medians: dict[str, dict[str, Any]] = {}
    print(f"\nloopback MTU {mtu}; medians of {args.repeat} (min-max); ratio = ours / 0.6.1")
    names = [s.name for s in stacks]
    head = "".join(f" {n + ' median':>14} {'min-max':>19}" for n in names)
    print(f"{'':22}{head} {'ratio':>7}")
    for sc, key, label in METRICS:
        if sc not in scenarios:
            continue
        row = {n: stats(runs[n][sc], key) for n in names}
        medians[f"{sc}.{key}"] = row
        cells = ""
        for n in names:
            st = row[n]
            cells += (f" {fmt(st['median'], key):>14} "
                      f"{fmt(st['min'], key) + '-' + fmt(st['max'], key):>19}"
                      if st else f" {'-':>14} {'':>19}")
        ours, seed = row.get("ours"), row.get("0.6.1")
        ratio = f"{ours['median'] / seed['median']:.2f}x" if ours and seed and \
            seed["median"] and key != "loss" else ""
        print(f"{label:22}{cells} {ratio:>7}")
    failed = sum(1 for n in names for sc in scenarios for r in runs[n][sc] if not r.get("ok"))
    if failed:
        print(f"{failed} run(s) failed; medians are of the runs that passed")
    return {"lo_mtu": mtu, "mib": args.mib, "seconds": args.seconds, "repeat": args.repeat,
            "crc": args.crc, "date": time.strftime("%Y-%m-%d"), "medians": medians,
            "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mib", type=int, default=64, help="MiB per stream transfer")
    ap.add_argument("--seconds", type=float, default=3.0, help="datagram sending time")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--crc", action="store_true", help="CRC-32 the stream bytes too")
    ap.add_argument("--timeout", type=float, default=120.0, help="bound of one client run")
    ap.add_argument("--lo-mtu", type=int, default=0,
                    help="loopback MTU of the network namespace (default: its 65536)")
    ap.add_argument("--seed-venv", default=os.environ.get(
        "SEED_VENV", str(ROOT / ".bench-venvs" / "seed")))
    ap.add_argument("--ours-python", default=str(ROOT / ".venv" / "bin" / "python")
                    if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable)
    ap.add_argument("--json", default="", help="results file (default: "
                    "benchmarks/results/wt-throughput-lo<MTU>.json)")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r} (known: {', '.join(SCENARIOS)})")
    if not args.in_netns:
        if not shutil.which("unshare"):
            print("wt_throughput: needs unshare(1) (util-linux) and root", file=sys.stderr)
            return 2
        mtu = f" mtu {args.lo_mtu}" if args.lo_mtu else ""
        inner = " ".join(shlex.quote(a) for a in [sys.executable, os.path.abspath(__file__),
                                                   *sys.argv[1:], "--in-netns"])
        return subprocess.call(["unshare", "-n", "sh", "-c",
                                f"ip link set lo{mtu} up && exec {inner}"])
    stacks: list[Stack] = []
    ours = probe(args.ours_python)
    if ours is None or not ours.split(" ", 1)[1].startswith(str(ROOT)):
        print(f"wt_throughput: {args.ours_python} does not import this tree's aiopquic "
              f"({ours}); run 'make setup'", file=sys.stderr)
        return 2
    stacks.append(Stack("ours", args.ours_python))
    seed_python = os.path.join(args.seed_venv, "bin", "python")
    seed = probe(seed_python) if os.path.exists(seed_python) else None
    if seed is None or not seed.startswith("0.6.1 "):
        print(f"wt_throughput: no aiopquic 0.6.1 in {args.seed_venv} ({seed}): 0.6.1 is "
              "skipped (sh benchmarks/setup_peers.sh --no-apt makes it)", file=sys.stderr)
    else:
        stacks.append(Stack("0.6.1", seed_python))
    print(f"ours:  {ours}\n0.6.1: {seed}")
    result = asyncio.run(bench(args, stacks, scenarios))
    result["stacks"] = {"ours": ours, "0.6.1": seed}
    out = Path(args.json) if args.json else \
        ROOT / "benchmarks" / "results" / f"wt-throughput-lo{result['lo_mtu']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
