#!/bin/sh
# run-suite.sh BUILD_DIR MODE — runs part or all of the test suite.
#
#   unit       every build/tests/test-* (GTest, TAP); each "ok"/"not ok" counts
#   valgrind   every unit test binary under memcheck; one count per binary:
#              fails on any error or any definitely/indirectly lost byte
#   scenarios  tests/scenario-tests.sh (every scenario file, golden digests)
#   cli        tests/test-cli.sh (every rpcsim subcommand and exit code)
#   lint       .ci/lint.sh (determinism and layering rules, formatting)
#   fast       unit + scenarios + cli (`make test`)
#   all        all of the above (`make check`)
#
# Ends with one line "N passed, N failed" (the line CI reads).  Logs of
# failures go to reports/test-logs/.
set -u
O=${1:-build}
MODE=${2:-all}
LOGS=reports/test-logs
mkdir -p "$LOGS"
pass=0
fail=0
failed_names=""

note_fail() {
    fail=$((fail + 1))
    failed_names="$failed_names $1"
}

run_unit() {
    for t in "$O"/tests/test-*; do
        [ -x "$t" ] || continue
        case "$t" in *.o|*.d) continue ;; esac
        name=$(basename "$t")
        log="$LOGS/$name.log"
        "$t" --tap >"$log" 2>&1
        rc=$?
        p=$(grep -c '^ok ' "$log")
        f=$(grep -c '^not ok ' "$log")
        pass=$((pass + p))
        fail=$((fail + f))
        if [ "$f" -gt 0 ]; then
            failed_names="$failed_names $name"
            grep '^not ok ' "$log" | sed "s/^/  $name: /"
        fi
        if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
            note_fail "$name(exit=$rc)"
            echo "  $name: exited with status $rc (see $log)"
            tail -n 5 "$log" | sed 's/^/    /'
        fi
        echo "unit: $name: $p passed, $f failed"
    done
}

run_valgrind() {
    if ! command -v valgrind >/dev/null 2>&1; then
        echo "valgrind: not installed"; note_fail valgrind; return
    fi
    for t in "$O"/tests/test-*; do
        [ -x "$t" ] || continue
        case "$t" in *.o|*.d) continue ;; esac
        name=$(basename "$t")
        log="$LOGS/$name.valgrind.log"
        G_SLICE=always-malloc G_DEBUG=gc-friendly RPCSIM_UNDER_VALGRIND=1 \
          valgrind --quiet --error-exitcode=99 --leak-check=full \
            --show-leak-kinds=definite,indirect \
            --errors-for-leak-kinds=definite,indirect \
            --track-origins=no "$t" --tap >"$log" 2>&1
        rc=$?
        if [ $rc -eq 0 ] && ! grep -q '^not ok ' "$log"; then
            pass=$((pass + 1)); echo "valgrind: $name: clean"
        else
            note_fail "valgrind:$name"
            echo "valgrind: $name: FAILED (exit $rc, see $log)"
            grep -E '==[0-9]+==' "$log" | head -n 20 | sed 's/^/    /'
        fi
    done
}

run_scenarios() {
    [ -f tests/scenario-tests.sh ] || return 0
    out=$(sh tests/scenario-tests.sh "$O" 2>&1)
    echo "$out" | grep -v '^[0-9]* passed, [0-9]* failed' 
    line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    [ -n "$p" ] || { note_fail scenarios; return; }
    pass=$((pass + p)); fail=$((fail + f))
    [ "$f" -eq 0 ] || failed_names="$failed_names scenarios"
}

run_cli() {
    [ -f tests/test-cli.sh ] || return 0
    out=$(sh tests/test-cli.sh "$O" 2>&1)
    printf '%s\n' "$out" >"$LOGS/test-cli.log"
    echo "$out" | grep -e '^not ok ' -e '^# ' | sed 's/^/  cli: /'
    line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    [ -n "$p" ] || { note_fail cli; return; }
    pass=$((pass + p)); fail=$((fail + f))
    [ "$f" -eq 0 ] || failed_names="$failed_names cli"
    echo "cli: $p passed, $f failed"
}

run_lint() {
    if sh .ci/lint.sh >"$LOGS/lint.log" 2>&1; then
        pass=$((pass + 1)); echo "lint: clean"
    else
        note_fail lint; echo "lint: FAILED"; tail -n 20 "$LOGS/lint.log" | sed 's/^/    /'
    fi
}

case "$MODE" in
    unit) run_unit ;;
    valgrind) run_valgrind ;;
    scenarios) run_scenarios ;;
    lint) run_lint ;;
    cli) run_cli ;;
    fast) run_unit; run_scenarios; run_cli ;;
    all) run_unit; run_scenarios; run_cli; run_lint; run_valgrind ;;
    *) echo "usage: $0 BUILD_DIR unit|valgrind|scenarios|cli|lint|fast|all" >&2; exit 2 ;;
esac

[ -z "$failed_names" ] || echo "failed:$failed_names"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
