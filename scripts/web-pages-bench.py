#!/usr/bin/env python3
"""Page weight and speed of the web UI with a large store (docs/benchmarks.md).

Builds a store with 10,000 jobs (a scheduler.yaml: two thirds on a schedule, with
tags) and 1,000,000 finished runs spread over the last 100 days (each with one
attempt and two transitions), written straight into the SQLite file after the
controller has created its schema; then starts the controller on it and requests
every page of the UI, reporting per page: the HTML size, the size with its
assets (stylesheet and script), and the median and 90th percentile time to the
last byte over --repeat requests. Only the Python standard library is used.

    cargo build --release -p worker-controller
    python3 scripts/web-pages-bench.py [--jobs 10000] [--runs 1000000] [--repeat 20]

Measured, not a timed test: it prints numbers and fails nothing.
"""

import argparse
import http.client
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOUR_MS = 3_600_000


def write_config(directory, jobs):
    tags = ["billing", "crm", "reports", "sync", "backup", "mail"]
    with open(os.path.join(directory, "scheduler.yaml"), "w") as f:
        f.write("defaults:\n  timezone: Europe/Berlin\njobs:\n")
        for i in range(jobs):
            f.write(f"  job-{i:05d}:\n")
            f.write(f"    description: Job number {i} of the page benchmark\n")
            f.write(f"    tags: [{tags[i % len(tags)]}, {tags[(i * 7) % len(tags)]}]\n")
            if i % 3 != 0:
                f.write(f"    schedule: \"{i % 60} {i % 24} * * *\"\n")
            f.write("    shell: echo hello\n")


def start_controller(binary, directory, db, http_port, grpc_port):
    log = open(os.path.join(directory, "controller.log"), "w")
    proc = subprocess.Popen(
        [binary, "--config", directory, "--db", f"sqlite://{db}",
         "--grpc-listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the controller exited; see {directory}/controller.log")
        try:
            status, _, _ = get(http_port, "/readyz")
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("the controller did not become ready within 600 s")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def get(port, path, cookie=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Cookie": cookie} if cookie else {}
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    h = dict(r.getheaders())
    conn.close()
    return r.status, h, body


def fill_runs(db, jobs, runs):
    now = int(time.time() * 1000)
    span = 100 * 24 * HOUR_MS
    rnd = random.Random(7)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA journal_mode = WAL")
    batch = 50_000
    for start in range(0, runs, batch):
        run_rows, attempt_rows, transition_rows = [], [], []
        for n in range(start, min(runs, start + batch)):
            created = now - span + (n * span) // runs
            job = f"job-{n % jobs:05d}"
            r = rnd.random()
            state = "succeeded" if r < 0.95 else ("dead" if r < 0.99 else "cancelled")
            outcome = {"succeeded": "succeeded", "dead": "failed", "cancelled": "cancelled"}[state]
            duration = rnd.randint(20, 5000)
            started = created + rnd.randint(1, 500)
            finished = started + duration
            rid = f"01BENCH{n:019d}"
            run_rows.append((rid, job, state, "normal", "{}", "schedule" if n % 2 else "api",
                             None, created, None, created, finished, 1, 3,
                             None if state == "succeeded" else "exit code 1", None, 0))
            attempt_rows.append((rid, 1, "01BENCHAGENT", "bench-agent", started, finished, outcome,
                                 0 if state == "succeeded" else 1, None if state == "succeeded" else "exit code 1",
                                 "hello\n", duration))
            transition_rows.append((job, rid, None, "queued", created, None))
            transition_rows.append((job, rid, "running", state, finished, None))
        conn.executemany("INSERT INTO runs (id, job, state, priority, payload, trigger_kind, scheduled_for, created_at,"
                         " not_before, ready_at, finished_at, attempt, max_attempts, reason, workflow_id,"
                         " cancel_requested) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", run_rows)
        conn.executemany("INSERT INTO attempts (run_id, attempt, agent_id, agent_name, started_at, finished_at,"
                         " outcome, exit_code, error, output, duration_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         attempt_rows)
        # A run's transitions are its events of kind 'run' (migration 0008).
        conn.executemany("INSERT INTO events (kind, job, run_id, from_state, to_state, at, reason)"
                         " VALUES ('run',?,?,?,?,?,?)", transition_rows)
        conn.commit()
        print(f"  {min(runs, start + batch):,} runs written", file=sys.stderr)
    # The controller numbers its next events after the last one written here.
    conn.execute("UPDATE event_counter SET last_seq = (SELECT COALESCE(MAX(seq), 0) FROM events)")
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/worker-controller"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    directory = tempfile.mkdtemp(prefix="worker-web-bench-")
    db = os.path.join(directory, "worker.db")
    print(f"store: {args.jobs:,} jobs, {args.runs:,} runs in {directory}", file=sys.stderr)
    write_config(directory, args.jobs)
    http_port, grpc_port = free_port(), free_port()
    proc = start_controller(args.binary, directory, db, http_port, grpc_port)
    stop(proc)
    t = time.time()
    fill_runs(db, args.jobs, args.runs)
    print(f"  filled in {time.time() - t:.0f} s", file=sys.stderr)
    proc = start_controller(args.binary, directory, db, http_port, grpc_port)
    try:
        status, headers, _ = get(http_port, "/login")
        cookie = headers.get("set-cookie", "").split(";")[0]
        _, _, home = get(http_port, "/", cookie)
        assets = re.findall(rb'(?:href|src)="(/static/[^"]+)"', home)
        asset_bytes = sum(len(get(http_port, a.decode(), cookie)[2]) for a in assets)
        some_run = "01BENCH" + f"{args.runs - 1:019d}"
        pages = ["/", "/jobs", f"/jobs?page={args.jobs // 100}", "/jobs?tag=billing", "/jobs?q=job-0999",
                 "/jobs/job-00001", "/jobs/job-00001/edit", "/jobs/new",
                 "/jobs/preview?cron=30+2+*+*+*&timezone=Europe%2FBerlin",
                 "/runs", "/runs?job=job-00001", "/runs?state=dead", f"/runs/{some_run}",
                 "/queue", "/dlq", "/agents", "/alerts", "/alerts/history", "/login"]
        print(f"\n{'page':58} {'status':>6} {'HTML KB':>8} {'+assets KB':>10} {'p50 ms':>7} {'p90 ms':>7}")
        for page in pages:
            times = []
            size = 0
            status = 0
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                status, _, body = get(http_port, page, cookie)
                times.append((time.perf_counter() - t0) * 1000)
                size = len(body)
            times.sort()
            p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
            print(f"{page:58} {status:>6} {size / 1024:>8.1f} {(size + asset_bytes) / 1024:>10.1f}"
                  f" {statistics.median(times):>7.1f} {p90:>7.1f}")
    finally:
        stop(proc)
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
