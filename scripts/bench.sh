#!/usr/bin/env bash
# Runs the scenarios of docs/benchmarks.md against a fresh controller with two
# real agents, all on this machine. Usage (from the repository root):
#
#   cargo build --release
#   scripts/bench.sh                                   # SQLite in a temp dir
#   scripts/bench.sh postgres://postgres@127.0.0.1:5432/worker_bench   # an existing, empty database
#
# Results go to stdout; the controller's and agents' logs stay in the temp dir.
set -u
cd "$(dirname "$0")/.."
R=target/release
WORK=$(mktemp -d)
DB=${1:-sqlite://$WORK/worker.db}
ulimit -n 65536 2>/dev/null || true
mkdir -p "$WORK/config" && printf 'jobs: {}\n' > "$WORK/config/scheduler.yaml"

RUST_LOG=warn $R/worker-controller --config "$WORK/config" --db "$DB" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 > "$WORK/ctl.out" 2> "$WORK/ctl.err" &
CTL=$!
for _ in $(seq 1 100); do grep -q ready "$WORK/ctl.out" && break; sleep 0.1; done
# The ready line: "worker-controller ready grpc=ADDR http=ADDR".
ADDR=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$WORK/ctl.out")
URL=http://$ADDR
RUST_LOG=warn $R/worker-agent --controller "$URL" --name bench-a1 --capacity 64 --executors builtin > "$WORK/a1.log" 2>&1 &
A1=$!
RUST_LOG=warn $R/worker-agent --controller "$URL" --name bench-a2 --capacity 64 --executors builtin > "$WORK/a2.log" 2>&1 &
A2=$!
sleep 1

run() { echo "### workerctl bench $*"; $R/workerctl --controller "$URL" bench "$@"; echo; }
# First, on the fresh controller: memory per connected agent.
run agents --count 1000
run burn-down --jobs 20000 --batch 500
run rate --rate 500 --duration 10s
run rate --rate 1000 --duration 10s
run rate --rate 5000 --duration 5s
run schedules --count 1000
run schedules --count 10000
kill $A1 $A2
sleep 1
# Without real agents: the bench's own simulated agents take the preloaded runs.
run preload --queued 1000 --measure 1000
run preload --queued 20000 --measure 20000
# Last: 100,000 schedules stay defined (deleting them one by one takes long) and
# go on firing, so this controller is thrown away right after.
run schedules --count 100000 --keep
kill $CTL
wait
echo "logs: $WORK"
