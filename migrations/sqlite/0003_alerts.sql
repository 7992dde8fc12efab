-- Alerting (design §9): channels and rules as last saved (from alerts.yaml or the
-- API), and the history of every alert's outcome per channel.

-- Channels by name: the channel's YAML mapping as written (${VARS} not interpolated).
CREATE TABLE alert_channels (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Rules in their order (`position`, from 0): the rule's YAML mapping as written.
CREATE TABLE alert_rules (
    name       TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    spec       TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- One alert's outcome for one channel.
CREATE TABLE alert_history (
    id       TEXT PRIMARY KEY,    -- ULID of this row
    alert_id TEXT NOT NULL,       -- the alert's id, shared by the rows of its channels
    at       INTEGER NOT NULL,    -- when the outcome was recorded
    kind     TEXT NOT NULL,       -- alert | summary | test
    event    TEXT,                -- NULL for a test
    rule     TEXT,                -- NULL for a test
    channel  TEXT NOT NULL,
    job      TEXT,
    run_id   TEXT,
    status   TEXT NOT NULL,       -- sent | failed | suppressed
    attempts INTEGER NOT NULL,    -- delivery attempts made
    answer   TEXT NOT NULL,       -- the channel's answer or the error
    title    TEXT NOT NULL
);
-- Newest first, and pruning by age.
CREATE INDEX alert_history_at ON alert_history (at DESC, id DESC);
-- Newest first of one rule / one job.
CREATE INDEX alert_history_rule ON alert_history (rule, at DESC, id DESC) WHERE rule IS NOT NULL;
CREATE INDEX alert_history_job ON alert_history (job, at DESC, id DESC) WHERE job IS NOT NULL;
