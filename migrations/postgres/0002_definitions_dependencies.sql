-- PostgreSQL twin of migrations/sqlite/0002_definitions_dependencies.sql.

-- Job definitions (the --config directory is re-applied only when its text changed).
CREATE TABLE jobs (
    name       TEXT COLLATE "C" PRIMARY KEY,
    spec       TEXT NOT NULL,     -- the job's YAML mapping, defaults merged in, ${VARS} not interpolated
    source     TEXT NOT NULL,     -- config | api
    updated_at BIGINT NOT NULL
);

-- Text of the configuration file last applied, by file name.
CREATE TABLE applied_config (
    file       TEXT COLLATE "C" PRIMARY KEY,
    content    TEXT NOT NULL,
    applied_at BIGINT NOT NULL
);

-- Run-level dependencies: run_id waits for upstream_id to succeed. `seq` keeps
-- insertion order (SQLite uses its rowid for that).
CREATE TABLE run_dependencies (
    run_id      TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    upstream_id TEXT COLLATE "C" NOT NULL,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (run_id, upstream_id)
);
CREATE INDEX run_dependencies_upstream ON run_dependencies (upstream_id);
CREATE INDEX runs_workflow ON runs (workflow_id) WHERE workflow_id IS NOT NULL;

-- Idempotency keys of enqueues.
CREATE TABLE idempotency_keys (
    key        TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE runs ADD COLUMN idempotency_key TEXT;

-- Paused schedules.
CREATE TABLE schedule_pauses (
    job       TEXT COLLATE "C" PRIMARY KEY,
    paused_at BIGINT NOT NULL
);
