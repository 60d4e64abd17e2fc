#!/usr/bin/env python3
"""Run aiomoqt's own test suite (from its sdist, fetched with pip at run time) on an aiopquic.

aiomoqt (Media over QUIC for Python) is the main program written against aiopquic 0.6.1.  Its
test suite passing on this aiopquic is the proof that 0.6.1 programs run unchanged.  Nothing of
aiomoqt is committed here: pip downloads its sdist into ``build/aiomoqt/`` and installs its
wheel and test dependencies into a venv made with a Python >= 3.12 (aiomoqt needs 3.12).

    python3 tests/aiomoqt_suite.py                 # this tree's aiopquic (make test-aiomoqt)
    python3 tests/aiomoqt_suite.py --aiopquic ==0.6.1 --venv .venv-aiomoqt-seed
                                                   # the released 0.6.1, for reference
    python3 tests/aiomoqt_suite.py -- -k loopback  # extra pytest arguments after "--"

Without any Python >= 3.12 on the machine it prints "skipped: no Python >= 3.12" and exits 0.
Each test runs under a per-test time limit (``--timeout``, 10 s by default).  A test that
fails is run once more on its own (many of aiomoqt's tests are timed, and a loaded machine
misses a deadline now and then): failing twice is a failure, passing the second time is
reported as "flaky".  It exits 1 when a test failed twice and is not in KNOWN_FAILURES (tests
that fail on aiopquic 0.6.1 too, each with the reason), else 0, and writes the outcome of
every test to ``build/aiomoqt/results-<label>.json`` (``--compare A B`` diffs two such files).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "aiomoqt"
AIOMOQT = "0.13.3"
# aiomoqt's [test] extra, its runtime dependencies, and the per-test time limit
TEST_DEPS = ["pytest", "pytest-asyncio", "pytest-timeout", "jsonschema", "sortedcontainers",
             "certifi"]
# Tests that fail on aiopquic 0.6.1 as well (same machine, same run), and why.
KNOWN_FAILURES = {
    "aiomoqt.tests.test_load_sim_e2e::test_load_sim_runs_a_packaged_scenario":
        "a load scenario that needs more than the 10 s per-test limit (fails on 0.6.1 too)",
}


def run_in_group(cmd: list[str], **kw: object) -> int:
    """Run ``cmd`` in a process group of its own and return its exit code; whatever it leaves
    running in that group is killed when it returns (aiomoqt's load test, timed out at the
    per-test limit, leaves its load_sim clients running for minutes otherwise)."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)  # type: ignore[call-overload]
    try:
        return int(proc.wait())
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

def log(msg: str) -> None:
    print(f"aiomoqt-suite: {msg}", flush=True)


def run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def find_python() -> Optional[str]:
    """The first interpreter >= 3.12 found: $AIOMOQT_PYTHON, python3.12..3.14 on PATH (a
    pyenv shim that refuses to run counts as absent), then pyenv's installed versions."""
    candidates: list[str] = []
    if os.environ.get("AIOMOQT_PYTHON"):
        candidates.append(os.environ["AIOMOQT_PYTHON"])
    candidates += ["python3.12", "python3.13", "python3.14"]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.1[2-9]*",
                                                "bin", "python3")))
    for cand in candidates:
        exe = shutil.which(cand) or (cand if os.path.isfile(cand) else None)
        if exe is None:
            continue
        try:
            out = subprocess.run(
                [exe, "-c", "import sys, venv; print(sys.version_info >= (3, 12))"],
                capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "True":
            return exe
    return None


def tree_hash() -> str:
    """Hash of what an install of this tree is built from (reinstall when it changes)."""
    h = hashlib.sha256()
    files = [ROOT / "pyproject.toml", ROOT / "setup.py", ROOT / "build_ffi.py"]
    files += sorted((ROOT / "csrc").glob("*.[ch]"))
    files += sorted((ROOT / "aiopquic").rglob("*.py"))
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def make_venv(python: str, venv: Path, aiopquic: Optional[str]) -> Path:
    """Create (or reuse) ``venv`` with aiopquic (this tree, or the release ``aiopquic``
    names, e.g. "==0.6.1"), aiomoqt and its test dependencies."""
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        log(f"creating {venv} with {python}")
        run([python, "-m", "venv", str(venv)])
    pip = [str(vpy), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    stamp = venv / ".aiomoqt-suite-stamp"
    want = f"{AIOMOQT}|{aiopquic or tree_hash()}"
    if stamp.exists() and stamp.read_text() == want:
        return vpy
    run(pip + ["-U", "pip", "setuptools>=61", "wheel", "cffi>=1.15"])
    if aiopquic is None:
        log(f"installing this tree's aiopquic into {venv} (builds the native shim)")
        run(pip + ["--no-build-isolation", "--force-reinstall", "--no-deps", str(ROOT)])
        run(pip + [str(ROOT)])  # its dependencies
    else:
        log(f"installing aiopquic{aiopquic} into {venv}")
        run(pip + [f"aiopquic{aiopquic}"])
    # aiomoqt requires aiopquic>=0.6.1: pip must take the one installed above
    run(pip + [f"aiomoqt=={AIOMOQT}"] + TEST_DEPS)
    out = subprocess.run([str(vpy), "-c", "import aiopquic, importlib.metadata as m; "
                          "print(m.version('aiopquic'), aiopquic.__file__)"],
                         capture_output=True, text=True, check=True, cwd=venv)
    log(f"aiopquic in {venv}: {out.stdout.strip()}")
    stamp.write_text(want)
    return vpy


def fetch_sdist(vpy: Path) -> Path:
    """aiomoqt's sdist (it has the tests; the wheel does not), unpacked under build/."""
    src = WORK / f"aiomoqt-{AIOMOQT}"
    if (src / "pytest.ini").exists():
        return src
    WORK.mkdir(parents=True, exist_ok=True)
    run([str(vpy), "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
         "--no-binary", ":all:", f"aiomoqt=={AIOMOQT}", "-d", str(WORK)])
    with tarfile.open(WORK / f"aiomoqt-{AIOMOQT}.tar.gz") as tar:
        tar.extractall(WORK)  # noqa: S202 - a registry sdist we asked for by name
    return src


def parse_junit(path: Path) -> dict[str, str]:
    """test id -> "passed" / "failed" / "error" / "skipped" from pytest's JUnit XML."""
    outcome: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                state = "failed" if child.tag == "failure" else "error"
                break
            if child.tag == "skipped":
                state = "skipped"
        outcome[name] = state
    return outcome


def summary(outcome: dict[str, str]) -> str:
    counts = {k: 0 for k in ("passed", "flaky", "failed", "error", "skipped")}
    for state in outcome.values():
        counts[state] += 1
    flaky = f" ({counts['flaky']} more passed when run again)" if counts["flaky"] else ""
    return (f"{counts['passed']} passed{flaky}, {counts['failed']} failed, "
            f"{counts['skipped']} skipped, {counts['error']} errors of {len(outcome)}")


def node_id(src: Path, name: str) -> str:
    """pytest's node id for a JUnit "module.path[.Class]::test" name."""
    classname, _, test = name.partition("::")
    parts = classname.split(".")
    for i in range(len(parts), 0, -1):
        path = "/".join(parts[:i]) + ".py"
        if (src / path).exists():
            return "::".join([path, *parts[i:], test])
    return name


def compare(a: Path, b: Path) -> int:
    ra = json.loads(a.read_text())["outcome"]
    rb = json.loads(b.read_text())["outcome"]
    print(f"{a.name}: {summary(ra)}")
    print(f"{b.name}: {summary(rb)}")
    for name in sorted(set(ra) | set(rb)):
        sa, sb = ra.get(name, "-"), rb.get(name, "-")
        if sa != sb:
            print(f"  {sa:8} {sb:8} {name}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--aiopquic", default=None,
                    help='a released aiopquic instead of this tree, e.g. "==0.6.1"')
    ap.add_argument("--venv", default=None, help="venv to use (default .venv-aiomoqt)")
    ap.add_argument("--label", default=None, help="results file label (default: ours / "
                    "the version asked for)")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-test limit, seconds")
    ap.add_argument("--compare", nargs=2, metavar="RESULTS", help="diff two results files")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()
    if args.compare:
        return compare(Path(args.compare[0]), Path(args.compare[1]))
    python = find_python()
    if python is None:
        print("aiomoqt-suite: skipped: no Python >= 3.12 (aiomoqt needs one; set "
              "AIOMOQT_PYTHON to use a specific interpreter)")
        return 0
    venv = Path(args.venv) if args.venv else ROOT / ".venv-aiomoqt"
    label = args.label or ("ours" if args.aiopquic is None else
                           "aiopquic" + args.aiopquic.lstrip("=<>~!"))
    vpy = make_venv(python, venv.resolve(), args.aiopquic)
    src = fetch_sdist(vpy)
    certs = src / "certs"
    junit = WORK / f"junit-{label}.xml"
    base = [str(vpy), "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--timeout={args.timeout}", "-o", "junit_family=xunit1"]
    cmd = [*base, f"--junitxml={junit}", *args.pytest_args]
    log(f"running aiomoqt {AIOMOQT}'s tests ({' '.join(cmd[3:])}) in {src}")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["AIOMOQT_TEST_CERTS_DIR"] = str(certs)
    rc = run_in_group(cmd, cwd=src, env=env)
    if not junit.exists():
        log(f"pytest wrote no results (exit {rc})")
        return 1
    outcome = parse_junit(junit)
    again = sorted(n for n, st in outcome.items() if st in ("failed", "error"))
    if again and len(again) <= 50:
        log(f"running the {len(again)} failed test(s) once more, one by one")
        for name in again:
            rerun = WORK / f"junit-{label}-rerun.xml"
            rerun.unlink(missing_ok=True)
            run_in_group([*base, f"--junitxml={rerun}", node_id(src, name)], cwd=src,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if rerun.exists() and parse_junit(rerun).get(name) == "passed":
                outcome[name] = "flaky"
                log(f"flaky (passed when run again): {name}")
    out = WORK / f"results-{label}.json"
    out.write_text(json.dumps({"aiomoqt": AIOMOQT, "label": label, "pytest_exit": rc,
                               "outcome": outcome}, indent=1, sort_keys=True))
    failed = sorted(n for n, st in outcome.items() if st in ("failed", "error"))
    unexpected = [n for n in failed if n not in KNOWN_FAILURES]
    for name in failed:
        why = KNOWN_FAILURES.get(name)
        log(f"FAILED {name}" + (f" (known: {why})" if why else ""))
    log(f"{label}: {summary(outcome)} (results in {out.relative_to(ROOT)})")
    if rc not in (0, 1, 5):
        log(f"pytest exited {rc}")
        return 1
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
