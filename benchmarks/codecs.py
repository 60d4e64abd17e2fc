"""Codec micro-benchmark: aiopquic's codecs against aiopquic 0.6.1's Cython ones.

Times, per message, what aiomoqt does on its hot paths: QUIC varint and draft-18 vi64
push/pull on a ``Buffer``, and MoQT subgroup-object encode (``encode_object_subgroup``) and
parse (``StreamChain.parse_object_subgroup`` with save/commit, as aiomoqt's reader does).

Both packages are named ``aiopquic``, so each implementation runs in a child process::

    python benchmarks/codecs.py --ref-python /tmp/venv312/bin/python [--python pypy3 ...]

``--ref-python`` is an interpreter with aiopquic 0.6.1 installed (its wheels need CPython >=
3.12); ours runs from this source tree (``PYTHONPATH``; on CPython the C codecs of
``aiopquic._ccodecs`` when the tree was built, ``make setup``, else the Python ones) under each
``--python`` (default: the ref interpreter, so both run on the same CPython, plus ``pypy3``
when it is on ``PATH``).  The table shows the median of ``--repeat`` runs in ns per message
and the ratio ours / 0.6.1 (below 1 = ours is faster).  Times are the CPU time of the
benchmarking thread (`time.thread_time_ns`), so other load on the machine inflates them less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VAR_VALUES = [37, 15293, 494878333, 151288809941952652] * 25  # RFC 9000 A.1, all 4 sizes
VI64_VALUES = [37, 15293, 2**20, 2**33, 2**60] * 20


def _cases() -> dict[str, tuple[Callable[[], None], int]]:
    """Each case: (function doing ``count`` messages, count)."""
    from aiopquic._binding._streamchain import (
        encode_object_subgroup,
        encode_object_subgroup_vi64,
    )
    from aiopquic.buffer import Buffer
    from aiopquic.streamchain import StreamChain

    sink: list[int] = []  # results go here so no JIT can drop the work

    var_wire = Buffer(capacity=1024)
    for v in VAR_VALUES:
        var_wire.push_uint_var(v)
    var_bytes = var_wire.data
    vi64_wire = Buffer(capacity=1024)
    for v in VI64_VALUES:
        vi64_wire.push_uint_vi64(v)
    vi64_bytes = vi64_wire.data

    def var_push() -> None:
        buf = Buffer(capacity=1024)
        push = buf.push_uint_var
        for v in VAR_VALUES:
            push(v)
        sink.append(buf.tell())

    def var_pull() -> None:
        buf = Buffer(data=var_bytes)
        pull = buf.pull_uint_var
        total = 0
        for _ in range(100):
            total += pull()
        sink.append(total)

    def vi64_push() -> None:
        buf = Buffer(capacity=1024)
        push = buf.push_uint_vi64
        for v in VI64_VALUES:
            push(v)
        sink.append(buf.tell())

    def vi64_pull() -> None:
        buf = Buffer(data=vi64_bytes)
        pull = buf.pull_uint_vi64
        total = 0
        for _ in range(100):
            total += pull()
        sink.append(total)

    payload_small = b"p" * 100
    payload_video = b"v" * 1200
    exts = {0x3C: 1000, 0x0B: b"\x01\x02\x03\x04"}

    def make_encode(
        fn: Callable[..., bytes], payload: bytes, ext: dict[int, object] | None, present: bool
    ) -> Callable[[], None]:
        def run() -> None:
            total = 0
            for i in range(100):
                total += len(fn(i & 3, ext, 0, payload, present, True))
            sink.append(total)

        return run

    def make_parse(
        wire: bytes, vi64: bool, present: bool, count: int
    ) -> Callable[[], None]:
        def run() -> None:
            chain = StreamChain()
            chain.extend(wire)
            parse = chain.parse_object_subgroup_vi64 if vi64 else chain.parse_object_subgroup
            save = chain.save
            commit = chain.commit
            total = 0
            for _ in range(count):
                save()
                total += len(parse(present, 1 << 16, True)[3])
                commit()
            sink.append(total)

        return run

    def wire(fn: Callable[..., bytes], payload: bytes, ext: dict[int, object] | None,
             present: bool) -> bytes:
        return b"".join(fn(i & 3, ext, 0, payload, present, True) for i in range(100))

    E, EV = encode_object_subgroup, encode_object_subgroup_vi64
    return {
        "varint push": (var_push, 100),
        "varint pull": (var_pull, 100),
        "vi64 push": (vi64_push, 100),
        "vi64 pull": (vi64_pull, 100),
        "encode 100B": (make_encode(E, payload_small, None, False), 100),
        "encode 100B+ext": (make_encode(E, payload_small, exts, True), 100),
        "encode 1200B": (make_encode(E, payload_video, None, True), 100),
        "encode_vi64 100B+ext": (make_encode(EV, payload_small, exts, True), 100),
        "parse 100B": (make_parse(wire(E, payload_small, None, False), False, False, 100), 100),
        "parse 100B+ext": (make_parse(wire(E, payload_small, exts, True), False, True, 100), 100),
        "parse 1200B": (make_parse(wire(E, payload_video, None, True), False, True, 100), 100),
        "parse_vi64 100B+ext": (
            make_parse(wire(EV, payload_small, exts, True), True, True, 100), 100),
    }


def run_here(repeat: int, seconds: float) -> dict[str, float]:
    """Time every case in this process; return ns per message (median of ``repeat`` runs)."""
    results: dict[str, float] = {}
    for name, (fn, count) in _cases().items():
        # calibrate: enough loops for `seconds` per run (and JIT warm-up on PyPy)
        loops = 1
        while True:
            t0 = time.thread_time()
            for _ in range(loops):
                fn()
            dt = time.thread_time() - t0
            if dt > seconds / 4:
                break
            loops *= 2
        loops = max(1, int(loops * seconds / max(dt, 1e-9)))
        samples = []
        for _ in range(repeat):
            t0 = time.thread_time_ns()
            for _ in range(loops):
                fn()
            samples.append((time.thread_time_ns() - t0) / (loops * count))
        results[name] = statistics.median(samples)
        del fn
    return results


def _child(python: str, ours: bool, repeat: int, seconds: float) -> dict[str, object]:
    env = dict(os.environ)
    if ours:
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    else:
        env.pop("PYTHONPATH", None)
    out = subprocess.run(
        [python, os.path.abspath(__file__), "--here", "--repeat", str(repeat),
         "--seconds", str(seconds)],
        env=env, check=True, capture_output=True, text=True, cwd="/",
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-python", default=os.environ.get("AIOPQUIC_REF_PYTHON"),
                        help="interpreter with aiopquic 0.6.1 installed")
    parser.add_argument("--python", action="append", default=[],
                        help="interpreter(s) to run ours under (repeatable)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs per interpreter")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case per round")
    parser.add_argument("--seconds", type=float, default=0.2, help="per run")
    parser.add_argument("--json", help="also write all results to this file")
    parser.add_argument("--here", action="store_true",
                        help="time whatever `aiopquic` this interpreter imports, print JSON")
    args = parser.parse_args()
    if args.here:
        import platform

        import aiopquic

        print(json.dumps({
            "impl": platform.python_implementation(), "ver": platform.python_version(),
            "aiopquic": aiopquic.__version__, "results": run_here(args.repeat, args.seconds),
        }))
        return 0
    pythons = args.python or [args.ref_python or sys.executable]
    if not args.python and shutil.which("pypy3"):
        pythons.append("pypy3")
    jobs: list[tuple[str, str, bool]] = []
    if args.ref_python:
        jobs.append(("0.6.1", args.ref_python, False))
    jobs += [("ours", py, True) for py in pythons]
    # Rounds alternate the implementations so that load from other processes on the machine
    # spreads over all of them; the table shows the median over the rounds.
    per_round: list[list[dict[str, object]]] = [[] for _ in jobs]
    for _ in range(args.rounds):
        for i, (_label, py, ours) in enumerate(jobs):
            per_round[i].append(_child(py, ours, args.repeat, args.seconds))
    runs: list[tuple[str, dict[str, object]]] = []
    for (label, _py, _ours), rounds in zip(jobs, per_round):
        merged = dict(rounds[0])
        merged["results"] = {
            name: statistics.median(r["results"][name] for r in rounds)  # type: ignore[index]
            for name in rounds[0]["results"]  # type: ignore[attr-defined]
        }
        runs.append((label, merged))
    headers = []
    for label, r in runs:
        headers.append(f"{label} {r['impl']} {r['ver']}")
    names = list(runs[0][1]["results"])  # type: ignore[call-overload]
    ref = runs[0][1]["results"] if args.ref_python else None
    width = max(len(n) for n in names) + 2
    line = "case".ljust(width) + "".join(h.rjust(26) for h in headers)
    if ref is not None:
        line += "".join(f"ratio #{i + 1}".rjust(10) for i in range(1, len(runs)))
    print("ns per message (median)")
    print(line)
    for name in names:
        vals = [r["results"][name] for _, r in runs]  # type: ignore[index]
        line = name.ljust(width) + "".join(f"{v:26.0f}" for v in vals)
        if ref is not None:
            line += "".join(f"{v / vals[0]:10.2f}" for v in vals[1:])
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
