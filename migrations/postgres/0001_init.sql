-- Runs, their attempts and every state transition. Timestamps are Unix milliseconds (UTC).
-- PostgreSQL twin of migrations/sqlite/0001_init.sql. Identifier columns use the "C"
-- collation so that ORDER BY on them is byte order, as in SQLite, whatever the
-- database's default collation is.
CREATE TABLE runs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    job              TEXT COLLATE "C" NOT NULL,
    state            TEXT NOT NULL,
    priority         TEXT NOT NULL,
    payload          TEXT NOT NULL,
    trigger_kind     TEXT NOT NULL,
    scheduled_for    BIGINT,             -- nominal fire instant of a scheduled run
    created_at       BIGINT NOT NULL,
    not_before       BIGINT,             -- while scheduled: when it becomes ready
    ready_at         BIGINT,             -- when it last became queued (FIFO order)
    finished_at      BIGINT,
    attempt          BIGINT NOT NULL DEFAULT 0,  -- number of the current/last attempt
    max_attempts     BIGINT NOT NULL,            -- attempt number limit (renewed by dlq retry)
    reason           TEXT,
    workflow_id      TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);
-- The same (job, nominal instant) never creates two runs.
CREATE UNIQUE INDEX runs_job_fire ON runs (job, scheduled_for) WHERE scheduled_for IS NOT NULL;
CREATE INDEX runs_state ON runs (state);
CREATE INDEX runs_job_created ON runs (job, created_at);
CREATE INDEX runs_created ON runs (created_at);

CREATE TABLE attempts (
    run_id      TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    agent_id    TEXT NOT NULL,
    agent_name  TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    outcome     TEXT,
    exit_code   INTEGER,
    error       TEXT,
    output      TEXT,
    duration_ms BIGINT,
    PRIMARY KEY (run_id, attempt)
);

CREATE TABLE transitions (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         BIGINT NOT NULL,
    reason     TEXT
);
CREATE INDEX transitions_run ON transitions (run_id);

-- Durable per-schedule cursor: the nominal instant of the last fire handled.
CREATE TABLE schedule_cursors (
    job        TEXT COLLATE "C" PRIMARY KEY,
    last_fired BIGINT NOT NULL,
    missed     BIGINT NOT NULL DEFAULT 0,
    skipped    BIGINT NOT NULL DEFAULT 0
);
