-- Limits per key and per app (IP allowlist, GCRA rate, quota), as JSON.
ALTER TABLE keys ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
ALTER TABLE apps ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
