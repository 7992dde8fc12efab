-- High availability needs PostgreSQL (docs/high-availability.md); on SQLite
-- the same tables exist so that the two schemas stay alike, and nothing uses
-- them: a controller on SQLite is the only one and never fences.
CREATE TABLE leader_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    epoch       INTEGER NOT NULL,
    holder      TEXT NOT NULL,
    address     TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
INSERT INTO leader_lease (id, epoch, holder, address, acquired_at, renewed_at, expires_at)
    VALUES (1, 0, '', '', 0, 0, 0);

CREATE TABLE leader_terms (
    epoch       INTEGER PRIMARY KEY,
    holder      TEXT NOT NULL,
    address     TEXT NOT NULL,
    acquired_at INTEGER NOT NULL
);

ALTER TABLE events ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
