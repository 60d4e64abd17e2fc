#!/bin/sh
# Idempotent set-up of the benchmark peers (run from anywhere; fast when done).
#
#   benchmarks/setup_peers.sh [--no-apt]
#
# - qh3, aioquic, matplotlib in the project venv (.venv, or $VENV): the "bench" extras.
# - the picoquic-based aiopquic 0.6.1 ("seed") in its own Python 3.12 venv,
#   .bench-venvs/seed ($SEED_VENV): it is a cp312 wheel with the same import name as ours.
# - iperf3 (Debian package) for the raw UDP ceiling, when running as root with apt-get.
# Every step that cannot be done prints why and goes on: run.py skips a peer that is missing.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
SEED_VENV=${SEED_VENV:-$ROOT/.bench-venvs/seed}
SEED_VERSION=${SEED_VERSION:-0.6.1}
NO_APT=0
[ "${1:-}" = "--no-apt" ] && NO_APT=1
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# 1. bench extras in the project venv
if [ -x "$VENV/bin/python" ]; then
  if ! "$VENV/bin/python" -c 'import qh3, aioquic, matplotlib, trustme' >/dev/null 2>&1; then
    echo "setup_peers: installing qh3 aioquic matplotlib trustme into $VENV"
    "$VENV/bin/python" -m pip install -q qh3 aioquic matplotlib trustme \
      || echo "setup_peers: pip install into $VENV failed" >&2
  fi
else
  echo "setup_peers: no project venv at $VENV (run 'make setup' first)" >&2
fi

# 2. the seed (aiopquic $SEED_VERSION, cp312) in its own venv
find_py312() {
  for c in "${SEED_PYTHON:-}" python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 \
           "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && \
       "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
      command -v "$c"; return 0
    fi
  done
  return 1
}
if "$SEED_VENV/bin/python" -c "import aiopquic, trustme, importlib.metadata as m; \
assert m.version('aiopquic') == '$SEED_VERSION'" >/dev/null 2>&1; then
  :
else
  PY312=$(find_py312) || PY312=""
  if [ -z "$PY312" ]; then
    echo "setup_peers: no Python 3.12 found (set SEED_PYTHON): the seed peer is skipped" >&2
  else
    echo "setup_peers: creating $SEED_VENV with $PY312 (aiopquic==$SEED_VERSION)"
    rm -rf "$SEED_VENV"
    mkdir -p "$(dirname "$SEED_VENV")"
    if "$PY312" -m venv "$SEED_VENV" && \
       "$SEED_VENV/bin/python" -m pip install -q "aiopquic==$SEED_VERSION" trustme; then
      :
    else
      echo "setup_peers: could not install aiopquic==$SEED_VERSION: the seed peer is skipped" >&2
    fi
  fi
fi

# 3. iperf3 (raw UDP ceiling)
if ! command -v iperf3 >/dev/null 2>&1; then
  if [ "$NO_APT" = 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup_peers: installing iperf3"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iperf3 \
      >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iperf3 \
      >/dev/null 2>&1; } || echo "setup_peers: apt-get install iperf3 failed" >&2
  else
    echo "setup_peers: iperf3 missing (apt-get install iperf3): the iperf3 peer is skipped" >&2
  fi
fi
exit 0
