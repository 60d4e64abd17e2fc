"""Build hook: setuptools reads ``cffi_modules`` only from setup.py (metadata: pyproject.toml).

On CPython the extensions are built against the stable ABI (cffi defines ``Py_LIMITED_API``
and names it ``_aiopquic.abi3.so``; ``aiopquic._ccodecs`` does the same), so one
``cp39-abi3`` wheel serves CPython 3.9 and later; PyPy ignores the option and gets its own
``pp*`` wheel, without ``_ccodecs``: there ``aiopquic.buffer`` runs its pure-Python Buffer,
which PyPy's JIT makes faster than a C extension behind its C-API emulation.  (``_ccodecs``
also builds the application events of each batch popped from the network thread:
``csrc/pycodecs/events.c``.)
"""

import os
import platform

from setuptools import Extension, setup

options = {}
ext_modules = []
if platform.python_implementation() == "CPython":
    options["bdist_wheel"] = {"py_limited_api": "cp39"}
    args = ["-std=c11", "-O2", "-Wall", "-Wextra", "-fvisibility=hidden"]
    if os.environ.get("AIOPQUIC_WERROR", "0") not in ("", "0"):
        args.append("-Werror")
    ext_modules.append(Extension(
        "aiopquic._ccodecs", ["csrc/pycodecs/codecs.c", "csrc/pycodecs/events.c"],
        define_macros=[("Py_LIMITED_API", "0x03090000")], py_limited_api=True,
        extra_compile_args=args))

setup(cffi_modules=["build_ffi.py:ffibuilder"], ext_modules=ext_modules, options=options)
