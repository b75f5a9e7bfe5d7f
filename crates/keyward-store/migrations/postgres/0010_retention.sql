-- Retention ([retention] in the configuration).
--
-- Key tombstones: `revoked_keys` after a key's revocation or expiry its digest is removed
-- (digest NULL, purged_at set) and the record stays, so that the key can never verify again and
-- its id stays taken.
ALTER TABLE keys ALTER COLUMN digest DROP NOT NULL;
ALTER TABLE keys ADD COLUMN purged_at BIGINT;
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
