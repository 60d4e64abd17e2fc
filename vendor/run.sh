#!/bin/sh
# Entry point of the README's commands on any Debian 12/13 machine, even a minimal one:
# installs `make` if it is missing (as root), then runs `make TARGET...` from the repo root.
#   sh vendor/run.sh perf      sh vendor/run.sh test
set -eu
cd "$(dirname "$0")/.."
if ! command -v make >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "vendor/run.sh: 'make' is missing and this is not root: apt-get install make" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends make
fi
exec make "$@"
