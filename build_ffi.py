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


# Debian package that provides each pkg-config module (named in the error when one is missing).
DEV_PACKAGES = {
    "libngtcp2": "libngtcp2-dev",
    "libngtcp2_crypto_gnutls": "libngtcp2-crypto-gnutls-dev",
    "gnutls": "libgnutls28-dev",
}
NGTCP2_MIN = "1.11.0"


def _check_pkgconfig() -> None:
    """Fail early, naming the missing packages, when pkg-config cannot find a dependency.

    Without this, cffi's pkg-config lookup fails with a bare "pkg-config not found" or a
    message about one module, or (older cffi) the extension links without the library and
    fails only at import time.
    """
    import shutil
    import subprocess

    if shutil.which("pkg-config") is None:
        raise SystemExit(
            "aiopquic: building from source needs pkg-config and the ngtcp2/GnuTLS development "
            "files; on Debian/Ubuntu: apt-get install pkg-config " + " ".join(DEV_PACKAGES.values())
            + " (Debian 12: ngtcp2 from bookworm-backports); or install a prebuilt wheel"
        )
    missing = []
    for module, package in DEV_PACKAGES.items():
        args = ["pkg-config", "--exists", module]
        if module.startswith("libngtcp2"):
            args = ["pkg-config", f"--atleast-version={NGTCP2_MIN}", module]
        if subprocess.run(args, check=False).returncode != 0:
            found = subprocess.run(["pkg-config", "--modversion", module], check=False,
                                   capture_output=True, text=True).stdout.strip()
            why = f"found {found}, need >= {NGTCP2_MIN}" if found else "not found"
            missing.append(f"  pkg-config module {module!r} ({why}): install {package}")
    if missing:
        raise SystemExit(
            "aiopquic: cannot build the native extension, missing development packages:\n"
            + "\n".join(missing)
            + "\n(Debian 12: ngtcp2 >= 1.11 is in bookworm-backports; Debian 13: main. "
            "Set PKG_CONFIG_PATH if they are installed elsewhere.)"
        )


def _compile_args() -> list[str]:
    """Compiler flags.  -Werror only when AIOPQUIC_WERROR=1 (the Makefile's dev/CI builds):
    a user's build from the sdist must not fail on warnings a newer ngtcp2 or compiler adds
    (deprecations, new diagnostics)."""
    args = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
            "-fvisibility=hidden"]
    if os.environ.get("AIOPQUIC_WERROR", "0") not in ("", "0"):
        args.append("-Werror")
    return args


_check_pkgconfig()
ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source_pkgconfig(
    "aiopquic._native._aiopquic",
    PKGS,
    '#include "aiopquic.h"\nvoid free(void *);',
    sources=sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(CSRC, "*.c"))),
    include_dirs=[os.path.relpath(CSRC, HERE)],
    extra_compile_args=_compile_args(),
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
