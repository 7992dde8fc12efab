#!/usr/bin/env bash
# Runs the scenarios of docs/benchmarks.md against a fresh controller with two
# real agents, all on this machine. Usage (from the repository root):
#
#   cargo build --release --bins
#   scripts/bench.sh                                   # SQLite in a temp dir
#   scripts/bench.sh postgres://postgres@127.0.0.1:5432/worker_bench   # an existing, empty database
#   BENCH_QUICK=1 scripts/bench.sh                     # without workload-a --jobs 1000000 (takes minutes)
#
# Every scenario runs with `-o json`, its object saved as $WORK/NN-<scenario>.json
# (progress lines on stderr); at the end one markdown table summarises them all
# (python3). workload-a and workload-b spawn agents of their own, labelled for
# their run only, so the two agents started here never take their jobs.
# The controller's and agents' logs stay in the temp dir.
set -u
cd "$(dirname "$0")/.."
R=target/release
WORK=$(mktemp -d)
DB=${1:-sqlite://$WORK/worker.db}
ulimit -n 65536 2>/dev/null || true
mkdir -p "$WORK/config" && printf 'jobs: {}\n' > "$WORK/config/scheduler.yaml"

# `schedules` applies its S definitions (plus the two base jobs) in one ApplyJobs.
RUST_LOG=warn $R/worker-controller --config "$WORK/config" --db "$DB" --limit definitions_per_apply=100002 --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 > "$WORK/ctl.out" 2> "$WORK/ctl.err" &
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

N=0
run() {
  N=$((N + 1))
  local out
  out=$(printf '%s/%02d-%s.json' "$WORK" "$N" "$1")
  echo "### workerctl bench $* -o json > $out"
  $R/workerctl --controller "$URL" bench "$@" -o json > "$out" || echo "(exit $?)"
}
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
# The peer-queue workloads, with agents of their own (real worker-agent processes).
run workload-a --jobs 10000 --agents 2
run workload-a --jobs 100000 --agents 2
run workload-a --jobs 100000 --agents 4
run workload-a --jobs 100000 --agents 8
run workload-b --jobs 5000 --rate 500
run workload-b --jobs 25000 --rate 5000
if [ -z "${BENCH_QUICK:-}" ]; then
  run workload-a --jobs 1000000 --agents 2 --stall-timeout 120s
fi
# Without real agents: the bench's own simulated agents take the preloaded runs.
run preload --queued 1000 --measure 1000
run preload --queued 20000 --measure 20000
# Last: 100,000 schedules stay defined (deleting them one by one takes long) and
# go on firing, so this controller is thrown away right after.
run schedules --count 100000 --keep
kill $CTL
wait

python3 - "$WORK" <<'EOF'
import glob, json, os, sys

def ms(l):
    return f"{l['p50_ms']:.2f} / {l['p99_ms']:.2f} / {l['max_ms']:.2f}"

def mib(b):
    return f"{b / 1048576:.1f} MiB"

def summary(s, c, r):
    if s == "agents":
        return f"{r['connected']} connected in {r['connect_seconds']}s; RSS {mib(r['rss_before_bytes'])} → {mib(r['rss_connected_bytes'])}, {r['bytes_per_agent']:.0f} B/agent"
    if s == "burn-down":
        return f"enqueue {r['enqueue_per_sec']:.0f}/s; completed {r['completed_per_sec']:.0f}/s; drain {r['drain_seconds']}s"
    if s == "rate":
        return f"achieved {r['achieved_rate']}/s; enqueue→start p50/p99/max {ms(r['enqueue_to_start'])} ms; start→result p99 {r['start_to_result']['p99_ms']:.2f} ms"
    if s == "schedules":
        return f"{r['fired']} fired, {r['missing']} missing; lateness p50/p99/max {ms(r['lateness'])} ms"
    if s == "preload":
        return f"dispatch {r['dispatch_per_sec']}/s; drain {r['drain_per_sec']}/s; RSS queued {mib(r['rss_queued_bytes'])}"
    if s == "workload-a":
        return (f"enqueue **{r['enqueue_per_sec']:.0f} jobs/s**; work **{r['work_per_sec']:.0f} jobs/s** "
                f"({r['completed']} in {r['work_seconds']}s); first completion {r['first_completion_seconds']}s; "
                f"RSS {mib(r['rss_before_bytes'])} → {mib(r['rss_queued_bytes'])} queued → {mib(r['rss_after_bytes'])}")
    if s == "workload-b":
        return (f"achieved {r['achieved_rate']}/s; intended→handler start p50/p90/p99/p99.9/max "
                f"**{r['intended_to_handler_start']['p50_ms']:.2f} / {r['intended_to_handler_start']['p90_ms']:.2f} / "
                f"{r['intended_to_handler_start']['p99_ms']:.2f} / {r['intended_to_handler_start']['p999_ms']:.2f} / "
                f"{r['intended_to_handler_start']['max_ms']:.2f} ms**; enqueue→commit p50/p99/max {ms(r['enqueue_to_commit'])} ms; "
                f"enqueue→dispatch p50/p99/max {ms(r['enqueue_to_start'])} ms")
    return json.dumps(r)

def params(s, c):
    skip = {"controller", "workerctl_version", "agent_bin", "label"}
    return ", ".join(f"{k}={v}" for k, v in c.items() if k not in skip and v is not None)

store = "?"
print("| # | scenario | parameters | result | ok |")
print("|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "[0-9][0-9]-*.json"))):
    n = os.path.basename(path)[:2]
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        print(f"| {n} | {os.path.basename(path)[3:-5]} | | no result (see the output above) | no |")
        continue
    s, c, r = d["scenario"], d["config"], d["results"]
    store = d["server"]["store"]
    try:
        text = summary(s, c, r)
    except (KeyError, TypeError) as e:
        text = f"(missing {e})"
    ok = "yes" if d.get("ok") else "no: " + "; ".join(d.get("problems", []))
    print(f"| {n} | {s} | {params(s, c)} | {text} | {ok} |")
print()
print(f"store: {store}")
EOF
echo "json and logs: $WORK"
