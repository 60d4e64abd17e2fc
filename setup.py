"""Build hook: setuptools reads ``cffi_modules`` only from setup.py (metadata: pyproject.toml).

On CPython the extension is built against the stable ABI (cffi defines ``Py_LIMITED_API``
and names it ``_aiopquic.abi3.so``), so one ``cp39-abi3`` wheel serves CPython 3.9 and
later; PyPy ignores the option and gets its own ``pp*`` wheel.
"""

import platform

from setuptools import setup

options = {}
if platform.python_implementation() == "CPython":
    options["bdist_wheel"] = {"py_limited_api": "cp39"}

setup(cffi_modules=["build_ffi.py:ffibuilder"], options=options)
