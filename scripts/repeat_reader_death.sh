#!/usr/bin/env bash
# The reader-death tests N times in a row (default 20), with `make test` running beside them
# (issue 16: they once failed under load). Stops at the first failure; exits non-zero then.
#   scripts/repeat_reader_death.sh [N] [--alone]
# Prints "reader-death: N/N runs passed" and the beside run's `make test` result.
set -u
cd "$(dirname "$0")/.."
runs="${1:-20}"
py=.venv/bin/python
tests=(tests/integration/test_fetch.py -k "reader_death or reader_dying or readers_dying or readers_leave or readers_stalled")
beside_pid=""
if [ "${2:-}" != "--alone" ]; then
    make test > /tmp/repeat-reader-death-make-test.$$.log 2>&1 &
    beside_pid=$!
    echo "reader-death: make test running beside (pid $beside_pid, log /tmp/repeat-reader-death-make-test.$$.log)"
fi
passed=0
start=$(date +%s)
for i in $(seq 1 "$runs"); do
    if $py -m pytest -q -p no:randomly "${tests[@]}" > /tmp/repeat-reader-death.$$.log 2>&1; then
        passed=$((passed + 1))
        echo "reader-death: run $i passed ($(tail -1 /tmp/repeat-reader-death.$$.log))"
    else
        echo "reader-death: run $i FAILED:"; tail -30 /tmp/repeat-reader-death.$$.log
        break
    fi
done
echo "reader-death: $passed/$runs runs passed in $(( $(date +%s) - start ))s"
status=0
[ "$passed" -eq "$runs" ] || status=1
if [ -n "$beside_pid" ]; then
    if wait "$beside_pid"; then beside="passed"; else beside="FAILED"; fi
    echo "reader-death: make test beside: $beside ($(grep -E 'passed|failed' /tmp/repeat-reader-death-make-test.$$.log | tail -1))"
fi
exit $status
