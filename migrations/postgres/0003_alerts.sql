-- PostgreSQL twin of migrations/sqlite/0003_alerts.sql. Identifier columns use
-- the "C" collation so that ORDER BY on them is byte order, as in SQLite.

-- Channels by name: the channel's YAML mapping as written (${VARS} not interpolated).
CREATE TABLE alert_channels (
    name       TEXT COLLATE "C" PRIMARY KEY,
    spec       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Rules in their order (`position`, from 0): the rule's YAML mapping as written.
CREATE TABLE alert_rules (
    name       TEXT COLLATE "C" PRIMARY KEY,
    position   BIGINT NOT NULL,
    spec       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One alert's outcome for one channel.
CREATE TABLE alert_history (
    id       TEXT COLLATE "C" PRIMARY KEY,  -- ULID of this row
    alert_id TEXT COLLATE "C" NOT NULL,     -- the alert's id, shared by the rows of its channels
    at       BIGINT NOT NULL,               -- when the outcome was recorded
    kind     TEXT NOT NULL,                 -- alert | summary | test
    event    TEXT,                          -- NULL for a test
    rule     TEXT COLLATE "C",              -- NULL for a test
    channel  TEXT COLLATE "C" NOT NULL,
    job      TEXT COLLATE "C",
    run_id   TEXT COLLATE "C",
    status   TEXT NOT NULL,                 -- sent | failed | suppressed
    attempts BIGINT NOT NULL,               -- delivery attempts made
    answer   TEXT NOT NULL,                 -- the channel's answer or the error
    title    TEXT NOT NULL
);
-- Newest first, and pruning by age.
CREATE INDEX alert_history_at ON alert_history (at DESC, id DESC);
-- Newest first of one rule / one job.
CREATE INDEX alert_history_rule ON alert_history (rule, at DESC, id DESC) WHERE rule IS NOT NULL;
CREATE INDEX alert_history_job ON alert_history (job, at DESC, id DESC) WHERE job IS NOT NULL;
