-- Durable, ordered lifecycle events (docs/architecture.md, "Events"): one row
-- per run transition and per schedule event (fired, missed, skipped, paused,
-- resumed). `seq` is assigned from `event_counter` in the transaction that
-- commits the event: the counter row stays locked until that commit, so
-- sequence numbers follow commit order even with concurrent writers, are
-- gapless at commit and are never reused, even after retention deletes old
-- events. An event of a run goes with its run.
CREATE TABLE events (
    seq        BIGINT PRIMARY KEY,
    -- run | schedule_fired | schedule_missed | schedule_skipped | schedule_paused | schedule_resumed
    kind       TEXT NOT NULL,
    job        TEXT COLLATE "C" NOT NULL,
    run_id     TEXT COLLATE "C" REFERENCES runs (id) ON DELETE CASCADE,
    from_state TEXT,
    to_state   TEXT,
    attempt    BIGINT NOT NULL DEFAULT 0,
    at         BIGINT NOT NULL,
    reason     TEXT,
    -- Fires a missed/skipped event stands for (1 otherwise).
    count      BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX events_run ON events (run_id);
CREATE INDEX events_job_seq ON events (job, seq);

-- The last sequence number handed out (one row).
CREATE TABLE event_counter (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL
);

-- The history recorded before events existed becomes events, in transition
-- order (their attempt numbers were not recorded: 0).
INSERT INTO events (seq, kind, job, run_id, from_state, to_state, attempt, at, reason)
    SELECT t.seq, 'run', r.job, t.run_id, t.from_state, t.to_state, 0, t.at, t.reason
    FROM transitions t JOIN runs r ON r.id = t.run_id;
INSERT INTO event_counter (id, last_seq) SELECT 1, COALESCE(MAX(seq), 0) FROM events;
