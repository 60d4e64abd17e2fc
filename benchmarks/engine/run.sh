#!/bin/sh
# Build and run the engine-only benchmark: benchmarks/engine/run.sh [MiB] [max packet sizes...]
# Example: benchmarks/engine/run.sh 1024 1452 16384
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out="${TMPDIR:-/tmp}/aiopquic-engine-bench"
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I"$top/csrc" "$here/engine_bench.c" "$top"/csrc/*.c \
    $(pkg-config --cflags --libs libngtcp2 libngtcp2_crypto_gnutls gnutls) -lpthread -o "$out"
if [ $# -eq 0 ]; then set -- 1024 1452 16384; fi
exec "$out" "$@"
