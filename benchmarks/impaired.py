#!/usr/bin/env python3
"""Goodput under impairment: one stream, one direction, through the UDP impairment relay.

    python benchmarks/impaired.py [--quick] [--repeat N] [--peers aiopquic,seed,qh3,aioquic]
                                  [--conditions clean,loss1-rtt20,...] [--no-netns]
                                  [--json benchmarks/results/impaired.json]

For every condition and every repetition, each peer (in alternation, A B C D A B C D ...)
runs its benchmark server and client (benchmarks/peers/, each in its own venv), connected
through a fresh ``tests/impair`` relay: the client uploads a fixed amount on one stream in
16 KiB writes, and the server replies with the byte count and CRC-32 of what it received,
which the client checks (every byte verified); ``--direction download`` has the server
send and the client check the CRC.  Goodput = bytes / (first write -> verified
reply), in Mbit/s.  Every round uses one relay seed for all peers, so each peer meets the
same random-loss pattern per datagram index.

The path is a 1500-byte IPv4 link: the relay drops UDP payloads above 1472 bytes in both
directions, and, where ``unshare -n`` is allowed, the whole run (relay and all peers) is
re-executed in a private network namespace whose loopback MTU is 1500, so the kernel's
real MTU applies to every peer's sockets too.  The header says which.

Each transfer is bounded (per-condition timeout); a peer that fails, times out or stalls is
reported as such.  Prints a table (median goodput, ratio ours/peer, > 1 = aiopquic faster)
and writes JSON (default benchmarks/results/impaired.json).  See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import run as bench  # noqa: E402 - benchmarks/run.py: peers, process handling, certs
from impair import Relay, RelayError  # noqa: E402 - tests/impair

OURS = "aiopquic"
MIB = 1 << 20
CHUNK = 16 << 10
RELAY_MTU = 1472  # UDP payload of a 1500-byte IPv4 link
LINK_MTU = 1500
IN_NETNS_ENV = "AIOPQUIC_IMPAIRED_NETNS"
# aiopquic-bbr: ours with congestion_control_algorithm="bbr" on both sides (diagnostic: the
# seed's picoquic runs BBR v1 by default, ours CUBIC)
DEFAULT_PEERS = ["aiopquic", "seed", "qh3", "aioquic", "aiopquic-bbr"]

# name -> label, relay parameters (both directions, on top of mtu=1472), transfer size
# (full / --quick) and the per-transfer timeout.  Sizes are chosen so that the slowest
# peer (a Reno-like controller: ~1.2 Mbit/s at 5 % loss and 50 ms RTT by Mathis' formula)
# finishes well inside the timeout.
CONDITIONS: dict[str, dict[str, Any]] = {
    "clean": {"label": "0 % loss, 0 ms",
              "params": {}, "size": 64 * MIB, "quick_size": 32 * MIB, "timeout": 60.0},
    "loss1-rtt20": {"label": "1 % loss, 20 ms RTT",
                    "params": {"loss": 0.01, "delay_ms": 10},
                    "size": 8 * MIB, "quick_size": 4 * MIB, "timeout": 60.0},
    "loss5-rtt50": {"label": "5 % loss, 50 ms RTT",
                    "params": {"loss": 0.05, "delay_ms": 25},
                    "size": 2 * MIB, "quick_size": MIB, "timeout": 60.0},
    "rate100": {"label": "100 Mbit/s, 10 ms RTT, 125 kB queue",
                "params": {"rate_mbit": 100, "queue_bytes": 125_000, "delay_ms": 5},
                "size": 32 * MIB, "quick_size": 16 * MIB, "timeout": 60.0},
}


# ---------------------------------------------------------------------------- network

def netns_possible(mtu: int) -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    try:
        r = subprocess.run(["unshare", "-n", "sh", "-c",
                            f"ip link set lo mtu {mtu} && ip link set lo up"],
                           capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def reexec_in_netns(argv: list[str], mtu: int) -> None:
    """Replace this process by itself inside a private netns with loopback at ``mtu``."""
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, os.path.abspath(__file__)] + argv)
    os.environ[IN_NETNS_ENV] = str(mtu)
    os.execvp("unshare", ["unshare", "-n", "sh", "-c",
                          f"ip link set lo mtu {mtu} && ip link set lo up && exec {cmd}"])


def free_port() -> int:
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


# ---------------------------------------------------------------------------- one trial

def run_trial(peer: bench.Peer, cond: dict[str, Any], size: int, relay_seed: int,
              certs: dict[str, str], tmp: str, op: str = "upload") -> dict[str, Any]:
    """Server, relay, client: one upload (or download) of ``size`` bytes through the
    relay."""
    timeout = float(cond["timeout"])
    port = free_port()
    err_path = os.path.join(tmp, f"{peer.name}.stderr")
    open(err_path, "wb").close()
    t_start = time.monotonic()
    server = bench._spawn(peer.argv("server", [
        "--host", "127.0.0.1", "--port", str(port),
        "--cert", certs["cert"], "--key", certs["key"]]), err_path, tmp)
    relay: Optional[Relay] = None
    try:
        if not bench._read_json(server, 60.0, "ready"):
            return {"ok": False, "error": f"server did not start: {bench._tail(err_path)}"}
        try:
            relay = Relay(upstream=("127.0.0.1", port), seed=relay_seed,
                          max_seconds=timeout + 120.0, mtu=RELAY_MTU, **cond["params"])
        except RelayError as exc:
            return {"ok": False, "error": f"relay: {exc}"}
        host, rport = relay.address
        job = {"op": op, "size": size, "chunk": CHUNK, "streams": 1,
               "timeout": timeout}
        client = bench._spawn(peer.argv("client", [
            "--host", host, "--port", str(rport), "--ca", certs["ca"],
            "--job", json.dumps(job)]), err_path, tmp)
        try:
            # the client's own wait_for ends the job at ``timeout``; the margin covers start-up
            # (imports, handshake) and a client that hangs anyway
            res = bench._read_json(client, timeout + 30.0, "ok")
        finally:
            bench._kill(client, 3.0)
        if res is None:
            res = {"ok": False, "error": f"stalled: no result after {timeout + 30:.0f} s "
                   f"{bench._tail(err_path, 3)}"}
        elif not res.get("ok"):
            err = str(res.get("error", "?"))
            if err.startswith(("TimeoutError", "CancelledError")):
                res["error"] = f"timeout: not done in {timeout:.0f} s"
        try:
            stats = relay.stats()
            res["relay"] = {d: {k: stats[d][k] for k in (
                "received", "forwarded", "dropped_mtu", "dropped_loss", "dropped_queue",
                "dropped_send")} for d in ("c2s", "s2c")}
        except (RelayError, KeyError):
            pass
        res["wall_s"] = time.monotonic() - t_start
        return res
    finally:
        if relay is not None:
            relay.close()
        bench._kill(server, 3.0)


# ---------------------------------------------------------------------------- stats

def summarize(trials: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for peer, ts in trials.items():
        vals = [t["result"]["mbps"] for t in ts if t.get("ok")]
        errs = [str(t.get("error", "?")) for t in ts if not t.get("ok")]
        e: dict[str, Any] = {"n": len(vals), "runs": len(ts), "errors": errs, "trials": ts}
        if vals:
            e.update(median=statistics.median(vals), min=min(vals), max=max(vals))
        out[peer] = e
    ours = out.get(OURS, {}).get("median")
    for peer, e in out.items():
        if peer == OURS or ours is None or not e.get("median"):
            continue
        e["ratio"] = ours / e["median"]
        pairs = [a["result"]["mbps"] / b["result"]["mbps"]
                 for a, b in zip(trials.get(OURS, []), trials[peer])
                 if a.get("ok") and b.get("ok") and b["result"]["mbps"]]
        if pairs:
            e["ratio_paired"] = statistics.median(pairs)
    return out


def cell(e: dict[str, Any]) -> str:
    if e.get("median") is None:
        return "FAILED"
    txt = bench.fmt(e["median"])
    if e["n"] < e["runs"]:
        txt += f" ({e['runs'] - e['n']} fail)"
    return txt


def print_table(results: dict[str, Any], file: Any = sys.stdout) -> None:
    conds = results["conditions"]
    if not conds:
        return
    peers: list[str] = []
    for c in conds.values():
        for p in c["peers"]:
            if p not in peers:
                peers.append(p)
    others = [p for p in peers if p != OURS]
    meta = results["meta"]
    print(f"\n== goodput under impairment: one stream, {meta.get('direction', 'upload')}, "
          f"16 KiB writes; median Mbit/s "
          f"of {meta['repeat']} (ratio = aiopquic / peer, > 1 = aiopquic faster)", file=file)
    print(f"   path: {meta['path']}", file=file)
    w = 16
    print(f"   {'condition':<36} {'size':>7} " + " ".join(f"{p:>{w}}" for p in peers)
          + "  " + " ".join(f"{'/' + p:>9}" for p in others), file=file)
    for c in conds.values():
        ps = c["peers"]
        row = [cell(ps[p]) if p in ps else "" for p in peers]
        ratios = []
        for p in others:
            r = ps.get(p, {}).get("ratio")
            ratios.append(f"{r:.2f}x" if r else ("-" if p in ps else ""))
        size = f"{c['size'] / MIB:.3g} MiB"
        print(f"   {c['label']:<36} {size:>7} " + " ".join(f"{x:>{w}}" for x in row)
              + "  " + " ".join(f"{x:>9}" for x in ratios), file=file)
    for name, c in conds.items():
        for p, e in c["peers"].items():
            if e["errors"]:
                print(f"   ! {name} {p}: {len(e['errors'])}/{e['runs']} failed: "
                      f"{e['errors'][0][:140]}", file=file)


def print_markdown(results: dict[str, Any], file: Any = sys.stdout) -> None:
    """The table as Markdown (docs/performance.md)."""
    conds = results["conditions"]
    peers: list[str] = []
    for c in conds.values():
        for p in c["peers"]:
            if p not in peers:
                peers.append(p)
    others = [p for p in peers if p != OURS]
    print("| condition | size | " + " | ".join(peers) + " | "
          + " | ".join(f"ours/{p}" for p in others) + " |", file=file)
    print("| --- " * (2 + len(peers) + len(others)) + "|", file=file)
    for c in conds.values():
        ps = c["peers"]
        cells = [cell(ps[p]) if p in ps else "" for p in peers]
        cells[0] = f"**{cells[0]}**" if peers and peers[0] == OURS else cells[0]
        ratios = []
        for p in others:
            r = ps.get(p, {}).get("ratio")
            ratios.append(f"{r:.2f}×" if r else "–")
        print(f"| {c['label']} | {c['size'] / MIB:.3g} MiB | " + " | ".join(cells) + " | "
              + " | ".join(ratios) + " |", file=file)


# ---------------------------------------------------------------------------- main

def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller transfers and 1 repetition: a ~2-minute run")
    p.add_argument("--repeat", type=int, default=None,
                   help="repetitions per condition and peer (default 3; 1 with --quick)")
    p.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                   help=f"comma-separated peers (default {','.join(DEFAULT_PEERS)}; "
                   "also seed-drained, aiopquic-ev)")
    p.add_argument("--conditions", default=",".join(CONDITIONS),
                   help=f"comma-separated conditions (default all: {','.join(CONDITIONS)})")
    p.add_argument("--direction", choices=["upload", "download"], default="upload",
                   help="upload: the client sends, the server CRCs (default); download: "
                   "the server sends, the client CRCs")
    p.add_argument("--timeout", type=float, default=None,
                   help="per-transfer timeout in s for every condition (default: per "
                   "condition, 60)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every transfer size by this")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="write results here (default benchmarks/results/impaired.json, "
                   "impaired-quick.json with --quick; '-' for none)")
    p.add_argument("--no-netns", action="store_true",
                   help="stay in this network namespace (relay MTU clamp only)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for the aiopquic/aioquic/qh3 peers (default: this one)")
    p.add_argument("--seed-python",
                   default=os.path.join(ROOT, ".bench-venvs", "seed", "bin", "python"),
                   help="interpreter of the venv holding aiopquic 0.6.1")
    p.add_argument("--report", metavar="FILE", help="print the table of a results file")
    p.add_argument("--markdown", action="store_true",
                   help="with --report: print the table as Markdown")
    a = p.parse_args(argv)
    if a.repeat is None:
        a.repeat = 1 if a.quick else 3
    if a.repeat < 1:
        p.error("--repeat must be at least 1")
    if a.json is None:
        a.json = os.path.join(HERE, "results",
                              "impaired-quick.json" if a.quick else "impaired.json")
    return a


def main(argv: Optional[list[str]] = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        if args.markdown:
            print_markdown(saved)
        else:
            print_table(saved)
        return 0
    in_netns = os.environ.get(IN_NETNS_ENV)
    if not args.no_netns and not in_netns:
        if netns_possible(LINK_MTU):
            sys.stdout.flush()
            reexec_in_netns(raw_argv, LINK_MTU)  # does not return
        print(f"note: no private network namespace (unshare -n): running on this "
              f"namespace's loopback with the relay's {RELAY_MTU}-byte clamp only",
              file=sys.stderr)
    conds = [c.strip() for c in args.conditions.split(",") if c.strip()]
    bad = [c for c in conds if c not in CONDITIONS]
    if bad:
        print(f"unknown conditions {bad}; known: {', '.join(CONDITIONS)}", file=sys.stderr)
        return 2
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    all_peers = bench.make_peers(args)
    unknown = [p for p in wanted if p not in all_peers or p == "iperf3"]
    if unknown:
        print(f"unknown peers: {unknown}", file=sys.stderr)
        return 2
    peers = []
    for name in wanted:
        if all_peers[name].missing:
            print(f"skipping peer {name}: {all_peers[name].missing}", file=sys.stderr)
        else:
            peers.append(all_peers[name])
    if not peers:
        print("no peer available", file=sys.stderr)
        return 2

    atexit.register(bench._kill_all)
    signal.signal(signal.SIGTERM, bench._on_signal)
    signal.signal(signal.SIGHUP, bench._on_signal)
    lo_mtu = bench.lo_mtu_here()
    if in_netns:
        path = (f"private netns, loopback MTU {lo_mtu} (kernel) + relay mtu={RELAY_MTU} "
                f"both directions")
    else:
        path = (f"host loopback MTU {lo_mtu} (kernel) + relay mtu={RELAY_MTU} both "
                f"directions")
    rargs = argparse.Namespace(quick=args.quick, repeat=args.repeat, python=args.python,
                               seed_python=args.seed_python)
    meta = bench.machine_info(rargs, all_peers)
    meta.get("versions", {}).pop("iperf3", None)
    meta.update(path=path, netns=bool(in_netns), lo_mtu=lo_mtu, relay_mtu=RELAY_MTU,
                chunk=CHUNK, peers=[p.name for p in peers], scale=args.scale,
                direction=args.direction)
    print(f"goodput under impairment: {len(conds)} condition(s) x {len(peers)} peer(s) x "
          f"{args.repeat}; {path}; load {meta['loadavg_start']}; {meta.get('cpu', '?')}",
          flush=True)
    results: dict[str, Any] = {"meta": meta, "conditions": {}}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aiopquic-impaired-") as tmp:
        os.chmod(tmp, 0o755)
        certs = bench.make_certs(tmp)
        try:
            for ci, cname in enumerate(conds):
                cond = dict(CONDITIONS[cname])
                if args.timeout:
                    cond["timeout"] = args.timeout
                size = int((cond["quick_size"] if args.quick else cond["size"]) * args.scale)
                trials: dict[str, list[dict[str, Any]]] = {p.name: [] for p in peers}
                t0 = time.monotonic()
                for rep in range(args.repeat):
                    seed = 1000 + 100 * ci + rep  # same loss pattern for every peer
                    for peer in peers:
                        res = run_trial(peer, cond, size, seed, certs, tmp, args.direction)
                        trials[peer.name].append(res)
                        txt = (f"{bench.fmt(res['result']['mbps'])} Mbit/s" if res.get("ok")
                               else "FAILED " + str(res.get("error", ""))[:90])
                        print(f"  {cname} [{rep + 1}/{args.repeat}] {peer.name}: {txt} "
                              f"({res.get('wall_s', 0):.1f} s)", file=sys.stderr, flush=True)
                results["conditions"][cname] = {
                    "label": cond["label"],
                    "relay": dict(cond["params"], mtu=RELAY_MTU, directions="both"),
                    "size": size, "timeout": cond["timeout"],
                    "seconds": time.monotonic() - t0, "peers": summarize(trials)}
                if args.json != "-":
                    bench._write_json(args.json, results)
        except KeyboardInterrupt:
            print("\ninterrupted: partial results", file=sys.stderr)
        finally:
            bench._kill_all()
    meta["seconds"] = time.monotonic() - t_start
    meta["loadavg_end"] = bench._loadavg()
    print_table(results)
    print(f"\ntotal {meta['seconds']:.0f} s; load {meta['loadavg_end']}; "
          f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    if args.json != "-":
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        bench._write_json(args.json, results)
        print(f"results written to {args.json}")
    failed = sum(len(e["errors"]) for c in results["conditions"].values()
                 for e in c["peers"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
