#!/bin/sh
# Test of @@name@@.sh, scaffolded by `workerctl create-job --kind shell`: runs the
# script as an agent would (the payload on stdin, the WORKER_* variables set)
# and checks its exit code and output. Exit 0 when it passes.
set -u

here=$(cd "$(dirname "$0")" && pwd)
script="$here/@@name@@.sh"
sample='{"example": true}'

out=$(printf '%s' "$sample" | WORKER_JOB=@@name@@ WORKER_RUN_ID=test-run WORKER_ATTEMPT=1 "$script" 2>&1)
code=$?

fail() {
    echo "FAIL: $1"
    echo "--- output of $script:"
    echo "$out"
    exit 1
}

[ "$code" -eq 0 ] || fail "exit code $code (expected 0)"
case "$out" in *"payload: $sample"*) ;; *) fail "the payload is not echoed" ;; esac
case "$out" in *"::worker metric payload_bytes 17"*) ;; *) fail "no payload_bytes metric of 17" ;; esac
echo "ok: @@name@@.sh"
