# aiopquic developer commands.  Works on a fresh Debian 12/13 machine as root:
#
#   make perf    set up, then run the loopback transfer demo (python -m aiopquic perf)
#   make test    set up, then ruff + mypy, the test suite on CPython, and again on PyPy
#   make setup   native packages + build tools + .venv + editable install (fast when done)
#   make pytest  the test suite on one interpreter only (PYTHON=..., VENV=...)
#   make lint    ruff;  make typecheck  mypy --strict
#   make bench   side-by-side benchmarks (benchmarks/run.py; BENCH_ARGS="--quick")
#
# Variables: PYTHON (interpreter that creates the venv; default python3, e.g. PYTHON=pypy3),
#            VENV (default .venv),
#            PERF_ARGS (e.g. PERF_ARGS="--mib 256"), PYTEST_ARGS (e.g. PYTEST_ARGS="-k datagram").

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.aiopquic-installed
PERF_ARGS ?=
PYTEST_ARGS ?=

# Anything that changes the build reinstalls (and so recompiles the native extension).
BUILD_INPUTS := pyproject.toml setup.py $(wildcard build_ffi.py csrc/*.c csrc/*.h)

# Debian packages that give $(PYTHON) a working venv, headers and a C compiler.
# PyPy: cryptography (needed by the test extras) has PyPy wheels but no Rust toolchain here;
# PyPy's cffi is built in (never upgrade it); ruff and mypy run on CPython only.
ifneq (,$(findstring pypy,$(PYTHON)))
PY_DEB_PKGS := pypy3 pypy3-dev pypy3-venv gcc libc6-dev
PIP_FLAGS := --only-binary cryptography
EXTRAS := test
BOOTSTRAP := pip "setuptools>=61" wheel
else
PY_DEB_PKGS := python3 python3-venv python3-dev gcc libc6-dev
PIP_FLAGS :=
EXTRAS := test,dev
BOOTSTRAP := pip "setuptools>=61" wheel "cffi>=1.15"
endif
BENCH_ARGS ?=

export DEBIAN_FRONTEND := noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.PHONY: help setup native-deps build-tools perf test pytest lint typecheck bench clean

help:
	@echo "make perf   - set up, then run the loopback transfer demo (python -m aiopquic perf)"
	@echo "make test   - set up, then ruff, mypy and the test suite on CPython and on PyPy"
	@echo "make pytest - the test suite on one interpreter (PYTHON=pypy3 VENV=.venv-pypy)"
	@echo "make bench  - side-by-side benchmarks (BENCH_ARGS=--quick for a short run)"
	@echo "make setup  - native deps, build tools, .venv and editable install (idempotent)"
	@echo "make lint   - ruff check"
	@echo "make clean  - remove build products and the install stamp (keeps .venv)"

setup: $(STAMP)

# ngtcp2 + GnuTLS development packages and the ngtcp2 interop peers (returns at once when present).
native-deps:
	@sh vendor/install-native-deps.sh --peers

# An interpreter that can create a venv and build C extensions, and a compiler.
build-tools: native-deps
	@ok=1; \
	command -v "$(PYTHON)" >/dev/null 2>&1 || ok=0; \
	if [ $$ok = 1 ]; then \
	  "$(PYTHON)" -m ensurepip --version >/dev/null 2>&1 || ok=0; \
	  "$(PYTHON)" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' >/dev/null 2>&1 || ok=0; \
	fi; \
	command -v gcc >/dev/null 2>&1 || ok=0; \
	if [ $$ok = 0 ]; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "make setup: need $(PYTHON) with venv support and headers, and gcc;" \
	         "on Debian run as root: apt-get install $(PY_DEB_PKGS)" >&2; \
	    exit 1; \
	  fi; \
	  echo "make setup: installing $(PY_DEB_PKGS)"; \
	  apt-get update -q; \
	  apt-get install -y -q --no-install-recommends $(PY_DEB_PKGS); \
	fi

$(STAMP): $(BUILD_INPUTS) | native-deps build-tools
	@if ! $(VPY) -c '' >/dev/null 2>&1; then \
	  echo "make setup: creating $(VENV) with $$(command -v $(PYTHON))"; \
	  rm -rf $(VENV); \
	  "$(PYTHON)" -m venv $(VENV); \
	fi
	@echo "make setup: installing aiopquic (editable, with test extras) into $(VENV)"
	@$(VPY) -m pip install -q -U $(BOOTSTRAP)
	@$(VPY) -m pip install -q $(PIP_FLAGS) --no-build-isolation -e '.[$(EXTRAS)]'
	@$(VPY) -c 'import aiopquic._native' || { \
	  echo "make setup: the native extension was built but does not import" >&2; exit 1; }
	@touch $@

perf: setup
	$(VPY) -m aiopquic perf $(PERF_ARGS)

# What CI runs (.ci/run): static checks, the suite on CPython, then the suite on PyPy.
test: setup
	@$(MAKE) --no-print-directory lint typecheck
	@$(MAKE) --no-print-directory pytest
	@$(MAKE) --no-print-directory pytest PYTHON=pypy3 VENV=.venv-pypy

# pytest exits 5 when it collects no tests: that is a failure here, never a silent pass.
pytest: setup
	@echo "make pytest: $$($(VPY) -c 'import sys, platform; print(platform.python_implementation(), sys.version.split()[0])')"
	@rc=0; $(VPY) -m pytest -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc = 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

lint: setup
	$(VPY) -m ruff check aiopquic tests benchmarks build_ffi.py setup.py

typecheck: setup
	$(VPY) -m mypy

bench: setup
	@sh benchmarks/setup_peers.sh
	$(VPY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info aiopquic.egg-info $(STAMP)
	find aiopquic -name '_aiopquic*.so' | xargs -r rm -f
	find . -path './.venv*' -prune -o -name __pycache__ -type d -print | xargs -r rm -rf
