-- Tamper-evident audit log (keyward_core::audit): every event carries the SHA-256 of the event
-- before it (prev_hash) and its own hash over prev_hash and its canonical content. Events stored
-- before this migration have neither: they predate the chain (audit_head.legacy_seq).
ALTER TABLE audit ADD COLUMN prev_hash BLOB;
ALTER TABLE audit ADD COLUMN hash BLOB;

-- The head of the chain: the last event's seq and hash, read and updated in the transaction
-- that appends an event (which also takes the write lock first), so appends are serialised.
CREATE TABLE audit_head (
    id          INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq         INTEGER NOT NULL,
    hash        BLOB,
    legacy_seq  INTEGER NOT NULL
);
INSERT INTO audit_head (id, seq, hash, legacy_seq)
    SELECT 1, COALESCE(MAX(seq), 0), NULL, COALESCE(MAX(seq), 0) FROM audit;

-- Signed checkpoints of the chain (MAC under a key derived from the pepper). A `cut`
-- checkpoint at seq N is what allows retention to delete the events up to N; the others anchor
-- the chain between cuts.
CREATE TABLE audit_checkpoints (
    seq         INTEGER NOT NULL,
    cut         INTEGER NOT NULL CHECK (cut IN (0, 1)),
    hash        BLOB NOT NULL,
    at          INTEGER NOT NULL,
    mac         BLOB NOT NULL,
    PRIMARY KEY (seq, cut)
) WITHOUT ROWID;
CREATE INDEX audit_checkpoints_cut ON audit_checkpoints(cut, seq);

-- The audit log stays append-only: UPDATE is refused as before; DELETE only of events at or
-- before the latest cut checkpoint (retention). Checkpoints are append-only too, except those
-- older than the latest cut (what they pin is gone or going).
DROP TRIGGER audit_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    WHEN OLD.seq > COALESCE((SELECT MAX(seq) FROM audit_checkpoints WHERE cut = 1), 0)
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: only events up to a retention checkpoint may be deleted');
END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    WHEN OLD.seq >= COALESCE((SELECT MAX(seq) FROM audit_checkpoints WHERE cut = 1), 0)
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only: only those older than the latest cut may be deleted');
END;
