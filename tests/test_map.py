"""csrc/map.c on its own: SipHash-2-4 known answers and the CID/handle map's behaviour.

The map is internal to the shim (no cffi face), so this builds tests/c/test_map.c together with
csrc/map.c into a small program with the shim's own warning flags and runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PKGS = ["libngtcp2", "libngtcp2_crypto_gnutls", "gnutls"]


def test_map_c(tmp_path: object) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    pkgconfig = shutil.which("pkg-config")
    if not cc or not pkgconfig:
        pytest.skip("needs a C compiler and pkg-config")
    cflags = subprocess.run([pkgconfig, "--cflags", *PKGS], capture_output=True, text=True,
                            check=True).stdout.split()
    exe = os.path.join(str(tmp_path), "test_map")
    build = subprocess.run(
        [cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
         *cflags, "-I", os.path.join(ROOT, "csrc"), os.path.join(HERE, "c", "test_map.c"),
         os.path.join(ROOT, "csrc", "map.c"), "-o", exe],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "map ok" in run.stdout
