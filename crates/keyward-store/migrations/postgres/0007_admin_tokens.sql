-- Scoped admin tokens (besides the bootstrap token of the configuration): stored only as
-- HMAC-SHA256(pepper, token) plus a display hint, like keys.
CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('read', 'write')),
    digest      BYTEA NOT NULL UNIQUE,
    hint        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    created_by  TEXT NOT NULL
);
