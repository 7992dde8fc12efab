#!/usr/bin/env bash
# Compares two release builds on workload A, alternating them in one sitting
# (the machine is shared and noisy: only same-sitting ratios mean anything).
# Each run starts a fresh controller on a fresh SQLite file. Usage:
#
#   git worktree add ../base <commit> && (cd ../base && cargo build --release --bins)
#   cargo build --release --bins
#   scripts/bench-ab.sh ../base . [PAIRS] [JOBS]
#
# Prints one line per run: build, enqueue jobs/s, work jobs/s, work seconds,
# first completion seconds.
set -u
BASE=$1
HEAD=$2
PAIRS=${3:-3}
JOBS=${4:-100000}
one() {
  local R=$1/target/release label=$2 work addr ctl
  work=$(mktemp -d)
  mkdir -p "$work/config" && printf 'jobs: {}\n' > "$work/config/scheduler.yaml"
  RUST_LOG=warn "$R/worker-controller" --config "$work/config" --db "sqlite://$work/w.db" \
    --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 > "$work/ctl.out" 2> "$work/ctl.err" &
  ctl=$!
  for _ in $(seq 1 100); do grep -q ready "$work/ctl.out" && break; sleep 0.1; done
  addr=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$work/ctl.out")
  "$R/workerctl" --controller "http://$addr" bench workload-a --jobs "$JOBS" --agents 2 -o json 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin); r=d['results']; print('$label', r['enqueue_per_sec'], r['work_per_sec'], r['work_seconds'], r['first_completion_seconds'], 'ok' if d['ok'] else 'PROBLEMS')"
  kill "$ctl"; wait "$ctl" 2>/dev/null; rm -rf "$work"
}
for _ in $(seq 1 "$PAIRS"); do
  one "$HEAD" head
  one "$BASE" base
done
