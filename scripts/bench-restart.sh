#!/usr/bin/env bash
# Restart with Q runs queued: how soon does a restarted controller dispatch again?
#
#   1. start a fresh controller (SQLite in a temp dir, or the database URL $1);
#   2. `workerctl bench preload --queued Q --hold`: enqueue Q runs of
#      bench.preload (selector bench=preload: no real agent takes them) and exit;
#   3. stop the controller with SIGTERM and wait for it to exit;
#   4. start it again on the same database and config; time exec → the
#      "worker-controller ready grpc=ADDR" line on its stdout;
#   5. `workerctl bench preload --queued 0 --existing Q --measure 20000` against
#      the new address: simulated agents drain the Q runs; the bench reports the
#      first assignment after the agents started connecting;
#   6. print a summary: time to ready + first assignment = dispatching again.
#
# Usage (from the repository root):
#
#   cargo build --release
#   scripts/bench-restart.sh                          # Q = 1000000, SQLite in a temp dir
#   QUEUED=20000 scripts/bench-restart.sh             # a smaller queue
#   scripts/bench-restart.sh postgres://postgres@127.0.0.1:5432/worker_bench   # an existing, empty database
#
# Environment: QUEUED (default 1000000), MEASURE (runs the dispatch rate is
# measured over after the restart, default 20000), READY_TIMEOUT (seconds to
# wait for "ready", default 600), STOP_TIMEOUT (seconds to wait for the exit
# after SIGTERM before SIGKILL, default 120), RUST_LOG (controller, default info).
# Needs bash >= 5.1 (EPOCHREALTIME, wait -p) and jq. The controller's logs and
# the benches' JSON stay in the temp dir, whose path is printed at the end.
set -u
export LC_ALL=C
cd "$(dirname "$0")/.."
R=target/release
QUEUED=${QUEUED:-1000000}
MEASURE=${MEASURE:-20000}
READY_TIMEOUT=${READY_TIMEOUT:-600}
STOP_TIMEOUT=${STOP_TIMEOUT:-120}
export RUST_LOG=${RUST_LOG:-info}

die() { echo "bench-restart: $*" >&2; exit 1; }
for b in worker-controller workerctl; do
    [ -x "$R/$b" ] || die "$R/$b is missing: run cargo build --release first"
done
command -v jq > /dev/null || die "jq is needed to read the benches' JSON"
[ -n "${EPOCHREALTIME:-}" ] || die "bash >= 5 is needed (EPOCHREALTIME)"
case $QUEUED in '' | *[!0-9]* | 0) die "QUEUED must be a positive integer, got '$QUEUED'" ;; esac

WORK=$(mktemp -d)
DB=${1:-sqlite://$WORK/worker.db}
ulimit -n 65536 2>/dev/null || true
mkdir -p "$WORK/config" && printf 'jobs: {}\n' > "$WORK/config/scheduler.yaml"

CTL=
cleanup() {
    if [ -n "$CTL" ] && kill -0 "$CTL" 2>/dev/null; then
        kill -TERM "$CTL" 2>/dev/null
        wait "$CTL" 2>/dev/null
    fi
    echo "logs: $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Seconds from $1 to $2 (EPOCHREALTIME values), 3 decimals.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# start_controller NAME: starts the controller (stdout → $WORK/NAME.out, each
# line prefixed with the EPOCHREALTIME it was read at; stderr → NAME.err); sets
# CTL (its pid) and EXEC_AT. The bench's address changes on each start (port 0).
start_controller() {
    local out=$WORK/$1.out
    : > "$out"
    EXEC_AT=$EPOCHREALTIME
    $R/worker-controller --config "$WORK/config" --db "$DB" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
        > >(while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done > "$out") \
        2> "$WORK/$1.err" &
    CTL=$!
}

# wait_ready NAME: waits for the ready line; sets READY_AT and ADDR.
wait_ready() {
    local out=$WORK/$1.out line deadline=$((SECONDS + READY_TIMEOUT))
    while :; do
        line=$(grep -m1 ' worker-controller ready grpc=' "$out")
        [ -n "$line" ] && break
        kill -0 "$CTL" 2>/dev/null || { tail -5 "$WORK/$1.err" >&2; die "the controller ($1) exited before ready"; }
        [ $SECONDS -lt $deadline ] || die "the controller ($1) was not ready after ${READY_TIMEOUT}s"
        sleep 0.02
    done
    READY_AT=${line%% *}
    ADDR=${line##*grpc=}
    ADDR=${ADDR%% *}
}

# stop_controller: SIGTERM, then waits for the exit (SIGKILL after
# STOP_TIMEOUT); sets STOP_SECONDS and STOP_RC.
stop_controller() {
    local t0 done_pid watchdog
    sleep "$STOP_TIMEOUT" &
    watchdog=$!
    t0=$EPOCHREALTIME
    kill -TERM "$CTL"
    wait -n -p done_pid "$CTL" "$watchdog"
    STOP_RC=$?
    STOP_SECONDS=$(elapsed "$t0" "$EPOCHREALTIME")
    if [ "$done_pid" = "$watchdog" ]; then
        echo "bench-restart: the controller did not exit ${STOP_TIMEOUT}s after SIGTERM: SIGKILL" >&2
        kill -KILL "$CTL"
        wait "$CTL"
        STOP_RC=killed
    else
        kill "$watchdog" 2>/dev/null
        wait "$watchdog" 2>/dev/null
    fi
    CTL=
}

# bench NAME ARGS...: workerctl bench preload ARGS against $ADDR, JSON to
# $WORK/NAME.json (progress on stderr, also in NAME.log); prints the results.
bench() {
    local name=$1
    shift
    echo "### workerctl --controller http://$ADDR bench preload $*"
    # stderr (progress) through tee, stdout (the JSON) to the file.
    $R/workerctl --controller "http://$ADDR" -o json bench preload "$@" 2>&1 > "$WORK/$name.json" \
        | tee "$WORK/$name.log" >&2
    local rc=${PIPESTATUS[0]}
    jq '{ok, problems, results}' "$WORK/$name.json" 2>/dev/null || cat "$WORK/$name.json"
    echo
    return $rc
}

echo "database: $DB"
echo "queued:   $QUEUED runs of bench.preload"
echo

start_controller ctl1
wait_ready ctl1
echo "controller 1 ready in $(elapsed "$EXEC_AT" "$READY_AT")s at $ADDR (empty database)"
bench hold --queued "$QUEUED" --hold || die "the --hold bench failed"
HOLD=$WORK/hold.json

CTL_PID1=$CTL
stop_controller
STOP1_SECONDS=$STOP_SECONDS
STOP1_RC=$STOP_RC
echo "controller 1 (pid $CTL_PID1) stopped ${STOP1_SECONDS}s after SIGTERM (exit $STOP1_RC)"

start_controller ctl2
wait_ready ctl2
READY_SECONDS=$(elapsed "$EXEC_AT" "$READY_AT")
echo "controller 2 ready in ${READY_SECONDS}s at $ADDR (exec → ready line, $QUEUED runs queued)"
BENCH_AT=$EPOCHREALTIME
bench existing --queued 0 --existing "$QUEUED" --measure "$MEASURE"
BENCH_RC=$?
EX=$WORK/existing.json

stop_controller
echo "controller 2 stopped ${STOP_SECONDS}s after SIGTERM (exit $STOP_RC)"
echo

r() { jq -r ".results.$2 // empty" "$1" 2>/dev/null; }
FIRST=$(r "$EX" first_assignment_seconds)
echo "== Summary: restart with $QUEUED runs queued ($DB)"
printf '  %-34s %s\n' "enqueue (before restart)" \
    "$QUEUED runs in $(r "$HOLD" enqueue_seconds)s = $(r "$HOLD" enqueue_per_sec) runs/s"
printf '  %-34s %s\n' "rss with them queued (before)" \
    "$(mib "$(r "$HOLD" rss_queued_bytes)") ($(r "$HOLD" live_runs_queued) live runs; $(mib "$(r "$HOLD" rss_before_bytes)") empty)"
printf '  %-34s %s\n' "shutdown (SIGTERM -> exit)" "${STOP1_SECONDS}s (exit $STOP1_RC)"
printf '  %-34s %s\n' "time to ready" "${READY_SECONDS}s (exec → \"worker-controller ready\")"
if [ -n "$FIRST" ]; then
    TOTAL=$(awk -v a="$READY_SECONDS" -v b="$FIRST" 'BEGIN { printf "%.3f", a + b }')
    VERDICT=$(awk -v t="$TOTAL" 'BEGIN { print (t <= 5 ? "within 5 s" : "NOT within 5 s") }')
    printf '  %-34s %s\n' "first assignment" "${FIRST}s after the agents started connecting"
    printf '  %-34s %s\n' "dispatching again after restart" "${TOTAL}s (time to ready + first assignment: $VERDICT)"
else
    printf '  %-34s %s\n' "first assignment" "none (see the bench's problems above)"
fi
printf '  %-34s %s\n' "rss after restart" \
    "$(mib "$(r "$EX" rss_queued_bytes)") with $(r "$EX" live_runs_queued) live runs ($(r "$EX" controller_queued) queued)"
printf '  %-34s %s\n' "dispatch after restart" \
    "first $(r "$EX" measured_runs) runs in $(r "$EX" measured_seconds)s = $(r "$EX" dispatch_per_sec) runs/s"
printf '  %-34s %s\n' "drain after restart" \
    "$(r "$EX" drained_runs) of $QUEUED runs in $(r "$EX" drain_seconds)s = $(r "$EX" drain_per_sec) runs/s; rss after $(mib "$(r "$EX" rss_after_bytes)")"
printf '  %-34s %s\n' "(not counted)" \
    "ready line -> bench started: $(elapsed "$READY_AT" "$BENCH_AT")s; then its ServerInfo/ApplyJobs/QueueStats before the agents connect"
exit $BENCH_RC
