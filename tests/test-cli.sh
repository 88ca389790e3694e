#!/bin/sh
# test-cli.sh BUILD_DIR — tests the `rpcsim` command line end to end.
#
# Every subcommand, every documented exit code, --help of each subcommand,
# and the sweep's promises: -j 1 and -j 2 print the same results, shards
# 1/2 + 2/2 cover the full set exactly once, TAP and JUnit are well formed,
# a crashed worker process is reported as an internal error (exit 3) and the
# sweep carries on.  Scenario files are written to a temporary directory.
#
# Prints TAP lines ("ok N - …" / "not ok N - …", diagnostics as "# …") and
# ends with the plain line "N passed, N failed" (tests/run-suite.sh reads it).
set -u
O=${1:-build}
case "$O" in /*) ;; *) O="$(pwd)/$O" ;; esac
R="$O/rpcsim"
T=$(mktemp -d "${TMPDIR:-/tmp}/rpcsim-cli.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
cd "$T" || exit 1

n=0
pass=0
fail=0
have_python=0
command -v python3 >/dev/null 2>&1 && have_python=1

ok() {
    n=$((n + 1)); pass=$((pass + 1)); echo "ok $n - $1"
}
not_ok() {
    n=$((n + 1)); fail=$((fail + 1)); echo "not ok $n - $1"
    if [ $# -gt 1 ] && [ -n "$2" ]; then printf '%s\n' "$2" | head -n 12 | sed 's/^/# /'; fi
}
skip() {
    n=$((n + 1)); pass=$((pass + 1)); echo "ok $n - $1 # SKIP $2"
}
# check DESC CMD…: ok when CMD succeeds.
check() {
    desc=$1; shift
    if "$@" >/dev/null 2>&1; then ok "$desc"; else not_ok "$desc"; fi
}
# run CMD…: stdout in out, stderr in err, status in $rc.
run() {
    "$@" >out 2>err
    rc=$?
}
# expect_rc WANT DESC: the last run's status.
expect_rc() {
    if [ "$rc" -eq "$1" ]; then
        ok "$2"
    else
        not_ok "$2 (exit $rc, expected $1)" "$(cat err out | head -n 12)"
    fi
}
has() { grep -q -e "$1" "$2"; }
hasE() { grep -Eq -e "$1" "$2"; }

# --- scenario files ---------------------------------------------------------
cat >pass.rpcs <<'EOF'
describe "two workers, one rpc_sync"
world {
  workers 2
}
on worker0 {
  x = rpc_sync(worker1, add, 1, 2)
  print "the sum is"
  print x
  expect x == 3
}
expect {
  no_deadlock
}
EOF
sed 's/expect x == 3/expect x == 4/' pass.rpcs >fail.rpcs
cat >seeded.rpcs <<'EOF'
world {
  workers 2
  seed 7
}
on worker0 {
  expect rpc_sync(worker1, add, 1, 2) == 3
}
EOF
# Latency uniform in [100us, 900us]: a round trip beats 1 ms on some seeds
# and not on others, so a sweep sees both verdicts.
cat >flaky.rpcs <<'EOF'
world {
  workers 2
}
network {
  latency uniform(100us, 900us)
}
on worker0 {
  x = rpc_sync(worker1, add, 1, 2)
  expect now() < 0.001
}
EOF
printf 'world {\n  workers 2\n}\non worker0 {\n  x = rpc_sync(worker1, add, 1,\n}\n' >bad.rpcs

# --- the binary, help, usage --------------------------------------------------
if [ ! -x "$R" ]; then
    not_ok "rpcsim is built at $R"
    echo "$pass passed, $((fail)) failed"
    exit 1
fi
ok "rpcsim is built"

run "$R" --help
expect_rc 0 "rpcsim --help exits 0"
check "rpcsim --help lists every subcommand" sh -c \
    'for s in run sweep replay check-determinism lint list version; do grep -q "^  $s " out || exit 1; done'
check "rpcsim --help documents exit codes 0-4" sh -c \
    'for c in 0 1 2 3 4; do grep -q "^  $c  " out || exit 1; done'

check_help() {
    sub=$1; shift
    run "$R" "$sub" --help
    if [ "$rc" -ne 0 ]; then
        not_ok "rpcsim $sub --help exits 0 (exit $rc)" "$(cat err)"
        return
    fi
    missing=""
    for o in "$@" Usage Examples "Exit status"; do
        grep -q -e "$o" out || missing="$missing $o"
    done
    if [ -z "$missing" ]; then ok "rpcsim $sub --help mentions its options"; else
        not_ok "rpcsim $sub --help mentions its options (missing:$missing)"; fi
}
check_help run --seed --trace --trace-format --quiet --log
check_help sweep --seeds --jobs --shard --tap --junit --fail-fast --quiet
check_help replay --seed --trace-format --output
check_help check-determinism --seeds
check_help lint FILE
check_help list functions messages faults counters builtins

run "$R"
expect_rc 2 "no subcommand: exit 2"
check "no subcommand: usage on stderr" has "Usage" err
run "$R" frobnicate
expect_rc 2 "unknown subcommand: exit 2"
check "unknown subcommand: named on stderr" has "frobnicate" err
run "$R" run --no-such-option pass.rpcs
expect_rc 2 "unknown option: exit 2"
run "$R" version
expect_rc 0 "version exits 0"
check "version prints rpcsim and a version" hasE '^rpcsim [0-9]+\.[0-9]+' out

# --- run -----------------------------------------------------------------------
run "$R" run pass.rpcs
expect_rc 0 "run: a passing scenario exits 0"
check "run: summary has file, seed, verdict, time, events, messages, faults, fingerprint" \
    hasE '^pass\.rpcs seed=0 PASS time=[0-9]+\.[0-9]{9}s events=[0-9]+ messages=[0-9]+ faults=[0-9]+ fp=[0-9a-f]{16}$' out
fp_run3=$("$R" run pass.rpcs --seed 3 | sed -n 's/.* fp=\([0-9a-f]*\)$/\1/p')
run "$R" run seeded.rpcs
check "run: default seed is the file's seed" has "seeded.rpcs seed=7 PASS" out
run "$R" run pass.rpcs --seed 18446744073709551615
expect_rc 0 "run --seed 2^64-1 is accepted"
check "run --seed 2^64-1 is printed exactly" has "seed=18446744073709551615 " out
run "$R" run pass.rpcs --seed 0x10
check "run --seed 0x10 is seed 16" has "seed=16 " out
for s in -1 x 18446744073709551616 "" +5 "1 "; do
    run "$R" run pass.rpcs --seed "$s"
    if [ "$rc" -eq 2 ] && has "invalid seed" err; then ok "run --seed '$s': exit 2 with a clear error"; else
        not_ok "run --seed '$s': exit 2 with a clear error (exit $rc)" "$(cat err)"; fi
done
run "$R" run fail.rpcs
expect_rc 1 "run: a failing expectation exits 1"
check "run: FAIL verdict" has "^fail.rpcs seed=0 FAIL " out
check "run: failure as file:line:col: worker: message" hasE '^  fail\.rpcs:[0-9]+:[0-9]+: worker0: expectation failed' out
check "run: prints the replay command" has "^  reproduce: rpcsim replay fail.rpcs --seed 0$" out
run "$R" run bad.rpcs
expect_rc 2 "run: a malformed scenario exits 2"
check "run: parser error is file:line:col: message on stderr" hasE '^bad\.rpcs:[0-9]+:[0-9]+: ' err
run "$R" run pass.rpcs fail.rpcs
expect_rc 1 "run: pass + fail exits 1"
run "$R" run fail.rpcs bad.rpcs pass.rpcs
expect_rc 2 "run: fail + malformed exits 2 (the largest wins), the other files still run"
check "run: runs the files after a malformed one" has "^pass.rpcs seed=0 PASS" out
run "$R" run
expect_rc 2 "run: no FILE exits 2"
run "$R" run --quiet pass.rpcs
check "run --quiet: nothing for a passing run" test ! -s out
run "$R" run --quiet pass.rpcs fail.rpcs
check "run --quiet: the failing run is printed" has "^fail.rpcs seed=0 FAIL" out
run "$R" run --log pass.rpcs
check "run --log: prints the programs' print output" has "\[worker0\] the sum is" out
run "$R" run pass.rpcs
check "run without --log: no print output" sh -c '! grep -q "the sum is" out'
run "$R" run pass.rpcs --trace-format bogus --trace t.txt
expect_rc 2 "run --trace-format bogus: exit 2"
run "$R" run pass.rpcs fail.rpcs --trace t.txt
expect_rc 2 "run --trace with two files: exit 2"
run "$R" run pass.rpcs --trace t.txt
check "run --trace: text trace lines" hasE '^\[[0-9]+\.[0-9]{9}\] \[worker[01]' t.txt
run "$R" run pass.rpcs --trace chrome.json --trace-format chrome
expect_rc 0 "run --trace --trace-format chrome: exit 0"
if [ $have_python -eq 1 ]; then
    check "chrome trace is valid JSON" python3 -m json.tool chrome.json
    # Metadata events (ph M: process and thread names) carry no timestamp in
    # the trace-event format; every other event must have one.
    check "chrome trace: traceEvents with ph/ts/pid/tid" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
ev = d["traceEvents"]
assert len(ev) > 0
assert any(e["ph"] != "M" for e in ev)
for e in ev:
    for k in ("ph", "pid", "tid"):
        assert k in e, (k, e)
    if e["ph"] != "M":
        assert "ts" in e, e
' chrome.json
else
    skip "chrome trace is valid JSON" "no python3"
    skip "chrome trace: traceEvents with ph/ts/pid/tid" "no python3"
fi
run "$R" run pass.rpcs --trace - --trace-format json
if [ $have_python -eq 1 ]; then
    check "run --trace - --trace-format json: stdout is JSON lines, summary on stderr" sh -c \
        'python3 -c "import json,sys; [json.loads(l) for l in open(sys.argv[1])]" out && grep -q "PASS" err'
else
    skip "run --trace - json: stdout is JSON lines" "no python3"
fi

# --- replay -----------------------------------------------------------------------
run "$R" replay pass.rpcs --seed 3
expect_rc 0 "replay: exit 0"
check "replay: prints the trace" hasE '^\[[0-9]+\.[0-9]{9}\] \[worker0' out
check "replay: ends with the summary" sh -c 'tail -n 1 out | grep -q "^pass.rpcs seed=3 PASS"'
fp_replay3=$(sed -n 's/^pass.rpcs seed=3 .* fp=\([0-9a-f]*\)$/\1/p' out)
if [ -n "$fp_replay3" ] && [ "$fp_replay3" = "$fp_run3" ]; then ok "replay: same fingerprint as run --seed 3"; else
    not_ok "replay: same fingerprint as run --seed 3 ($fp_replay3 vs $fp_run3)"; fi
run "$R" replay pass.rpcs --seed 3 --trace-format json -o r.json
expect_rc 0 "replay -o FILE --trace-format json: exit 0"
check "replay -o: the summary on stdout, the trace in the file" sh -c \
    'grep -q "seed=3 PASS" out && test -s r.json && ! grep -q "^\[" out'
run "$R" replay fail.rpcs
expect_rc 1 "replay: a failing run exits 1"
run "$R" replay
expect_rc 2 "replay: no FILE exits 2"
run "$R" replay pass.rpcs fail.rpcs
expect_rc 2 "replay: two FILEs exit 2"
run "$R" replay bad.rpcs --seed 1
expect_rc 2 "replay: malformed scenario exits 2"

# --- check-determinism ---------------------------------------------------------------
run "$R" check-determinism pass.rpcs flaky.rpcs
expect_rc 0 "check-determinism: a good scenario exits 0"
check "check-determinism: reports deterministic over 0..9" has "pass.rpcs: deterministic over seeds 0..9" out
run "$R" check-determinism pass.rpcs --seeds 100..102
check "check-determinism --seeds: the range is used" has "seeds 100..102 (3 seeds" out
run "$R" check-determinism pass.rpcs --seeds 5..2
expect_rc 2 "check-determinism --seeds 5..2: exit 2"
check "check-determinism --seeds 5..2: a clear error" has "first seed is greater than the last" err
run "$R" check-determinism bad.rpcs
expect_rc 2 "check-determinism: malformed scenario exits 2"
# The hook makes the second run of each seed use seed + 1: a stand-in for a
# nondeterministic build, to exercise the mismatch report.
RPCSIM_TEST_PERTURB_SECOND_RUN=1 "$R" check-determinism flaky.rpcs --seeds 0..1 >out 2>err
rc=$?
expect_rc 4 "check-determinism: a mismatch exits 4"
check "check-determinism: mismatch shows seed and both fingerprints" hasE \
    '^  fingerprints: run 1 [0-9a-f]{16}, run 2 [0-9a-f]{16}$' out
check "check-determinism: mismatch shows the first differing trace line, both versions" sh -c \
    'grep -Eq "^flaky.rpcs seed=0: MISMATCH" out && grep -Eq "^  first difference at trace line [0-9]+:" out && grep -q "^    run 1: \[" out && grep -q "^    run 2: \[" out'

# --- lint -------------------------------------------------------------------------------
run "$R" lint pass.rpcs fail.rpcs
expect_rc 0 "lint: valid files exit 0"
check "lint: FILE: ok" has "^pass.rpcs: ok$" out
run "$R" lint bad.rpcs
expect_rc 2 "lint: a malformed file exits 2"
check "lint: file:line:col: message on stderr" hasE '^bad\.rpcs:[0-9]+:[0-9]+: .+' err
run "$R" lint pass.rpcs bad.rpcs
expect_rc 2 "lint: one malformed file among valid ones exits 2"
run "$R" lint no-such-file.rpcs
expect_rc 2 "lint: a missing file exits 2"

# --- list ----------------------------------------------------------------------------
run "$R" list functions
check "list functions: add is a builtin with its doc" hasE '^add +builtin +torch\.add' out
check "list functions: udf and async kinds" sh -c 'grep -Eq "^identity +udf " out && grep -Eq "^async_add +async " out'
check "list functions: internal functions hidden" sh -c '! grep -q "_gather_to_leader" out'
run "$R" list messages
check "list messages: SCRIPT_CALL is 0x100" hasE '^SCRIPT_CALL +0x100 ' out
check "list messages: EXCEPTION is 0x237" hasE '^EXCEPTION +0x237 ' out
run "$R" list faults
check "list faults: the ten faulty-agent types" sh -c \
    'for t in RREF_FORK_REQUEST RREF_CHILD_ACCEPT RREF_USER_DELETE CLEANUP_AUTOGRAD_CONTEXT_REQ PYTHON_REMOTE_CALL SCRIPT_REMOTE_CALL PYTHON_CALL SCRIPT_CALL PYTHON_RREF_FETCH_CALL SCRIPT_RREF_FETCH_CALL; do grep -q "^    $t$" out || exit 1; done; test $(grep -c "^    [A-Z_]*$" out) -eq 10'
check "list faults: network faults and world actions" sh -c 'grep -q "loss P" out && grep -q "partition A <-> B" out && grep -q "crash W" out'
run "$R" list counters
check "list counters: requests_sent" has "^requests_sent$" out
run "$R" list builtins
check "list builtins: rpc_sync" has "^rpc_sync$" out
run "$R" list bogus
expect_rc 2 "list bogus: exit 2"
run "$R" list
expect_rc 2 "list without a name: exit 2"

# --- sweep --------------------------------------------------------------------------
run "$R" sweep pass.rpcs --seeds 0..19 -j 2
expect_rc 0 "sweep: all passing exits 0"
check "sweep: the table counts 20 runs" hasE '^pass\.rpcs +20 +20 +0 +0$' out
"$R" sweep flaky.rpcs pass.rpcs --seeds 0..39 -j 1 --tap >j1.tap 2>j1.err
rc1=$?
"$R" sweep flaky.rpcs pass.rpcs --seeds 0..39 -j 2 --tap >j2.tap 2>j2.err
rc2=$?
if [ $rc1 -eq 1 ] && [ $rc2 -eq 1 ]; then ok "sweep: failing runs exit 1 (-j 1 and -j 2)"; else
    not_ok "sweep: failing runs exit 1 (got $rc1 and $rc2)" "$(cat j1.err j2.err)"; fi
check "sweep: the flaky scenario has both verdicts" sh -c 'grep -q "^ok .*flaky" j1.tap && grep -q "^not ok .*flaky" j1.tap'
if cmp -s j1.tap j2.tap; then ok "sweep -j 2 prints exactly what -j 1 prints (TAP, fingerprints)"; else
    not_ok "sweep -j 2 prints exactly what -j 1 prints" "$(diff j1.tap j2.tap | head)"; fi
tap_ok() {
    # plan first or last, one line per test, numbered 1..N in order
    awk '
        /^1\.\.[0-9]+$/ { plans++; plan = substr($0, 4) + 0; next }
        /^(ok|not ok) [0-9]+ - / { count++; num = ($1 == "ok") ? $2 : $3; if (num != count) bad = 1; next }
        /^#/ { next }
        { bad = 1 }
        END { exit !(plans == 1 && plan == count && !bad) }' "$1"
}
check "sweep --tap: well-formed (one plan, matches the count, numbered in order)" tap_ok j1.tap
check "sweep --tap: 80 tests" sh -c 'test $(grep -c "^ok \|^not ok " j1.tap) -eq 80'
check "sweep --tap: ok lines carry seed and fingerprint" hasE '^ok [0-9]+ - pass\.rpcs seed=[0-9]+ fp=[0-9a-f]{16}$' j1.tap
check "sweep --tap: the first failure as a diagnostic" hasE '^# flaky\.rpcs:[0-9]+:[0-9]+: worker0: ' j1.tap
check "sweep --tap: the table goes to stderr" has "first 5:" j1.err
fp_sweep3=$(sed -n 's/^ok [0-9]* - pass.rpcs seed=3 fp=\([0-9a-f]*\)$/\1/p' j1.tap)
if [ -n "$fp_sweep3" ] && [ "$fp_sweep3" = "$fp_run3" ]; then ok "sweep: seed 3 has run's fingerprint"; else
    not_ok "sweep: seed 3 has run's fingerprint ($fp_sweep3 vs $fp_run3)"; fi
run "$R" sweep flaky.rpcs --seeds 0..39 -j 2
check "sweep: first failing seeds with their replay command" hasE '^  seed [0-9]+: rpcsim replay flaky\.rpcs --seed [0-9]+$' out

descs() { sed -n 's/^\(ok\|not ok\) [0-9]* - //p' "$1" | sort; }
"$R" sweep flaky.rpcs pass.rpcs --seeds 0..39 -j 2 --shard 1/2 --tap >s1.tap 2>/dev/null
"$R" sweep flaky.rpcs pass.rpcs --seeds 0..39 -j 2 --shard 2/2 --tap >s2.tap 2>/dev/null
descs j1.tap >all.txt
descs s1.tap >s1.txt
descs s2.tap >s2.txt
sort s1.txt s2.txt >union.txt
if cmp -s all.txt union.txt && [ -s s1.txt ] && [ -s s2.txt ]; then
    ok "sweep --shard 1/2 + 2/2 cover the full set exactly once"; else
    not_ok "sweep --shard 1/2 + 2/2 cover the full set exactly once" "$(diff all.txt union.txt | head)"; fi
check "sweep --shard: TAP of a shard is well-formed" tap_ok s1.tap
"$R" sweep pass.rpcs --seeds 0..4 --shard 7/7 --tap >s7.tap 2>/dev/null
check "sweep --shard with no pairs: plan 1..0, exit 0" sh -c 'test "$(cat s7.tap)" = "1..0"'

run "$R" sweep flaky.rpcs pass.rpcs --seeds 0..39 -j 2 --junit junit.xml
if [ $have_python -eq 1 ]; then
    check "sweep --junit: well-formed XML" python3 -c 'import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])' junit.xml
    nf=$(grep -c "^not ok .*flaky" j1.tap)
    check "sweep --junit: a testsuite per file, a testcase per seed, failures counted" python3 -c '
import sys, xml.dom.minidom
d = xml.dom.minidom.parse(sys.argv[1])
suites = d.getElementsByTagName("testsuite")
assert [s.getAttribute("name") for s in suites] == ["flaky.rpcs", "pass.rpcs"]
for s in suites:
    assert len(s.getElementsByTagName("testcase")) == 40
assert len(suites[0].getElementsByTagName("failure")) == int(sys.argv[2])
assert suites[0].getAttribute("failures") == sys.argv[2]
assert len(suites[1].getElementsByTagName("failure")) == 0
f = suites[0].getElementsByTagName("failure")[0]
assert "worker0" in f.getAttribute("message")
' junit.xml "$nf"
else
    skip "sweep --junit: well-formed XML" "no python3"
    skip "sweep --junit: testsuites and testcases" "no python3"
fi
# Failure messages with markup characters must be escaped.
cat >markup.rpcs <<'EOF'
world {
  workers 2
}
on worker0 {
  x = rpc_sync(worker1, add, 1, 2)
  expect str(x) == "<tag a=\"1\"> & 'q' \t"
}
EOF
run "$R" sweep markup.rpcs --seeds 0..1 -j 1 --junit markup.xml
if [ $have_python -eq 1 ]; then
    check "sweep --junit: markup in messages is escaped" python3 -c 'import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])' markup.xml
else
    skip "sweep --junit: markup in messages is escaped" "no python3"
fi

RPCSIM_TEST_CRASH_SEED=3 "$R" sweep pass.rpcs --seeds 0..7 -j 2 --tap >crash.tap 2>crash.err
rc=$?
expect_rc 3 "sweep: a crashed worker process exits 3"
check "sweep: the crashed pair is reported as an internal error" sh -c \
    'grep -q "^not ok 4 - pass.rpcs seed=3 fp=none internal error" crash.tap && grep -q "^# .*killed by signal" crash.tap'
check "sweep: the sweep carries on after a crash" sh -c 'test $(grep -c "^ok " crash.tap) -eq 7'
check "sweep: the table counts the crash as an error" hasE '^pass\.rpcs +8 +7 +0 +1$' crash.err

"$R" sweep flaky.rpcs --seeds 0..199 -j 2 --fail-fast --tap >ff.tap 2>ff.err
rc=$?
expect_rc 1 "sweep --fail-fast: exits 1"
check "sweep --fail-fast: stops early, TAP still well-formed" sh -c \
    "test \$(grep -c '^ok \|^not ok ' ff.tap) -lt 200 && grep -q -- '--fail-fast' ff.err"
check "sweep --fail-fast: TAP plan matches" tap_ok ff.tap

run "$R" sweep pass.rpcs --seeds 18446744073709551614..18446744073709551615 -j 2
expect_rc 0 "sweep: seeds at the top of the 64-bit range"
check "sweep: two runs at the top of the range" hasE '^pass\.rpcs +2 +2 +0 +0$' out
run "$R" sweep pass.rpcs --seeds 0..18446744073709551615
expect_rc 2 "sweep: 2^64 seeds is refused"
for bad in "5..2" "x" "1..x" "..5" "3.."; do
    run "$R" sweep pass.rpcs --seeds "$bad"
    if [ "$rc" -eq 2 ] && has "invalid seed" err; then ok "sweep --seeds '$bad': exit 2 with a clear error"; else
        not_ok "sweep --seeds '$bad': exit 2 with a clear error (exit $rc)" "$(cat err)"; fi
done
run "$R" sweep pass.rpcs
expect_rc 2 "sweep without --seeds: exit 2"
for bad in "0/2" "3/2" "1" "a/b" "1/0"; do
    run "$R" sweep pass.rpcs --seeds 0..3 --shard "$bad"
    expect_rc 2 "sweep --shard '$bad': exit 2"
done
run "$R" sweep pass.rpcs --seeds 0..3 -j 0
expect_rc 2 "sweep -j 0: exit 2"
run "$R" sweep pass.rpcs bad.rpcs --seeds 0..3
expect_rc 2 "sweep: a malformed file exits 2 before anything runs"
check "sweep: the parser's error on stderr" hasE '^bad\.rpcs:[0-9]+:[0-9]+: ' err
run "$R" sweep pass.rpcs --seeds 0..3 --quiet
check "sweep --quiet: no per-file rows when all pass" sh -c '! grep -q "^pass.rpcs " out && grep -q "^total" out'

# The progress line needs a terminal on stderr: util-linux script(1) gives one.
if script --version 2>/dev/null | grep -q util-linux; then
    script -qc "'$R' sweep flaky.rpcs --seeds 0..2999 -j 2 >/dev/null" /dev/null >tty.out 2>&1
    check "sweep on a terminal: progress line with done/total, failures, runs/s, ETA" \
        grep -Eq "sweep: [0-9]+/3000 runs, [0-9]+ failed, [0-9]+ runs/s, ETA" tty.out
else
    skip "sweep on a terminal: progress line" "no util-linux script(1)"
fi
"$R" sweep flaky.rpcs --seeds 0..99 -j 2 >notty.out 2>notty.err
check "sweep off a terminal: no progress line" sh -c '! grep -q "ETA" notty.err'

# memcheck: no errors, nothing definitely or indirectly lost.
if command -v valgrind >/dev/null 2>&1; then
    vg() {
        G_SLICE=always-malloc valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
            --errors-for-leak-kinds=definite,indirect --error-exitcode=99 "$@" >vg.out 2>vg.err
        vrc=$?
        [ $vrc -ne 99 ] && ! grep -q "==[0-9]*==" vg.err
    }
    check "valgrind: run is clean" vg "$R" run pass.rpcs fail.rpcs --log
    check "valgrind: lint of a malformed file is clean" vg "$R" lint bad.rpcs
    check "valgrind: replay --trace-format chrome is clean" vg "$R" replay flaky.rpcs --seed 4 --trace-format chrome -o vg.json
    check "valgrind: check-determinism is clean" vg "$R" check-determinism flaky.rpcs --seeds 0..1
    check "valgrind: sweep (parent and worker processes) is clean" vg "$R" sweep flaky.rpcs --seeds 0..5 -j 2 --tap --junit vg.xml
else
    skip "valgrind: the subcommands are memcheck-clean" "no valgrind"
fi

echo "1..$n"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
