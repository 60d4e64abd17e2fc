"""cffi build script (API mode, out of line) for aiopquic's native shim.

The cdef is csrc/aiopquic.h with its preprocessor lines removed: the header is plain C so the
same file serves the compiler and cffi.  Every csrc/*.c file is compiled into the extension
``aiopquic._native._aiopquic`` and linked against ngtcp2, ngtcp2_crypto_gnutls and GnuTLS found
through pkg-config (``set_source_pkgconfig``: ``set_source(..., pkgconfig=...)`` would be
ignored silently and fail only at import time).
"""

from __future__ import annotations

import glob
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
PKGS = ["libngtcp2", "libngtcp2_crypto_gnutls", "gnutls"]


def _cdef() -> str:
    with open(os.path.join(CSRC, "aiopquic.h"), encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source_pkgconfig(
    "aiopquic._native._aiopquic",
    PKGS,
    '#include "aiopquic.h"\nvoid free(void *);',
    sources=sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(CSRC, "*.c"))),
    include_dirs=[os.path.relpath(CSRC, HERE)],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror",
                        "-Wno-unused-parameter", "-fvisibility=hidden"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
