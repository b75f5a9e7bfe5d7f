-- Key lifecycle: disable, canary and legacy flags, rotation links, last use.
ALTER TABLE keys ADD COLUMN disabled_at INTEGER;
ALTER TABLE keys ADD COLUMN canary INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN legacy INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN rotated_from TEXT;
ALTER TABLE keys ADD COLUMN rotated_to TEXT;
ALTER TABLE keys ADD COLUMN rotated_at INTEGER;
ALTER TABLE keys ADD COLUMN last_used_at INTEGER;

-- The audit log: append-only (triggers refuse UPDATE and DELETE).
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    target      TEXT,
    source_ip   TEXT,
    details     TEXT NOT NULL
);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_target ON audit(target);
CREATE INDEX audit_kind ON audit(kind);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Usage counters per key, per minute, per outcome; written in batches.
CREATE TABLE usage (
    key_id      TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    minute      INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (key_id, minute, outcome)
) WITHOUT ROWID;
CREATE INDEX usage_app_minute ON usage(app_id, minute);
