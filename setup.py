"""Build hook: setuptools reads ``cffi_modules`` only from setup.py (metadata: pyproject.toml)."""

from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder"])
