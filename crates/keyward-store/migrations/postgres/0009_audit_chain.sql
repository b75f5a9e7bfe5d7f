-- Tamper-evident audit log (keyward_core::audit): every event carries the SHA-256 of the event
-- before it (prev_hash) and its own hash over prev_hash and its canonical content. Events stored
-- before this migration have neither: they predate the chain (audit_head.legacy_seq).
ALTER TABLE audit ADD COLUMN prev_hash BYTEA;
ALTER TABLE audit ADD COLUMN hash BYTEA;

-- The head of the chain: the last event's seq and hash. Appending locks this row
-- (SELECT … FOR UPDATE) and updates it in the same transaction, so appends from every node
-- sharing the database are serialised and each event links to the one committed before it.
CREATE TABLE audit_head (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        BYTEA,
    legacy_seq  BIGINT NOT NULL
);
INSERT INTO audit_head (id, seq, hash, legacy_seq)
    SELECT 1, COALESCE(MAX(seq), 0), NULL, COALESCE(MAX(seq), 0) FROM audit;

-- Signed checkpoints of the chain (MAC under a key derived from the pepper). A `cut`
-- checkpoint at seq N is what allows retention to delete the events up to N; the others anchor
-- the chain between cuts.
CREATE TABLE audit_checkpoints (
    seq         BIGINT NOT NULL,
    cut         BIGINT NOT NULL CHECK (cut IN (0, 1)),
    hash        BYTEA NOT NULL,
    at          BIGINT NOT NULL,
    mac         BYTEA NOT NULL,
    PRIMARY KEY (seq, cut)
);
CREATE INDEX audit_checkpoints_cut ON audit_checkpoints(cut, seq);

-- The audit log stays append-only: UPDATE and TRUNCATE are refused as before; DELETE only of
-- events at or before the latest cut checkpoint (retention). Checkpoints are append-only too,
-- except those older than the latest cut (what they pin is gone or going).
CREATE OR REPLACE FUNCTION keyward_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.seq <= COALESCE((SELECT MAX(seq) FROM audit_checkpoints WHERE cut = 1), 0) THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'the audit log is append-only: only events up to a retention checkpoint may be deleted';
    END IF;
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE FUNCTION keyward_audit_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.seq < COALESCE((SELECT MAX(seq) FROM audit_checkpoints WHERE cut = 1), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit checkpoints are append-only';
END;
$$;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION keyward_audit_checkpoints_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION keyward_audit_checkpoints_append_only();
