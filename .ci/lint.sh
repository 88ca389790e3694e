#!/bin/sh
# lint.sh — the rules a compiler cannot check.
#  1. core/ never includes sim/ (layering).
#  2. No wall clock, ambient randomness or real timers in core/ or sim/
#     outside the real-transport files (core/tcp*): determinism rule 1.
#     sim/cli-clock.c is exempt: it times sweeps for the CLI's progress
#     line, outside every simulated run.
#  3. Formatting matches .clang-format (when clang-format is installed).
set -u
status=0
if grep -n '#include "sim/' core/*.c core/*.h 2>/dev/null; then
    echo "lint: core/ must not include sim/ (see above)"; status=1
fi
pattern='\btime\(|clock_gettime|gettimeofday|g_get_monotonic_time|g_get_real_time|g_random_|\brand\(|\bsrand\(|\bGRand\b|g_rand_|g_timeout_add|\bg_thread_new|\bpthread_create'
files=$(ls core/*.c core/*.h sim/*.c sim/*.h 2>/dev/null | grep -v -e '^core/tcp' -e '^sim/cli-clock\.c$')
if grep -nE "$pattern" $files; then
    echo "lint: wall clock / ambient randomness / OS threads in a simulated layer (see above)"
    status=1
fi
if command -v clang-format >/dev/null 2>&1; then
    for f in core/*.[ch] sim/*.[ch]; do
        [ -f "$f" ] || continue
        if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
            echo "lint: $f is not clang-formatted (make format)"; status=1
        fi
    done
fi
[ $status -eq 0 ] && echo "lint: ok"
exit $status
