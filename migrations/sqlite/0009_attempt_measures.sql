-- What attempts reported about themselves (docs/executors.md#metrics-and-spans):
-- one row per (attempt, kind, name), written with the attempt's end. `job` and
-- `finished_at` are copied from the run and the attempt so that a job's daily
-- stats read this table alone; rows go with their run (retention, DLQ purge).
-- Attempts that report nothing write nothing here.
CREATE TABLE attempt_measures (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    job         TEXT NOT NULL,
    finished_at INTEGER NOT NULL,
    -- metric | span
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    -- A metric's value; a span's total time in microseconds.
    value       REAL NOT NULL,
    -- 1 for a metric; times the span was entered.
    count       INTEGER NOT NULL,
    -- 0 for a metric; the span's longest pass in microseconds.
    max_us      INTEGER NOT NULL,
    PRIMARY KEY (run_id, attempt, kind, name)
);

CREATE INDEX attempt_measures_job_finished ON attempt_measures (job, finished_at);

-- The day sums `metric_high` starts from when the controller starts.
CREATE INDEX attempt_measures_finished ON attempt_measures (finished_at);
