-- Job definitions (the --config directory is re-applied only when its text changed).
CREATE TABLE jobs (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,     -- the job's YAML mapping, defaults merged in, ${VARS} not interpolated
    source     TEXT NOT NULL,     -- config | api
    updated_at INTEGER NOT NULL
);

-- Text of the configuration file last applied, by file name.
CREATE TABLE applied_config (
    file       TEXT PRIMARY KEY,
    content    TEXT NOT NULL,
    applied_at INTEGER NOT NULL
);

-- Run-level dependencies: run_id waits for upstream_id to succeed.
CREATE TABLE run_dependencies (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    upstream_id TEXT NOT NULL,
    PRIMARY KEY (run_id, upstream_id)
);
CREATE INDEX run_dependencies_upstream ON run_dependencies (upstream_id);
CREATE INDEX runs_workflow ON runs (workflow_id) WHERE workflow_id IS NOT NULL;

-- Idempotency keys of enqueues.
CREATE TABLE idempotency_keys (
    key        TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
ALTER TABLE runs ADD COLUMN idempotency_key TEXT;

-- Paused schedules.
CREATE TABLE schedule_pauses (
    job       TEXT PRIMARY KEY,
    paused_at INTEGER NOT NULL
);
