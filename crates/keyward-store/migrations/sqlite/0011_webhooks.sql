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
    timeout_ms    INTEGER NOT NULL,
    max_attempts  INTEGER NOT NULL,
    backoff_ms    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    CHECK ((secret_env IS NULL) <> (secret_file IS NULL))
);
