-- Key lifecycle: disable, canary and legacy flags, rotation links, last use.
ALTER TABLE keys ADD COLUMN disabled_at BIGINT;
ALTER TABLE keys ADD COLUMN canary BIGINT NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN legacy BIGINT NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN rotated_from TEXT;
ALTER TABLE keys ADD COLUMN rotated_to TEXT;
ALTER TABLE keys ADD COLUMN rotated_at BIGINT;
ALTER TABLE keys ADD COLUMN last_used_at BIGINT;

-- The audit log: append-only (triggers refuse UPDATE, DELETE and TRUNCATE).
CREATE TABLE audit (
    seq         BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
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
CREATE FUNCTION keyward_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION keyward_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION keyward_audit_append_only();

-- Usage counters per key, per minute, per outcome; written in batches.
CREATE TABLE usage (
    key_id      TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    minute      BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (key_id, minute, outcome)
);
CREATE INDEX usage_app_minute ON usage(app_id, minute);
