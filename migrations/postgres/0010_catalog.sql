-- The job catalog this controller hosts (docs/catalog.md): published packs,
-- their files, and the ratings and reviews of packs it serves.
CREATE TABLE catalog_packs (
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    -- The pack.yaml text as published.
    manifest     TEXT NOT NULL,
    -- Hex SHA-256 of the manifest (which lists every file's digest): a
    -- re-publish of the same (name, version) must carry the same one.
    digest       TEXT NOT NULL,
    description  TEXT NOT NULL,
    author       TEXT NOT NULL,
    -- Unix ms.
    published_at BIGINT NOT NULL,
    -- The publishing token's name ("anonymous" without authentication).
    publisher    TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE catalog_files (
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    path    TEXT NOT NULL,
    content BYTEA NOT NULL,
    -- Hex SHA-256 of content.
    sha256  TEXT NOT NULL,
    PRIMARY KEY (name, version, path),
    FOREIGN KEY (name, version) REFERENCES catalog_packs (name, version) ON DELETE CASCADE
);

-- One row per (pack, token, via): a new rating or review replaces the old.
CREATE TABLE catalog_reviews (
    pack       TEXT NOT NULL,
    token      TEXT NOT NULL,
    -- The caller's token name on the controller that forwarded it; '' direct.
    via        TEXT NOT NULL DEFAULT '',
    -- 1 to 5; NULL: no rating yet.
    rating     INTEGER,
    -- NULL: no review yet.
    review     TEXT,
    -- Unix ms.
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (pack, token, via)
);
