-- Apps and keys. Keys are stored only as HMAC-SHA256(pepper, key) plus a display hint.
CREATE TABLE apps (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE keys (
    id          TEXT PRIMARY KEY NOT NULL,
    app_id      TEXT NOT NULL REFERENCES apps(id),
    name        TEXT,
    digest      BLOB NOT NULL UNIQUE,
    hint        TEXT NOT NULL,
    env         TEXT NOT NULL CHECK (env IN ('live', 'test')),
    scopes      TEXT NOT NULL,
    expires_at  INTEGER,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE INDEX keys_app_id ON keys(app_id);
