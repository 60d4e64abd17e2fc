#!/bin/sh
# perf --mib 256, 10 runs at each link MTU (1280, 1500, 9000, 65536) over IPv4 and IPv6, each
# in a fresh network namespace (root). Prints passes out of 10, the packet size PMTUD settled
# on, and each run's throughput. Usage: sh benchmarks/mtu_soak.sh [RUNS]
cd "$(dirname "$0")/.."
RUNS=${1:-10}
for host in 127.0.0.1 ::1; do for mtu in 1280 1500 9000 65536; do
  ok=0; sizes=""; tps=""
  i=0; while [ $i -lt "$RUNS" ]; do i=$((i+1))
    out=$(timeout 120 unshare -n sh -c "ip link set lo mtu $mtu && ip link set lo up && exec .venv/bin/python -m aiopquic perf --mib 256 --host $host --no-progress" 2>&1)
    if [ $? = 0 ] && echo "$out" | grep -q "every byte verified"; then ok=$((ok+1)); fi
    sizes="$sizes $(echo "$out" | sed -n 's/.*path: \([0-9]*\)-byte.*/\1/p')"
    tps="$tps $(echo "$out" | sed -n 's/.*s, \([0-9]*\) Mbps.*/\1/p')"
  done
  echo "host=$host mtu=$mtu ok=$ok/$RUNS sizes:$sizes mbps:$tps"
done; done
