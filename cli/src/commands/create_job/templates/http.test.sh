#!/bin/sh
# Test of the http job @@name@@, scaffolded by `workerctl create-job --kind http`:
# triggers one run through workerctl, waits for its end, and exits 0 only if it
# succeeded (`workerctl jobs run --wait` exits 1 otherwise, 2-4 on other errors).
#
# It needs a controller that defines @@name@@ (after `workerctl apply -f` of the
# config, or a restart of the controller) and a connected agent with the http
# executor. WORKER_CONTROLLER and WORKER_TOKEN select the controller, as for
# workerctl; WORKERCTL names the workerctl binary (default: the one on PATH).
set -u

workerctl=${WORKERCTL:-workerctl}

if "$workerctl" jobs run @@name@@ --payload '{"example": true}' --wait --timeout 5m; then
    echo "ok: @@name@@ succeeded"
else
    code=$?
    echo "FAIL: @@name@@ did not succeed (workerctl exited $code)"
    exit 1
fi
