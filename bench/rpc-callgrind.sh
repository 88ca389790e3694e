#!/bin/sh
# rpc-callgrind.sh BUILD_DIR — instructions per simulated rpc_sync round trip.
#
# callgrind counts instructions, not seconds, so the figure is repeatable
# whatever else the machine is doing.  Two runs (N and 2N round trips) of
# the 2-worker ping-pong are counted; the difference divided by N removes
# the fixed cost of building and tearing down the world.  RPCSIM_POOL=1 keeps
# core/pool's free lists on under valgrind (they are off for memcheck), so
# the count is that of the build as it normally runs.
set -u
O=${1:-build}
B="$O/bench/bench-rpc"
N=${N:-10000}
if ! command -v valgrind >/dev/null 2>&1; then
    echo "rpc-callgrind: valgrind not installed; skipped"
    exit 0
fi
count() {
    RPCSIM_POOL=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$B" pingpong "$1" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
a=$(count "$N")
b=$(count $((2 * N)))
echo "rpc: callgrind ping-pong: $(( (b - a) / N )) instructions per round trip (N=$N)"
