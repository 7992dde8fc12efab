-- High availability (docs/high-availability.md): one leadership lease row
-- and the history of its terms. The leader holds the lease while it renews
-- it before `expires_at` (milliseconds on the database's clock); a standby
-- takes it only once it expired, raising `epoch` by one. Every write only
-- the leader may make first locks this row FOR SHARE and checks that the
-- epoch is still its own, so a write of a stale leader either commits before
-- the next epoch exists or is refused. Events record the epoch of the term
-- that wrote them (0: no leader election, a single controller).
CREATE TABLE leader_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    epoch       BIGINT NOT NULL,
    holder      TEXT NOT NULL,
    address     TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
INSERT INTO leader_lease (id, epoch, holder, address, acquired_at, renewed_at, expires_at)
    VALUES (1, 0, '', '', 0, 0, 0);

-- One row per term: who led from when (kept; a few rows per failover).
CREATE TABLE leader_terms (
    epoch       BIGINT PRIMARY KEY,
    holder      TEXT NOT NULL,
    address     TEXT NOT NULL,
    acquired_at BIGINT NOT NULL
);

ALTER TABLE events ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
