-- Webhooks managed at run time (admin API, `keyward apply`), besides the static [[webhooks]]
-- of the configuration file. The signing secret is never stored: only where each node reads
-- it (the name of an environment variable, or the path of a 0600 file).
CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL UNIQUE,
    url           TEXT NOT NULL,
    secret_env    TEXT,
    secret_file   TEXT,
    events        TEXT NOT NULL,
    timeout_ms    BIGINT NOT NULL,
    max_attempts  BIGINT NOT NULL,
    backoff_ms    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    CHECK ((secret_env IS NULL) <> (secret_file IS NULL))
);
