-- The first key of a key's rotation chain: a successor's own rate and quota are counted
-- under it (NULL: the key's own id), so that rotating a key does not reset its limits.
ALTER TABLE keys ADD COLUMN limit_id TEXT;
