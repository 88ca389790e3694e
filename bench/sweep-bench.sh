#!/bin/sh
# sweep-bench.sh [BUILD_DIR] [SEEDS] — how fast `rpcsim sweep` runs seeds.
#
# Sweeps a small scenario (two workers, one rpc_sync over a uniform-latency
# link, one expectation) over SEEDS seeds (default 10000) with -j 1 and
# -j 2, and prints the wall-clock seconds and runs/s of each.  The
# acceptance target is 10,000 seeds in under a minute with -j 2; like every
# bench it prints figures and asserts nothing (a slow machine is not a bug),
# but it fails if a sweep does not finish cleanly.
set -u
O=${1:-build}
SEEDS=${2:-10000}
R="$O/rpcsim"
[ -x "$R" ] || { echo "sweep-bench: $R is not built" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/rpcsim-bench.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cat >"$T/small.rpcs" <<'EOF'
describe "sweep-bench: two workers, one rpc_sync"
world {
  workers 2
}
network {
  latency uniform(100us, 900us)
}
on worker0 {
  expect rpc_sync(worker1, add, 1, 2) == 3
}
EOF

# Seconds since the epoch with nanoseconds where date(1) has %N (GNU),
# else whole seconds.
now() {
    t=$(date +%s.%N 2>/dev/null)
    case "$t" in *N*|"") date +%s ;; *) echo "$t" ;; esac
}

last=$((SEEDS - 1))
echo "== sweep-bench: $SEEDS seeds of a small scenario ($(basename "$R") sweep --seeds 0..$last)"
status=0
for j in 1 2; do
    t0=$(now)
    "$R" sweep "$T/small.rpcs" --seeds "0..$last" -j "$j" --quiet >"$T/out" 2>&1
    rc=$?
    t1=$(now)
    if [ $rc -ne 0 ]; then
        echo "sweep-bench: -j $j exited $rc" >&2
        sed 's/^/  /' "$T/out" >&2
        status=1
        continue
    fi
    awk -v j="$j" -v n="$SEEDS" -v a="$t0" -v b="$t1" 'BEGIN {
        s = b - a; if (s <= 0) s = 0.001
        printf "sweep -j %d: %d runs in %.2f s, %.0f runs/s", j, n, s, n / s
        if (j == 2)
            printf " (target: 10000 seeds in < 60 s with -j 2: %s)", \
                (10000 * s / n < 60) ? "met" : "NOT met"
        printf "\n"
    }'
done
exit $status
