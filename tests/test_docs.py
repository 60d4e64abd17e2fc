"""Every Python code sample in docs/ runs.

A fenced block whose info string is ``python`` is a sample: it is written to a file and run
with this interpreter in a fresh temporary directory (a subprocess, with a timeout), and it
must exit with status 0.  When the next fenced block (only blank lines in between) has the
info string ``output``, the sample's standard output must equal it.

Samples therefore have to be complete programs: they use 127.0.0.1 and port 0 (or the port
the server reports) and make their certificates at run time.  Signatures and other
non-runnable text go in ``text`` blocks; ``py`` / ``python3`` / ``pycon`` blocks are refused so
that nothing that looks like a sample escapes the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.util import find_spec

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
TIMEOUT = 180  # seconds per sample (loaded machines, PyPy start-up)

_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([^\s`]*)\s*$")


@dataclass
class Sample:
    path: str  # relative to docs/
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    output: str | None = None

    @property
    def ident(self) -> str:
        return f"{self.path}:{self.line}"


def _blocks(path: str) -> list[Sample]:
    rel = os.path.relpath(path, DOCS)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks: list[tuple[int, str, str, int]] = []  # (line, lang, code, end line)
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3)
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line)
            i += 1
        blocks.append((start + 1, lang, "\n".join(body) + "\n", i + 1))
        i += 1
    samples: list[Sample] = []
    for n, (line, lang, code, end) in enumerate(blocks):
        sample = Sample(rel, line, lang, code)
        if n + 1 < len(blocks) and blocks[n + 1][1] == "output":
            between = lines[end:blocks[n + 1][0] - 1]
            if all(not x.strip() for x in between):
                sample.output = blocks[n + 1][2]
        samples.append(sample)
    return samples


def _doc_files() -> list[str]:
    found = [os.path.join(ROOT, "README.md")]
    for dirpath, _dirs, files in os.walk(DOCS):
        for name in files:
            if name.endswith(".md"):
                found.append(os.path.join(dirpath, name))
    return sorted(found)


ALL_BLOCKS = [block for path in _doc_files() for block in _blocks(path)]
SAMPLES = [block for block in ALL_BLOCKS if block.lang == "python"]


def test_there_are_samples():
    assert len(SAMPLES) >= 10, [s.ident for s in SAMPLES]


def test_no_ambiguous_python_blocks():
    ambiguous = [b.ident for b in ALL_BLOCKS if b.lang in ("py", "python3", "pycon")]
    assert not ambiguous, f"use ```python for a runnable sample or ```text otherwise: {ambiguous}"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.ident)
def test_sample_runs(sample, tmp_path):
    if "trio" in sample.code and find_spec("trio") is None:
        pytest.skip("trio is not installed")
    if "trustme" in sample.code and find_spec("trustme") is None:
        pytest.skip("trustme is not installed")
    script = tmp_path / "sample.py"
    script.write_text(sample.code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        result = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=env,
                                capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{sample.ident}: still running after {TIMEOUT} s\n"
                    f"stdout:\n{(exc.stdout or b'').decode(errors='replace')[-3000:]}\n"
                    f"stderr:\n{(exc.stderr or b'').decode(errors='replace')[-3000:]}")
    stdout = result.stdout.decode(errors="replace")
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0, (
        f"{sample.ident} exited with {result.returncode}\nstdout:\n{stdout[-3000:]}\n"
        f"stderr:\n{stderr[-5000:]}")
    if sample.output is not None:
        got = [line.rstrip() for line in stdout.strip("\n").splitlines()]
        want = [line.rstrip() for line in sample.output.strip("\n").splitlines()]
        assert got == want, f"{sample.ident}: output differs\nstderr:\n{stderr[-3000:]}"
