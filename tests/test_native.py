"""The cffi extension builds, imports, and reports the native library versions it loaded."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import aiopquic
from aiopquic._native import ffi, lib, native_versions


def _versions() -> dict:
    return native_versions() if callable(native_versions) else native_versions


def _as_tuple(version: str) -> tuple:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def test_native_module_imports():
    import aiopquic._native._aiopquic as compiled

    assert compiled.ffi is ffi
    assert compiled.lib is lib
    # Out-of-line API mode: a compiled extension module, not an ABI-mode dlopen.
    assert compiled.__file__.endswith((".so", ".pyd")), compiled.__file__
    assert ffi.sizeof("char") == 1


def test_native_versions_ngtcp2_and_gnutls():
    versions = _versions()
    assert isinstance(versions["ngtcp2"], str)
    assert isinstance(versions["gnutls"], str)
    assert versions["ngtcp2"].startswith("1."), versions
    assert _as_tuple(versions["ngtcp2"]) >= (1, 11), versions
    assert _as_tuple(versions["gnutls"]) >= (3, 7), versions


@pytest.mark.skipif(shutil.which("pkg-config") is None, reason="pkg-config not installed")
def test_loaded_ngtcp2_matches_installed():
    installed = subprocess.run(
        ["pkg-config", "--modversion", "libngtcp2"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert _versions()["ngtcp2"] == installed


def test_versions_module_prints_all_three():
    result = subprocess.run(
        [sys.executable, "-m", "aiopquic.versions"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = {}
    for line in result.stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            lines[parts[0]] = parts[1].strip()
    versions = _versions()
    assert lines.get("aiopquic") == aiopquic.__version__, result.stdout
    assert lines.get("ngtcp2") == versions["ngtcp2"], result.stdout
    assert lines.get("gnutls") == versions["gnutls"], result.stdout
