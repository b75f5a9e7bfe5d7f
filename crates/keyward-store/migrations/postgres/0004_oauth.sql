-- OAuth 2.0 clients. Secrets are stored only as keyed digests, in their own table so that a
-- rotation can keep the previous secret valid for a grace period.
CREATE TABLE clients (
    id              TEXT PRIMARY KEY NOT NULL,
    app_id          TEXT NOT NULL REFERENCES apps(id),
    name            TEXT,
    scopes          TEXT NOT NULL,
    auth_method     TEXT NOT NULL,
    jwks            TEXT,
    token_ttl       BIGINT NOT NULL,
    options         TEXT NOT NULL DEFAULT '{}',
    policy          TEXT NOT NULL DEFAULT '{}',
    created_at      BIGINT NOT NULL,
    disabled_at     BIGINT
);
CREATE INDEX clients_app_id ON clients(app_id);

CREATE TABLE client_secrets (
    client_id       TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    digest          BYTEA NOT NULL UNIQUE,
    hint            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT
);
CREATE INDEX client_secrets_client ON client_secrets(client_id);

-- Token signing keys; private parts encrypted with the key-encryption key (AES-256-GCM).
CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    alg             TEXT NOT NULL,
    public_jwk      TEXT NOT NULL,
    private_sealed  BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    active_at       BIGINT NOT NULL,
    retired_at      BIGINT,
    remove_after    BIGINT
);

-- Revoked access tokens (by jti) until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti             TEXT PRIMARY KEY NOT NULL,
    expires_at      BIGINT NOT NULL
);

-- Seen client-assertion / DPoP jti values, for replay detection.
CREATE TABLE seen_jtis (
    scope           TEXT NOT NULL,
    jti             TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (scope, jti)
);
