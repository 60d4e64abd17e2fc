"""glibc malloc tuning (aiopquic._native.tune_malloc, docs/guides/tuning.md "Memory
allocator"): a stream's send ring and the receive path's blocks come from the heap, not from
a fresh mapping each time; the tuning steps aside when the environment asks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

_SCRIPT = textwrap.dedent("""
    import ctypes, sys
    from aiopquic._native import lib, tune_malloc

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    try:
        mallinfo2 = libc.mallinfo2
    except AttributeError:
        print("no-mallinfo2"); sys.exit(0)
    mallinfo2.restype = Mallinfo2
    print("tuned" if tune_malloc() else "untouched")
    before = mallinfo2().hblks
    rings = [lib.aq_txbuf_new(4 << 20) for _ in range(3)]   # the default stream ring size
    mapped = mallinfo2().hblks - before
    for r in rings:
        lib.aq_txbuf_release(r)
    print("mapped", mapped)
""")


def _run(env_extra: dict[str, str]) -> list[str]:
    env = dict(os.environ)
    for k in ("AIOPQUIC_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
              "GLIBC_TUNABLES"):
        env.pop(k, None)
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    if out == ["no-mallinfo2"]:
        pytest.skip("the C library has no mallinfo2 (not glibc >= 2.33)")
    return out


def test_stream_rings_come_from_the_heap() -> None:
    """Three default-size (4 MiB) send rings: none is a separate mapping once tuned (each
    mapping cost ~11 us per stream to map and unmap)."""
    out = _run({})
    assert out[0] == "tuned"
    assert out[1:] == ["mapped", "0"], out


def test_tuning_steps_aside_when_asked() -> None:
    """AIOPQUIC_MALLOC_TUNING=0 keeps glibc's defaults: a fresh process maps a 4 MiB ring
    (glibc's initial threshold is 128 KiB), which is what the tuned run must not do."""
    out = _run({"AIOPQUIC_MALLOC_TUNING": "0"})
    assert out[0] == "untouched"
    assert out[1] == "mapped" and int(out[2]) >= 3, out
