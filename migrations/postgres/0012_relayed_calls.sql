-- Calls a standby accepted for the leader (docs/high-availability.md,
-- "What a standby answers"). A standby writes the gRPC request as it came
-- (path, headers without the token, framed body) with the name of the token
-- it authenticated, and NOTIFYs `worker_relay`; the leader claims pending
-- rows (a fenced write: only the leading epoch claims), runs each through its
-- own services as that token, writes the gRPC answer and NOTIFYs
-- `worker_relay_done` with the id. A standby withdraws a call no leader
-- claimed in time, so a call either runs once or not at all.
CREATE TABLE relayed_calls (
    id                BIGSERIAL PRIMARY KEY,
    method            TEXT NOT NULL,    -- /worker.v1.ControllerService/Enqueue
    caller            TEXT NOT NULL,    -- the token's name; '' for the anonymous admin
    standby           TEXT NOT NULL,    -- the --ha-id of the standby that took it
    request_headers   TEXT NOT NULL,    -- JSON [[name, value], ...]
    request_body      BYTEA NOT NULL,   -- the gRPC-framed request
    state             TEXT NOT NULL,    -- pending | running | done | withdrawn
    created_at        BIGINT NOT NULL,  -- Unix ms, database clock (so are the others)
    claimed_epoch     BIGINT,           -- the leader's epoch that ran it
    claimed_at        BIGINT,
    response_headers  TEXT,             -- JSON [[name, value], ...]
    response_body     BYTEA,
    response_trailers TEXT,             -- JSON [[name, value], ...]
    finished_at       BIGINT
);
CREATE INDEX relayed_calls_pending ON relayed_calls (id) WHERE state = 'pending';
CREATE INDEX relayed_calls_created ON relayed_calls (created_at);
