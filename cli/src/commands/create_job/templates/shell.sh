#!/bin/sh
# @@name@@: a shell job, scaffolded by `workerctl create-job --kind shell`.
#
# How the agent runs it (docs/executors.md, docs/configuration.md#executors):
#   - the run's payload, JSON, arrives on standard input (empty when the run has none);
#   - WORKER_JOB, WORKER_RUN_ID and WORKER_ATTEMPT (1, 2, ...) are in the environment;
#   - exit code 0 means succeeded; any other code failed, retried by the job's `retry`
#     policy (codes in retry.non_retryable_exit_codes go straight to the dead-letter queue);
#   - stdout and stderr are the attempt's output (`workerctl runs logs RUN`);
#   - a line `::worker metric NAME NUMBER` on stdout reports a metric,
#     `::worker span NAME 250ms` the time spent in an operation;
#   - on timeout or cancel the process group gets SIGTERM, then SIGKILL.
set -eu

payload=$(cat)
[ -n "$payload" ] || payload=null

echo "job ${WORKER_JOB:-@@name@@}, run ${WORKER_RUN_ID:-local}, attempt ${WORKER_ATTEMPT:-1}"
echo "payload: $payload"

# Your work goes here. A field of the payload, with jq installed:
#   target=$(printf '%s' "$payload" | jq -r '.target // empty')

bytes=$(printf '%s' "$payload" | wc -c | tr -d ' ')
echo "::worker metric payload_bytes $bytes"
echo "done"
