-- Runs, their attempts and every state transition. Timestamps are Unix milliseconds (UTC).
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    job              TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         TEXT NOT NULL,
    payload          TEXT NOT NULL,
    trigger_kind     TEXT NOT NULL,
    scheduled_for    INTEGER,            -- nominal fire instant of a scheduled run
    created_at       INTEGER NOT NULL,
    not_before       INTEGER,            -- while scheduled: when it becomes ready
    ready_at         INTEGER,            -- when it last became queued (FIFO order)
    finished_at      INTEGER,
    attempt          INTEGER NOT NULL DEFAULT 0,  -- number of the current/last attempt
    max_attempts     INTEGER NOT NULL,            -- attempt number limit (renewed by dlq retry)
    reason           TEXT,
    workflow_id      TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
-- The same (job, nominal instant) never creates two runs.
CREATE UNIQUE INDEX runs_job_fire ON runs (job, scheduled_for) WHERE scheduled_for IS NOT NULL;
CREATE INDEX runs_state ON runs (state);
CREATE INDEX runs_job_created ON runs (job, created_at);
CREATE INDEX runs_created ON runs (created_at);

CREATE TABLE attempts (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    agent_id    TEXT NOT NULL,
    agent_name  TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT,
    exit_code   INTEGER,
    error       TEXT,
    output      TEXT,
    duration_ms INTEGER,
    PRIMARY KEY (run_id, attempt)
);

CREATE TABLE transitions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         INTEGER NOT NULL,
    reason     TEXT
);
CREATE INDEX transitions_run ON transitions (run_id);

-- Durable per-schedule cursor: the nominal instant of the last fire handled.
CREATE TABLE schedule_cursors (
    job        TEXT PRIMARY KEY,
    last_fired INTEGER NOT NULL,
    missed     INTEGER NOT NULL DEFAULT 0,
    skipped    INTEGER NOT NULL DEFAULT 0
);
