-- Schedule fires that could not be created (the scheduler retries them with
-- backoff while every other schedule keeps firing): one row per job that
-- has ever failed to fire.
CREATE TABLE schedule_failures (
    job          TEXT PRIMARY KEY,
    -- Failed tries in a row of the job's current fire; 0 once it fires again.
    failing      INTEGER NOT NULL,
    -- Failed tries ever.
    failed_total INTEGER NOT NULL,
    -- Nominal instant of the fire that failed last (Unix ms).
    fire_at      INTEGER NOT NULL,
    -- Why it failed last.
    last_error   TEXT NOT NULL,
    -- When it failed last (Unix ms).
    failed_at    INTEGER NOT NULL
);
