#!/usr/bin/env bash
# Does scraping /metrics slow the hot path? The burn-down of docs/benchmarks.md
# (`workerctl bench burn-down --jobs 20000 --batch 500`, two real agents of 64,
# SQLite in a temp dir), ROUNDS times (default 3) without and with a scraper
# that GETs /metrics every second during the whole burn-down, alternating, a
# fresh controller and database for every run. Prints each run's completed
# runs/s, the medians and their ratio. Usage (from the repository root):
#
#   cargo build --release -p worker-controller -p worker-agent -p workerctl
#   scripts/bench-scrape.sh
#
# Needs curl and jq. Logs stay in the temp dir.
set -u
cd "$(dirname "$0")/.."
R=target/release
ROUNDS=${ROUNDS:-3}
JOBS=${JOBS:-20000}
WORK=$(mktemp -d)
ulimit -n 65536 2>/dev/null || true
mkdir -p "$WORK/config" && printf 'jobs: {}\n' > "$WORK/config/scheduler.yaml"

# one NAME SCRAPE(0|1): a fresh controller and two agents, one burn-down;
# prints the completed runs/s.
one() {
    local dir=$WORK/$1 line grpc http scraper=""
    mkdir -p "$dir"
    RUST_LOG=warn $R/worker-controller --config "$WORK/config" --db "sqlite://$dir/worker.db" \
        --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 > "$dir/ctl.out" 2> "$dir/ctl.err" &
    local ctl=$!
    for _ in $(seq 1 200); do grep -q ready "$dir/ctl.out" && break; sleep 0.05; done
    line=$(grep -m1 'worker-controller ready grpc=' "$dir/ctl.out")
    grpc=${line##*grpc=}; grpc=${grpc%% *}
    http=${line##*http=}
    RUST_LOG=warn $R/worker-agent --controller "http://$grpc" --name a1 --capacity 64 --executors builtin > "$dir/a1.log" 2>&1 &
    local a1=$!
    RUST_LOG=warn $R/worker-agent --controller "http://$grpc" --name a2 --capacity 64 --executors builtin > "$dir/a2.log" 2>&1 &
    local a2=$!
    sleep 1
    if [ "$2" = 1 ]; then
        ( while :; do curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "http://$http/metrics" >> "$dir/scrapes"; sleep 1; done ) &
        scraper=$!
    fi
    $R/workerctl --controller "http://$grpc" -o json bench burn-down --jobs "$JOBS" --batch 500 > "$dir/bench.json" 2> "$dir/bench.err"
    [ -n "$scraper" ] && kill "$scraper" 2>/dev/null
    kill $a1 $a2 $ctl 2>/dev/null
    wait $a1 $a2 $ctl 2>/dev/null
    jq -r '[.. | .completed_per_sec? // empty][0]' "$dir/bench.json"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: > "$WORK/plain"; : > "$WORK/scraped"
for i in $(seq 1 "$ROUNDS"); do
    p=$(one "plain-$i" 0); echo "round $i without scraper: $p runs/s"; echo "$p" >> "$WORK/plain"
    s=$(one "scraped-$i" 1); echo "round $i with scraper:    $s runs/s ($(wc -l < "$WORK/scraped-$i/scrapes") scrapes, $(grep -vc '^200 ' "$WORK/scraped-$i/scrapes") not 200)"; echo "$s" >> "$WORK/scraped"
done
mp=$(median < "$WORK/plain"); ms=$(median < "$WORK/scraped")
echo "median without scraper: $mp runs/s"
echo "median with scraper:    $ms runs/s"
echo "ratio (with / without): $(awk -v a="$ms" -v b="$mp" 'BEGIN {printf "%.3f", a / b}')"
echo "logs: $WORK"
