#!/usr/bin/env bash
# The burn-down on PostgreSQL with one controller, and with three controllers
# started with --ha (one leads, two stand by), alternated in one sitting.
# Usage (from the repository root, a PostgreSQL server at 127.0.0.1:5432 with
# trust auth for user postgres):
#
#   cargo build --release --bins
#   scripts/bench-ha.sh [ROUNDS]      # default 2 rounds of each
#
# Each run gets a fresh database; two agents (capacity 64, builtin executor)
# get every controller's address; `workerctl bench burn-down --jobs 20000
# --batch 500` runs against the same list, so it reaches the leader.
set -u
cd "$(dirname "$0")/.."
R=target/release
ROUNDS=${1:-2}
PG=postgres://postgres@127.0.0.1:5432

run_once() {
  local mode=$1 work db pids=() urls=() n
  work=$(mktemp -d)
  db=worker_bench_ha_$$_$RANDOM
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $db" || return 1
  mkdir -p "$work/config" && printf 'jobs: {}\n' > "$work/config/scheduler.yaml"
  n=1; flags=()
  if [ "$mode" = ha ]; then n=3; fi
  for i in $(seq 1 "$n"); do
    if [ "$mode" = ha ]; then flags=(--ha --ha-id "c$i"); fi
    RUST_LOG=warn $R/worker-controller --config "$work/config" --db "$PG/$db" --grpc-listen 127.0.0.1:0 \
      --http-listen 127.0.0.1:0 "${flags[@]}" > "$work/ctl$i.out" 2> "$work/ctl$i.err" &
    pids+=($!)
    for _ in $(seq 1 100); do grep -q ready "$work/ctl$i.out" && break; sleep 0.1; done
    urls+=("http://$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$work/ctl$i.out")")
    # The first controller leads: wait for it before starting the standbys.
    if [ "$i" = 1 ]; then sleep 1; fi
  done
  local list
  list=$(IFS=,; echo "${urls[*]}")
  RUST_LOG=warn $R/worker-agent --controller "$list" --name a1 --capacity 64 --executors builtin > "$work/a1.log" 2>&1 &
  pids+=($!)
  RUST_LOG=warn $R/worker-agent --controller "$list" --name a2 --capacity 64 --executors builtin > "$work/a2.log" 2>&1 &
  pids+=($!)
  sleep 1
  echo "### $mode ($n controller(s))"
  $R/workerctl --controller "$list" bench burn-down --jobs 20000 --batch 500 -o json > "$work/burn.json" || echo "(exit $?)"
  python3 -c "import json; r=json.load(open('$work/burn.json'))['results']; print('enqueue %.1fk runs/s, completed %.1fk runs/s' % (r['enqueue_per_sec'] / 1000, r['completed_per_sec'] / 1000))"
  kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE $db WITH (FORCE)"
}

for _ in $(seq 1 "$ROUNDS"); do
  run_once single
  run_once ha
done
