"""aiomoqt 0.13.3's examples over this tree's aiopquic: relay, subscriber and publisher as three
processes over raw QUIC, WebTransport and the dual-stack relay (a subscriber over each, the
publisher over either), objects byte-verified, at the loopback's own MTU and at MTU 1500
(tests/aiomoqt_examples.py does the work; see there).

aiomoqt needs Python >= 3.12, so this runs the script with the venv tests/aiomoqt_suite.py
makes (``.venv-aiomoqt``: this tree's aiopquic plus aiomoqt).  Skips, saying why, without a
Python >= 3.12, without that venv (``make test-aiomoqt`` creates it) or aiomoqt in it, without
openssl, and (for MTU 1500) without root, unshare and ip.  When the venv's aiopquic was built
from another state of this tree it is first reinstalled from the tree (offline: no
dependencies, no build isolation), as tests/aiomoqt_suite.py would;
``AIOMOQT_EXAMPLES_VENV_AS_IS=1`` runs the venv as it is instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import aiomoqt_suite  # noqa: E402

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

SCRIPT = TESTS / "aiomoqt_examples.py"
VENV = aiomoqt_suite.ROOT / ".venv-aiomoqt"
MODES = ("quic", "wt", "dual", "dual-wt")


@pytest.fixture(scope="module")
def venv_python() -> str:
    if aiomoqt_suite.find_python() is None:
        pytest.skip("no Python >= 3.12 (aiomoqt needs one; set AIOMOQT_PYTHON)")
    vpy = VENV / "bin" / "python"
    if not vpy.exists():
        pytest.skip(f"no {VENV.name} (make test-aiomoqt creates it)")
    probe = subprocess.run([str(vpy), "-c", "import aiomoqt.examples.pub_example, "
                            "aiomoqt.tools.moq_interop_relay"],
                           capture_output=True, text=True, timeout=120, cwd=VENV)
    if probe.returncode != 0:
        pytest.skip(f"aiomoqt is not importable in {VENV.name}: "
                    f"{probe.stderr.strip().splitlines()[-1:]}")
    if not shutil.which("openssl"):
        pytest.skip("no openssl (the script makes its certificate with it)")
    stamp = VENV / ".aiomoqt-suite-stamp"
    want = f"{aiomoqt_suite.AIOMOQT}|{aiomoqt_suite.tree_hash()}"
    if (not os.environ.get("AIOMOQT_EXAMPLES_VENV_AS_IS")
            and (not stamp.exists() or stamp.read_text() != want)):
        subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--no-build-isolation", "--no-deps", "--force-reinstall",
                        str(aiomoqt_suite.ROOT)], check=True, timeout=600, cwd=VENV)
        stamp.write_text(want)
    return str(vpy)


@pytest.mark.parametrize("mtu", [None, 1500], ids=["loopback-mtu", "mtu1500"])
def test_examples(venv_python: str, mtu) -> None:
    if mtu is not None and (os.geteuid() != 0 or not shutil.which("unshare")
                            or not shutil.which("ip")):
        pytest.skip("needs root, unshare and ip (a network namespace with its own MTU)")
    cmd = [venv_python, str(SCRIPT)] + ([] if mtu is None else ["--mtu", str(mtu)])
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env,
                         cwd=SCRIPT.parent)
    text = out.stdout + out.stderr
    results = dict(re.findall(r"^aiomoqt-examples: ([\w-]+): (PASS|FAIL)", text, re.M))
    assert results == {m: "PASS" for m in MODES}, text
    assert out.returncode == 0, text
    if mtu is not None:
        assert f"loopback MTU {mtu} (netns)" in text, text
