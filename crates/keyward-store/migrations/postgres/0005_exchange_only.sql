-- Keys that only work at the token endpoint (RFC 8693 exchange), never on an API route.
ALTER TABLE keys ADD COLUMN exchange_only BIGINT NOT NULL DEFAULT 0;
