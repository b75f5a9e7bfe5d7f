-- Apps and keys. Keys are stored only as HMAC-SHA256(pepper, key) plus a display hint.
-- Mirrors migrations/sqlite/0001: timestamps are Unix seconds (BIGINT), JSON is TEXT.
CREATE TABLE apps (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE keys (
    id          TEXT PRIMARY KEY NOT NULL,
    app_id      TEXT NOT NULL REFERENCES apps(id),
    name        TEXT,
    digest      BYTEA NOT NULL UNIQUE,
    hint        TEXT NOT NULL,
    env         TEXT NOT NULL CHECK (env IN ('live', 'test')),
    scopes      TEXT NOT NULL,
    expires_at  BIGINT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE INDEX keys_app_id ON keys(app_id);
