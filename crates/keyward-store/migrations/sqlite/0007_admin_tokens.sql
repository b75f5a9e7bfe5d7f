-- Scoped admin tokens (besides the bootstrap token of the configuration): stored only as
-- HMAC-SHA256(pepper, token) plus a display hint, like keys.
CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('read', 'write')),
    digest      BLOB NOT NULL UNIQUE,
    hint        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    created_by  TEXT NOT NULL
);
