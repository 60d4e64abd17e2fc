#!/usr/bin/env python3
"""Side-by-side QUIC benchmarks: aiopquic (this project) against other Python QUIC stacks.

    python benchmarks/run.py [--scenarios S ...] [--peers aiopquic,aioquic,qh3,seed,iperf3]
                             [--repeat 3] [--json out.json] [--quick]

Every scenario runs for each available peer in alternation (A B C A B C ...), the client and
the server of a pair in two processes of the same implementation, in a private network
namespace with only loopback when ``unshare -n`` is allowed (else on 127.0.0.1).  Each
transfer verifies every byte (CRC-32 of the received data against the pattern's, computed
before timing).  Printed: median, min-max and the ratio to aiopquic, oriented so that a
ratio above 1 means aiopquic is better.  See docs/benchmarks.md.

Not part of the test suite.  ``benchmarks/setup_peers.sh`` installs the peers.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS_DIR = os.path.join(HERE, "peers")
OURS = "aiopquic"
NS_PORT = 14433  # fixed port inside a private namespace (nothing else lives there)
MIB = 1 << 20

# ---------------------------------------------------------------------------- scenarios

# name -> description, job (full), job overrides for --quick, metric, higher_is_better.
# Bulk sizes are the same for every peer; 'once' scenarios ignore --repeat.
SCENARIOS: dict[str, dict[str, Any]] = {}


def _bulk(name: str, op: str, chunk: int, full_mib: int, quick_mib: int, streams: int = 1,
          desc: str = "") -> None:
    SCENARIOS[name] = {
        "desc": desc or f"{op} on one stream, {chunk >> 10} KiB writes",
        "job": {"op": op, "size": full_mib * MIB, "chunk": chunk, "streams": streams},
        "quick": {"size": quick_mib * MIB},
        "metric": "mbps", "unit": "Mbps", "higher": True,
        "extra": ["hwm_kib"],
    }


for _kib, _full, _quick in ((1, 32, 8), (4, 64, 16), (16, 128, 32), (64, 128, 32)):
    _bulk(f"upload-{_kib}k", "upload", _kib << 10, _full, _quick,
          desc=f"client sends to server, one stream, {_kib} KiB writes")
for _kib, _full, _quick in ((1, 32, 8), (4, 64, 16), (16, 128, 32), (64, 128, 32)):
    _bulk(f"download-{_kib}k", "download", _kib << 10, _full, _quick,
          desc=f"server sends to client, one stream, {_kib} KiB writes")
_bulk("parallel-8", "upload", 16 << 10, 128, 32, streams=8,
      desc="client sends on 8 streams at once, 16 KiB writes")
SCENARIOS["rtt"] = {
    "desc": "64-byte request/response on one stream (echo), p50 of N round trips",
    "job": {"op": "rtt", "count": 2000, "warmup": 100}, "quick": {"count": 500},
    "metric": "p50_us", "unit": "us", "higher": False, "extra": ["p99_us"],
}
SCENARIOS["datagram"] = {
    "desc": "1200-byte DATAGRAM frames client->server for N s: received/s at the server",
    "job": {"op": "datagram", "duration": 3.0, "burst": 32}, "quick": {"duration": 1.0},
    "metric": "recv_per_s", "unit": "dgram/s", "higher": True,
    "extra": ["sent_per_s", "loss_pct", "rx_seconds", "hwm_kib"],
}
SCENARIOS["handshake-seq"] = {
    "desc": "sequential connects (warm process): p50 connect-to-handshake-complete",
    "job": {"op": "handshake", "count": 100, "concurrency": 1, "warmup": 5},
    "quick": {"count": 50},
    "metric": "p50_ms", "unit": "ms", "higher": False, "extra": ["p99_ms", "per_s"],
}
SCENARIOS["handshake-100"] = {
    "desc": "100 concurrent connects from one process: handshakes completed per second",
    "job": {"op": "handshake", "count": 100, "concurrency": 100, "warmup": 3},
    "quick": {},
    "metric": "per_s", "unit": "hs/s", "higher": True, "extra": ["p50_ms"],
}
SCENARIOS["handshake-1000"] = {
    "desc": "1,000 concurrent connects from one process: handshakes completed per second "
            "(aiopquic's client on a 2-thread ClientEndpoint)",
    "job": {"op": "handshake", "count": 1000, "concurrency": 1000, "warmup": 3,
            "shared": True},
    "quick": {"count": 500, "concurrency": 500},
    "metric": "per_s", "unit": "hs/s", "higher": True, "extra": ["p50_ms"],
    "peers": ("aiopquic", "aioquic", "qh3", "seed"),
}
SCENARIOS["mem-send"] = {
    "desc": "sender (client) RSS growth: 64 MiB upload vs a long one (1 GiB; 128 MiB quick)",
    "job": {"op": "upload", "size": 64 * MIB, "chunk": 16 << 10, "streams": 1},
    "long_mib": 1024, "quick_long_mib": 256, "quick": {},
    "metric": "long_growth_mib", "unit": "MiB", "higher": False,
    "extra": ["short_growth_mib", "long_mbps"], "once": True,
}
SCENARIOS["mem-idle"] = {
    "desc": "server RSS per idle connection, N connections from one client process",
    "job": {"op": "idle", "count": 1000, "batch": 50}, "quick": {"count": 200},
    "metric": "per_conn_kib", "unit": "KiB/conn", "higher": False,
    "extra": ["server_rss_after_kib"], "once": True,
}
SCENARIOS["conns-10k"] = {
    "desc": "N idle connections from one client process held by one server: server RSS per "
            "connection, server CPU while they idle 5 s (aiopquic's client shares 2 network "
            "threads: ClientEndpoint)",
    "job": {"op": "idle", "count": 10000, "batch": 500, "shared": True, "threads": 2,
            "idle_seconds": 5.0},  # measured after 10 s of settling
    "quick": {"count": 2000},
    "metric": "per_conn_kib", "unit": "KiB/conn", "higher": False,
    "extra": ["open_seconds", "idle_cpu_pct", "client_rss_kib", "client_threads",
              "client_fds"],
    "once": True, "peers": ("aiopquic", "aioquic"),
}
IPERF_SCENARIOS = ("upload-16k",)
DEFAULT_PEERS = ["aiopquic", "aioquic", "qh3", "seed", "seed-drained", "iperf3"]

# ---------------------------------------------------------------------------- peers


class Peer:
    def __init__(self, name: str, python: str, script: str, impl: str = "") -> None:
        self.name = name
        self.python = python
        self.script = os.path.join(PEERS_DIR, script)
        self.impl = impl
        self.missing = ""

    def argv(self, mode: str, extra: list[str]) -> list[str]:
        cmd = [self.python, "-u", self.script, mode]
        if self.impl:
            cmd += ["--impl", self.impl]
        return cmd + extra

    def supports(self, scenario: str) -> bool:
        return True


class Iperf3(Peer):
    def supports(self, scenario: str) -> bool:
        return scenario in IPERF_SCENARIOS


class SeedDrained(Peer):
    """The seed's second sending path only matters where bulk data is sent."""

    def supports(self, scenario: str) -> bool:
        return scenario.startswith(("upload-", "download-", "parallel-"))


def make_peers(args: argparse.Namespace) -> dict[str, Peer]:
    py = args.python
    seed_py = args.seed_python
    peers = {
        "aiopquic": Peer("aiopquic", py, "aiopquic_peer.py"),
        "aiopquic-ev": Peer("aiopquic-ev", py, "aiopquic_ev_peer.py"),
        "aiopquic-bbr": Peer("aiopquic-bbr", py, "aiopquic_peer.py", "bbr"),
        "aioquic": Peer("aioquic", py, "aioquic_peer.py", "aioquic"),
        "qh3": Peer("qh3", py, "aioquic_peer.py", "qh3"),
        "seed": Peer("seed", seed_py, "seed_peer.py", "seed-retry"),
        "seed-drained": SeedDrained("seed-drained", seed_py, "seed_peer.py", "seed-drained"),
        "iperf3": Iperf3("iperf3", "", ""),
    }
    checks = {"aiopquic": (py, "import aiopquic.asyncio, aiopquic._native"),
              "aioquic": (py, "import aioquic.asyncio"),
              "qh3": (py, "import qh3.asyncio"),
              "seed": (seed_py, "import importlib.metadata as m, aiopquic.asyncio; "
                       "assert m.version('aiopquic') == '0.6.1', m.version('aiopquic')")}
    checks["seed-drained"] = checks["seed"]
    checks["aiopquic-ev"] = checks["aiopquic"]
    checks["aiopquic-bbr"] = checks["aiopquic"]
    for name, peer in peers.items():
        if name == "iperf3":
            if not shutil.which("iperf3"):
                peer.missing = "iperf3 not installed (apt-get install iperf3)"
            continue
        interp, code = checks[name]
        if not os.path.exists(interp):
            peer.missing = f"no interpreter {interp} (run benchmarks/setup_peers.sh)"
            continue
        r = subprocess.run([interp, "-c", code], capture_output=True, text=True, timeout=60,
                           cwd=tempfile.gettempdir(), env=peer_env())
        if r.returncode:
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            peer.missing = f"{last} (run benchmarks/setup_peers.sh)"
    return peers


def peer_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the seed must not see this checkout's aiopquic
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# ---------------------------------------------------------------------------- processes

_live: list[subprocess.Popen] = []  # type: ignore[type-arg]


def _kill(proc: subprocess.Popen, grace: float = 3.0) -> None:  # type: ignore[type-arg]
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(5)
    if proc in _live:
        _live.remove(proc)


def _kill_all() -> None:
    for proc in list(_live):
        _kill(proc, 1.0)


def _on_signal(signum: int, frame: Any) -> None:
    _kill_all()
    sys.exit(128 + signum)


def _spawn(argv: list[str], stderr_path: str, cwd: str) -> subprocess.Popen:  # type: ignore
    errf = open(stderr_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errf, cwd=cwd, env=peer_env(),
                                start_new_session=True)
    finally:
        errf.close()
    _live.append(proc)
    return proc


def _read_line(proc: subprocess.Popen, timeout: float) -> Optional[str]:  # type: ignore
    """One line of the child's stdout within ``timeout`` s (None on timeout/EOF)."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                continue
            ch = os.read(proc.stdout.fileno(), 1)
            if not ch:
                return None
            if ch == b"\n":
                return buf.decode("utf-8", "replace")
            buf += ch
    finally:
        sel.close()
    return None


def _read_json(proc: subprocess.Popen, timeout: float, key: str  # type: ignore[type-arg]
               ) -> Optional[dict[str, Any]]:
    """The first stdout line of the child that is a JSON object with ``key`` (other lines,
    e.g. a library's warnings, are skipped); None on timeout or EOF."""
    deadline = time.monotonic() + timeout
    while True:
        line = _read_line(proc, max(0.0, deadline - time.monotonic()))
        if line is None:
            return None
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and key in obj:
            return obj


def _tail(path: str, n: int = 6) -> str:
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(lines[-n:])
    except OSError:
        return ""


class Net:
    """Where a pair runs: a private netns (only loopback) or the host's 127.0.0.1."""

    def __init__(self, use_netns: bool, lo_mtu: Optional[int] = None) -> None:
        self.netns = use_netns
        self.lo_mtu = lo_mtu

    @staticmethod
    def available() -> bool:
        if not shutil.which("unshare") or not shutil.which("nsenter"):
            return False
        try:
            r = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up || true"],
                               capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return r.returncode == 0

    def server_argv(self, argv: list[str]) -> list[str]:
        if not self.netns:
            return argv
        quoted = " ".join(_shquote(a) for a in argv)
        mtu = f"ip link set lo mtu {self.lo_mtu} && " if self.lo_mtu else ""
        return ["unshare", "-n", "sh", "-c", f"{mtu}ip link set lo up && exec {quoted}"]

    def mtu(self) -> Optional[int]:
        """The loopback MTU the pairs see (a fresh namespace's lo starts at 65536)."""
        if self.netns:
            return self.lo_mtu or 65536
        return lo_mtu_here()

    def client_argv(self, argv: list[str], server_pid: int) -> list[str]:
        if not self.netns:
            return argv
        return ["nsenter", f"--net=/proc/{server_pid}/ns/net", "--"] + argv

    def port(self) -> int:
        if self.netns:
            return NS_PORT
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
        finally:
            s.close()


def lo_mtu_here() -> Optional[int]:
    """MTU of ``lo`` in this process's network namespace (None if unknown).  Asked with
    SIOCGIFMTU: /sys/class/net shows the namespace sysfs was mounted in, not ours."""
    import fcntl
    import struct
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            ifr = fcntl.ioctl(s.fileno(), 0x8921, struct.pack("16si", b"lo", 0))  # SIOCGIFMTU
        return int(struct.unpack("16si", ifr)[1])
    except (OSError, struct.error):
        return None


def _shquote(s: str) -> str:
    import shlex
    return shlex.quote(s)


# ---------------------------------------------------------------------------- one trial

class Ctx:
    def __init__(self, args: argparse.Namespace, net: Net, certs: dict[str, str], tmp: str):
        self.args = args
        self.net = net
        self.certs = certs
        self.tmp = tmp


def job_timeout(job: dict[str, Any]) -> float:
    t = 60.0
    if "size" in job:
        t += job["size"] / (4 * MIB)  # never slower than 32 Mbps
    if job.get("op") == "handshake":
        t += job["count"] * 0.2
    if job.get("op") == "idle":
        t += job["count"] * 0.1
    if job.get("op") == "datagram":
        t += job["duration"] * 3
    return t


def run_pair(ctx: Ctx, peer: Peer, job: dict[str, Any]) -> dict[str, Any]:
    """Start ``peer``'s server, run one client job against it, stop the server."""
    if isinstance(peer, Iperf3):
        return run_iperf3(ctx, job)
    net = ctx.net
    port = net.port()
    err_path = os.path.join(ctx.tmp, f"{peer.name}.stderr")
    open(err_path, "wb").close()
    server = _spawn(net.server_argv(peer.argv("server", [
        "--host", "127.0.0.1", "--port", str(port),
        "--cert", ctx.certs["cert"], "--key", ctx.certs["key"]])), err_path, ctx.tmp)
    try:
        ready = _read_json(server, 60.0, "ready")
        if not ready:
            return {"ok": False, "error": f"server did not start: {_tail(err_path)}"}
        spid = int(ready["pid"])
        timeout = job_timeout(job)
        job = dict(job, timeout=timeout)
        client = _spawn(net.client_argv(peer.argv("client", [
            "--host", "127.0.0.1", "--port", str(port), "--ca", ctx.certs["ca"],
            "--job", json.dumps(job)]), spid), err_path, ctx.tmp)
        try:
            res = _read_json(client, timeout + 30.0, "ok")
        finally:
            _kill(client, 5.0)
        if not res:
            return {"ok": False, "error": f"client gave no result: {_tail(err_path)}"}
        return res
    finally:
        _kill(server, 3.0)


def run_iperf3(ctx: Ctx, job: dict[str, Any]) -> dict[str, Any]:
    net = ctx.net
    port = net.port()
    err_path = os.path.join(ctx.tmp, "iperf3.stderr")
    secs = ctx.args.iperf_seconds
    server = _spawn(net.server_argv(["iperf3", "-s", "-1", "-p", str(port), "--forceflush",
                                     "-B", "127.0.0.1"]), err_path, ctx.tmp)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = _read_line(server, max(0.1, deadline - time.monotonic()))
            if line is None or "listening" in line.lower():
                break
        client = _spawn(net.client_argv(["iperf3", "-u", "-l", "1400", "-b", "0", "-c",
                                         "127.0.0.1", "-p", str(port), "-t", str(secs), "-J"],
                                        server.pid), err_path, ctx.tmp)
        try:
            assert client.stdout is not None
            try:
                out, _ = client.communicate(timeout=secs + 30)
            except subprocess.TimeoutExpired:
                return {"ok": False, "error": "iperf3 client timed out"}
        finally:
            _kill(client, 3.0)
        try:
            end = json.loads(out)["end"]
        except (ValueError, KeyError):
            return {"ok": False, "error": f"iperf3: {out[:200]!r} {_tail(err_path)}"}
        rx = end.get("sum_received") or end["sum"]
        tx = end.get("sum_sent") or end["sum"]
        return {"ok": True, "result": {
            "mbps": rx["bits_per_second"] / 1e6, "sent_mbps": tx["bits_per_second"] / 1e6,
            "loss_pct": rx.get("lost_percent", 0.0), "seconds": secs}}
    finally:
        _kill(server, 3.0)


def scenario_job(name: str, quick: bool, mib: Optional[int] = None) -> dict[str, Any]:
    spec = SCENARIOS[name]
    job = dict(spec["job"])
    if quick:
        job.update(spec.get("quick", {}))
    if mib and "size" in job and name != "mem-send":
        job["size"] = mib * MIB
    return job


def run_trial(ctx: Ctx, name: str, peer: Peer) -> dict[str, Any]:
    """One measurement of scenario ``name`` for ``peer``: {"ok", "result"|"error"}."""
    job = scenario_job(name, ctx.args.quick, ctx.args.mib)
    if name != "mem-send":
        return run_pair(ctx, peer, job)
    spec = SCENARIOS[name]
    long_mib = ctx.args.long_mib or (spec["quick_long_mib"] if ctx.args.quick
                                     else spec["long_mib"])
    short = run_pair(ctx, peer, job)
    if not short.get("ok"):
        return short
    long = run_pair(ctx, peer, dict(job, size=long_mib * MIB))
    if not long.get("ok"):
        return long
    s, lg = short["result"], long["result"]
    return {"ok": True, "result": {
        "short_mib": job["size"] // MIB, "long_mib": long_mib,
        "short_growth_mib": (s["hwm_kib"] - s["rss_before_kib"]) / 1024,
        "long_growth_mib": (lg["hwm_kib"] - lg["rss_before_kib"]) / 1024,
        "short_hwm_mib": s["hwm_kib"] / 1024, "long_hwm_mib": lg["hwm_kib"] / 1024,
        "short_mbps": s["mbps"], "long_mbps": lg["mbps"]}}


# ---------------------------------------------------------------------------- stats

def summarize(name: str, trials: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    spec = SCENARIOS[name]
    key = spec["metric"]
    out: dict[str, Any] = {}
    for peer, ts in trials.items():
        vals = [t["result"][key] for t in ts if t.get("ok")]
        errs = [t.get("error", "?") for t in ts if not t.get("ok")]
        entry: dict[str, Any] = {"trials": ts, "errors": errs, "n": len(vals)}
        if vals:
            entry.update(median=statistics.median(vals), min=min(vals), max=max(vals))
            for extra in spec.get("extra", []) + (["loss_pct"] if peer == "iperf3" else []):
                xs = [t["result"][extra] for t in ts if t.get("ok") and extra in t["result"]]
                if xs:
                    entry[f"median_{extra}"] = statistics.median(xs)
        out[peer] = entry
    ours = out.get(OURS, {}).get("median")
    for peer, entry in out.items():
        m = entry.get("median")
        if ours is None or m is None or peer == OURS:
            continue
        if spec["higher"]:
            entry["ratio"] = ours / m if m else None
        else:
            entry["ratio"] = m / ours if ours else None
        # paired: round k of aiopquic against round k of the peer (adjacent in time, so
        # background load affects both alike), then the median over rounds
        pairs = []
        for a, b in zip(trials.get(OURS, []), trials[peer]):
            if a.get("ok") and b.get("ok"):
                va, vb = a["result"][key], b["result"][key]
                if va and vb:
                    pairs.append(va / vb if spec["higher"] else vb / va)
        if pairs:
            entry["ratio_paired"] = statistics.median(pairs)
    return out


def fmt(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _ratio(r: float) -> str:
    return f"{r:.2f}x" if r < 100 else f"{r:,.0f}x"


def print_table(name: str, summary: dict[str, Any], file: Any = sys.stdout) -> None:
    spec = SCENARIOS[name]
    better = "higher" if spec["higher"] else "lower"
    print(f"\n== {name}: {spec['desc']}", file=file)
    print(f"   metric {spec['metric']} [{spec['unit']}], {better} is better; "
          f"ratio > 1 = aiopquic better", file=file)
    extras = spec.get("extra", [])
    head = (f"   {'peer':<13} {'median':>10} {'min-max':>21} {'ratio':>7} {'paired':>7}  n  "
            + "  ".join(extras))
    print(head, file=file)
    for peer, e in summary.items():
        if e.get("median") is None:
            print(f"   {peer:<13} {'FAILED':>10}  {e['errors'][:1]}", file=file)
            continue
        ratio = e.get("ratio")
        rtxt = "ours" if peer == OURS else (_ratio(ratio) if ratio else "-")
        xs = "  ".join(fmt(e.get(f"median_{x}")) for x in extras)
        mm = f"{fmt(e['min'])}-{fmt(e['max'])}"
        paired = e.get("ratio_paired")
        ptxt = _ratio(paired) if paired else ""
        print(f"   {peer:<13} {fmt(e['median']):>10} {mm:>21} {rtxt:>7} {ptxt:>7} {e['n']:>2}"
              f"  {xs}", file=file)
        if e["errors"]:
            print(f"   {'':<13} {len(e['errors'])} failed: {e['errors'][0][:150]}", file=file)


def print_summary(results: dict[str, Any], file: Any = sys.stdout) -> None:
    """One line per scenario: aiopquic's median and its ratio to every other peer."""
    scen = results["scenarios"]
    if not scen:
        return
    others: list[str] = []
    for s in scen.values():
        for p in s["peers"]:
            if p != OURS and p not in others:
                others.append(p)
    seeds = [p for p in ("seed", "seed-drained") if p in others]
    cols = others + (["seed(best)"] if len(seeds) == 2 else [])
    print("\n== summary: aiopquic's median, and ratio to each peer (> 1 = aiopquic better)",
          file=file)
    print(f"   {'scenario':<15} {'aiopquic':>16} " + " ".join(f"{c:>12}" for c in cols),
          file=file)
    for name, s in scen.items():
        peers = s["peers"]
        ours = peers.get(OURS, {}).get("median")
        cells = []
        for c in cols:
            if c == "seed(best)":
                rs = [peers[p].get("ratio") for p in seeds if p in peers]
                rs = [r for r in rs if r]
                cells.append(_ratio(min(rs)) if rs else "")
                continue
            r = peers.get(c, {}).get("ratio")
            cells.append(_ratio(r) if r else ("FAIL" if c in peers and
                                                   peers[c].get("median") is None else ""))
        ours_txt = f"{fmt(ours)} {s['unit']}" if ours is not None else "FAIL"
        print(f"   {name:<15} {ours_txt:>16} " + " ".join(f"{c:>12}" for c in cells),
              file=file)


# ---------------------------------------------------------------------------- main

def make_certs(tmp: str) -> dict[str, str]:
    """A throwaway CA and an ECDSA P-256 leaf for localhost/127.0.0.1 (trustme)."""
    import trustme
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    leaf = ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.ECDSA)
    paths = {k: os.path.join(tmp, f"{k}.pem") for k in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    leaf.private_key_pem.write_to_path(paths["key"])
    with open(paths["cert"], "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    return paths


def machine_info(args: argparse.Namespace, peers: dict[str, Peer]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kernel": platform.release(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "quick": args.quick, "repeat": args.repeat,
        "netns": None, "loadavg_start": _loadavg(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["aiopquic_commit"] = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
            text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "csrc",
                                "aiopquic"], capture_output=True, text=True, timeout=10).stdout
        info["aiopquic_dirty"] = bool(dirty.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    versions = {}
    for name, dist, interp in (("aioquic", "aioquic", args.python), ("qh3", "qh3", args.python),
                               ("seed", "aiopquic", args.seed_python)):
        if peers[name].missing:
            continue
        r = subprocess.run([interp, "-c", f"import importlib.metadata as m; "
                            f"print(m.version({dist!r}))"], capture_output=True, text=True,
                           timeout=30, cwd=tempfile.gettempdir(), env=peer_env())
        versions[name] = r.stdout.strip()
    if shutil.which("iperf3"):
        r = subprocess.run(["iperf3", "--version"], capture_output=True, text=True, timeout=10)
        versions["iperf3"] = (r.stdout.splitlines() or [""])[0]
    info["versions"] = versions
    return info


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", nargs="+", metavar="S", choices=list(SCENARIOS) + ["all"],
                   default=["all"], help="scenarios to run (default all): "
                   + ", ".join(SCENARIOS))
    p.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                   help=f"comma-separated peers (default {','.join(DEFAULT_PEERS)})")
    p.add_argument("--repeat", type=int, default=None,
                   help="trials per scenario and peer (default 3; 1 with --quick)")
    p.add_argument("--json", metavar="FILE", help="write all results here")
    p.add_argument("--quick", action="store_true", help="small sizes: a ~2-minute smoke run")
    p.add_argument("--iperf-seconds", type=int, default=None,
                   help="iperf3 run length (default 5; 2 with --quick)")
    p.add_argument("--mib", type=int, default=None,
                   help="bytes per bulk transfer in MiB for every upload/download/parallel "
                   "scenario (default: per scenario, see --list)")
    p.add_argument("--long-mib", type=int, default=None,
                   help="size of mem-send's long transfer (default 1024; 128 with --quick)")
    p.add_argument("--no-netns", action="store_true",
                   help="run on the host's 127.0.0.1 even when a private netns is possible")
    p.add_argument("--lo-mtu", type=int, default=None,
                   help="set the MTU of loopback in each pair's private netns (e.g. 1500; "
                   "default: the kernel's 65536)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for the aiopquic/aioquic/qh3 peers (default: this one)")
    p.add_argument("--seed-python",
                   default=os.path.join(ROOT, ".bench-venvs", "seed", "bin", "python"),
                   help="interpreter of the venv holding aiopquic 0.6.1")
    p.add_argument("--setup", action="store_true",
                   help="run benchmarks/setup_peers.sh first (installs missing peers)")
    p.add_argument("--list", action="store_true", help="list scenarios and peers, then exit")
    p.add_argument("--report", metavar="FILE",
                   help="print the tables of a results file written by --json, then exit")
    a = p.parse_args(argv)
    if a.repeat is None:
        a.repeat = 1 if a.quick else 3
    if a.iperf_seconds is None:
        a.iperf_seconds = 2 if a.quick else 5
    if a.repeat < 1:
        p.error("--repeat must be at least 1")
    return a


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, spec in SCENARIOS.items():
            job = scenario_job(name, args.quick, args.mib)
            size = f" [{job['size'] // MIB} MiB]" if "size" in job else ""
            print(f"{name:<15} {spec['desc']}{size}")
        print("peers:", ", ".join(DEFAULT_PEERS))
        return 0
    if args.report:
        return report(args.report)
    if args.setup:
        subprocess.run(["sh", os.path.join(HERE, "setup_peers.sh")], check=False)
    names = list(SCENARIOS) if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    all_peers = make_peers(args)
    unknown = [p for p in wanted if p not in all_peers]
    if unknown:
        print(f"unknown peers: {', '.join(unknown)}; known: {', '.join(all_peers)}",
              file=sys.stderr)
        return 2
    peers: list[Peer] = []
    for name in wanted:
        peer = all_peers[name]
        if peer.missing:
            print(f"skipping peer {name}: {peer.missing}", file=sys.stderr)
        else:
            peers.append(peer)
    if not peers:
        print("no peer available", file=sys.stderr)
        return 2

    atexit.register(_kill_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    use_netns = not args.no_netns and Net.available()
    if not use_netns and any(p.name.startswith("seed") for p in peers):
        print("note: no private network namespace; the seed's server listens on the "
              "wildcard address (its serve() ignores the host)", file=sys.stderr)
    if args.lo_mtu and not use_netns:
        print("--lo-mtu needs a private network namespace (unshare -n); run the harness "
              "itself in one instead: unshare -n sh -c 'ip link set lo mtu N && "
              "ip link set lo up && exec ... --no-netns'", file=sys.stderr)
        return 2
    net = Net(use_netns, args.lo_mtu)
    info = machine_info(args, all_peers)
    info["netns"] = use_netns
    info["lo_mtu"] = net.mtu()
    info["peers"] = [p.name for p in peers]
    print(f"aiopquic benchmarks: {len(names)} scenario(s) x {len(peers)} peer(s) x "
          f"{args.repeat}; {'private netns, loopback only' if use_netns else '127.0.0.1'}"
          f" (lo MTU {info['lo_mtu']}); "
          f"load {info['loadavg_start']}; {info.get('cpu', '?')}")
    results: dict[str, Any] = {"meta": info, "scenarios": {}}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aiopquic-bench-") as tmp:
        os.chmod(tmp, 0o755)
        certs = make_certs(tmp)
        ctx = Ctx(args, net, certs, tmp)
        try:
            for name in names:
                spec = SCENARIOS[name]
                here = [p for p in peers if p.supports(name) and
                        p.name in SCENARIOS[name].get("peers", (p.name,))]
                reps = 1 if spec.get("once") else args.repeat
                trials: dict[str, list[dict[str, Any]]] = {p.name: [] for p in here}
                t0 = time.monotonic()
                for rep in range(reps):
                    for peer in here:  # alternate: A B C A B C ...
                        res = run_trial(ctx, name, peer)
                        trials[peer.name].append(res)
                        _progress(name, rep, reps, peer.name, res)
                summary = summarize(name, trials)
                results["scenarios"][name] = {
                    "desc": spec["desc"], "metric": spec["metric"], "unit": spec["unit"],
                    "higher_is_better": spec["higher"],
                    "job": scenario_job(name, args.quick, args.mib),
                    "seconds": time.monotonic() - t0, "peers": summary}
                if sys.stderr.isatty():
                    sys.stderr.write("\r" + " " * 78 + "\r")
                print_table(name, summary)
                if args.json:
                    _write_json(args.json, results)
        except KeyboardInterrupt:
            print("\ninterrupted: partial results", file=sys.stderr)
        finally:
            _kill_all()
    print_summary(results)
    results["meta"]["seconds"] = time.monotonic() - t_start
    results["meta"]["loadavg_end"] = _loadavg()
    print(f"\ntotal {results['meta']['seconds']:.0f} s; load {results['meta']['loadavg_end']}")
    if args.json:
        _write_json(args.json, results)
        print(f"results written to {args.json}")
    failed = sum(len(e["errors"]) for s in results["scenarios"].values()
                 for e in s["peers"].values())
    return 1 if failed else 0


def report(path: str) -> int:
    """Re-print (and re-summarize from the raw trials) a results file."""
    with open(path) as f:
        results = json.load(f)
    meta = results.get("meta", {})
    print(f"{path}: {meta.get('date')} commit {meta.get('aiopquic_commit')}"
          f"{' (dirty)' if meta.get('aiopquic_dirty') else ''}, repeat {meta.get('repeat')}"
          f"{' quick' if meta.get('quick') else ''}, load {meta.get('loadavg_start')} -> "
          f"{meta.get('loadavg_end')}, lo MTU {meta.get('lo_mtu', '?')}")
    for name, s in results.get("scenarios", {}).items():
        if name not in SCENARIOS:
            continue
        s["peers"] = summarize(name, {p: e["trials"] for p, e in s["peers"].items()})
        print_table(name, s["peers"])
    print_summary(results)
    return 0


def _progress(name: str, rep: int, reps: int, peer: str, res: dict[str, Any]) -> None:
    spec = SCENARIOS[name]
    if res.get("ok"):
        v = res["result"].get(spec["metric"])
        txt = f"{fmt(v)} {spec['unit']}" if v is not None else "ok"
    else:
        txt = "FAILED " + str(res.get("error", ""))[:60]
    line = f"  {name} [{rep + 1}/{reps}] {peer}: {txt}"
    if sys.stderr.isatty():
        sys.stderr.write("\r" + line.ljust(78)[:78])
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _write_json(path: str, results: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, default=str)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
