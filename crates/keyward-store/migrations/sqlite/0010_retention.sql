-- Retention ([retention] in the configuration).
--
-- Key tombstones: `revoked_keys` after a key's revocation or expiry its digest is removed
-- (digest NULL, purged_at set) and the record stays, so that the key can never verify again and
-- its id stays taken. SQLite cannot drop a NOT NULL constraint: the table is rebuilt (nothing
-- references keys, so the rebuild touches no other table).
CREATE TABLE keys_new (
    id              TEXT PRIMARY KEY NOT NULL,
    app_id          TEXT NOT NULL REFERENCES apps(id),
    name            TEXT,
    digest          BLOB UNIQUE,
    hint            TEXT NOT NULL,
    env             TEXT NOT NULL CHECK (env IN ('live', 'test')),
    scopes          TEXT NOT NULL,
    expires_at      INTEGER,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    policy          TEXT NOT NULL DEFAULT '{}',
    disabled_at     INTEGER,
    canary          INTEGER NOT NULL DEFAULT 0,
    legacy          INTEGER NOT NULL DEFAULT 0,
    rotated_from    TEXT,
    rotated_to      TEXT,
    rotated_at      INTEGER,
    last_used_at    INTEGER,
    exchange_only   INTEGER NOT NULL DEFAULT 0,
    limit_id        TEXT,
    purged_at       INTEGER
);
INSERT INTO keys_new (id, app_id, name, digest, hint, env, scopes, expires_at, created_at, revoked_at, policy,
    disabled_at, canary, legacy, rotated_from, rotated_to, rotated_at, last_used_at, exchange_only, limit_id)
    SELECT id, app_id, name, digest, hint, env, scopes, expires_at, created_at, revoked_at, policy,
    disabled_at, canary, legacy, rotated_from, rotated_to, rotated_at, last_used_at, exchange_only, limit_id
    FROM keys;
DROP TABLE keys;
ALTER TABLE keys_new RENAME TO keys;
CREATE INDEX keys_app_id ON keys(app_id);
-- What the retention job looks for, in small batches: keys still holding a digest that were
-- revoked or expired long enough ago, and tombstones.
CREATE INDEX keys_revoked_live ON keys(revoked_at) WHERE digest IS NOT NULL AND revoked_at IS NOT NULL;
CREATE INDEX keys_expired_live ON keys(expires_at) WHERE digest IS NOT NULL AND expires_at IS NOT NULL;
CREATE INDEX keys_purged_at ON keys(purged_at) WHERE purged_at IS NOT NULL;

-- Usage rows by minute (retention deletes the oldest minutes).
CREATE INDEX usage_minute ON usage(minute);

-- Token denylist entries and seen one-time jtis are useless once expired: retention deletes them.
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens(expires_at);
CREATE INDEX seen_jtis_expires_at ON seen_jtis(expires_at);
