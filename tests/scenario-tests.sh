#!/bin/sh
# scenario-tests.sh BUILD_DIR [--update] — checks the scenario library.
#
# For every scenarios/**/*.rpcs, in sorted order:
#   1. `rpcsim run FILE` passes (exit 0) at the file's default seed;
#   2. the run's fingerprint equals the one in FILE's golden file
#      (scenarios/AREA/NAME.golden, the single line "seed=N fp=<16 hex>").
# Then, per file, `rpcsim check-determinism FILE --seeds 0..4`, and one
# sweep of the whole library over seeds 0..49 with -j 2.
#
# Output is TAP-like: "ok N - ..." / "not ok N - ...", diagnostics as
# "# ..." lines, the plan "1..N", and last the plain line
# "N passed, N failed" (what tests/run-suite.sh reads).  Exit status 0 when
# nothing failed, 1 otherwise.
#
# --update rewrites the golden files from the current build instead of
# comparing them (a passing run is required).  A golden change is reviewed
# like a code change: see scenarios/README.md.
#
# POSIX sh.  Runs from the repository root whatever the current directory;
# BUILD_DIR may be relative to the current directory.
set -u

usage() {
    echo "usage: $0 BUILD_DIR [--update]" >&2
    exit 2
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    usage
fi
O=$1
UPDATE=0
if [ $# -eq 2 ]; then
    [ "$2" = "--update" ] || usage
    UPDATE=1
fi
case $O in
    /*) ;;
    *) O=$(pwd)/$O ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd) || exit 2
cd "$ROOT" || exit 2
RPCSIM=$O/rpcsim
SWEEP_SEEDS=0..49
DET_SEEDS=0..4

n=0
pass=0
fail=0

ok() {
    n=$((n + 1))
    pass=$((pass + 1))
    echo "ok $n - $1"
}

not_ok() {
    n=$((n + 1))
    fail=$((fail + 1))
    echo "not ok $n - $1"
}

# diag TEXT: every line of TEXT as a "# " diagnostic.
diag() {
    printf '%s\n' "$1" | sed 's/^/#   /'
}

finish() {
    echo "1..$n"
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

if [ ! -x "$RPCSIM" ]; then
    not_ok "rpcsim binary at $RPCSIM (build it with: make $O/rpcsim)"
    finish
fi

# The library, one path per line, sorted bytewise so the order (and the
# test numbers) never depend on the locale or the file system.
files=$(find scenarios -type f -name '*.rpcs' | LC_ALL=C sort)
if [ -z "$files" ]; then
    not_ok "scenario files under scenarios/"
    finish
fi
nl='
'
old_ifs=$IFS
IFS=$nl
# shellcheck disable=SC2086 # split on newlines on purpose
set -- $files
IFS=$old_ifs

for f in "$@"; do
    golden=${f%.rpcs}.golden
    out=$("$RPCSIM" run "$f" 2>&1)
    rc=$?
    # "FILE seed=N PASS time=... fp=<hex>": keep "seed=N fp=<hex>".
    got=$(printf '%s\n' "$out" |
          sed -n 's/^.* seed=\([0-9][0-9]*\) .* fp=\([0-9a-f]\{16\}\)$/seed=\1 fp=\2/p' |
          head -n 1)
    seed=$(printf '%s\n' "$got" | sed -n 's/^seed=\([0-9]*\) .*/\1/p')

    if [ $rc -eq 0 ]; then
        ok "run $f"
    else
        not_ok "run $f (exit $rc)"
        diag "$out"
    fi

    if [ -z "$got" ]; then
        not_ok "golden $f (no fingerprint in the run's output)"
        continue
    fi
    if [ $UPDATE -eq 1 ]; then
        old=$(cat "$golden" 2>/dev/null)
        if [ $rc -ne 0 ]; then
            not_ok "golden $f not updated: the run fails"
        elif [ "$old" = "$got" ]; then
            ok "golden $f (unchanged)"
        elif printf '%s\n' "$got" >"$golden"; then
            ok "golden $f (updated${old:+ from $old} to $got)"
        else
            not_ok "golden $f: cannot write $golden"
        fi
        continue
    fi
    if [ ! -f "$golden" ]; then
        not_ok "golden $f (missing $golden)"
        diag "actual: $got
create it with: sh tests/scenario-tests.sh BUILD_DIR --update"
        continue
    fi
    want=$(cat "$golden")
    if [ "$want" = "$got" ]; then
        ok "golden $f"
    else
        not_ok "golden $f (fingerprint changed)"
        diag "--- $golden
+++ $RPCSIM run $f
-$want
+$got
replay: $RPCSIM replay $f --seed ${seed:-0}
if the change is intended (a reviewed change): sh tests/scenario-tests.sh BUILD_DIR --update"
    fi
done

for f in "$@"; do
    out=$("$RPCSIM" check-determinism "$f" --seeds "$DET_SEEDS" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        ok "deterministic $f (seeds $DET_SEEDS)"
    else
        not_ok "deterministic $f (seeds $DET_SEEDS, exit $rc)"
        diag "$out"
    fi
done

out=$("$RPCSIM" sweep "$@" --seeds "$SWEEP_SEEDS" -j 2 --quiet 2>&1)
rc=$?
if [ $rc -eq 0 ]; then
    ok "sweep of $# scenario files over seeds $SWEEP_SEEDS"
else
    not_ok "sweep of $# scenario files over seeds $SWEEP_SEEDS (exit $rc)"
    diag "$out"
fi

finish
