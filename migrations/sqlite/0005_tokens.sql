-- API tokens (docs/security.md). Only the SHA-256 hash of a secret is kept,
-- never the secret. A revoked token keeps its row: as long as any row exists,
-- the controller requires a token on every call.
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    -- admin | operator | viewer | enqueuer | agent
    role       TEXT NOT NULL,
    -- Hex SHA-256 of the secret.
    hash       TEXT NOT NULL UNIQUE,
    -- Unix ms.
    created_at INTEGER NOT NULL,
    -- Unix ms; NULL: never expires.
    expires_at INTEGER,
    -- Unix ms; NULL: not revoked.
    revoked_at INTEGER
);
