-- Access control: API keys (read and write keys of a tenant, admin keys of the operator) and
-- share tokens (signed, expiring, read-only links to one tenant's reports).
-- Secrets are never stored: a key is kept as the SHA-256 of its full text, a share token only as
-- its id (the token itself is signed with SHARE_TOKEN_SECRET and checked against this row for
-- revocation). Both tables are small and read on every request: reference tables on Citus.

-- Each statement goes through EXECUTE: on Citus a table with a foreign key to a reference table
-- (tenants) is added to Citus's metadata at once, and Citus forwards the text of the command
-- to the workers, which refuse a multi-statement migration text as one command.
DO $tables$
BEGIN
    EXECUTE $ddl$
        CREATE TABLE api_keys (
            -- Public part of the key (rmk_<kind>_<key_id>_<secret>), safe to log and show.
            key_id       text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
            tenant_id    bigint REFERENCES tenants (tenant_id),
            kind         text NOT NULL CHECK (kind IN ('read', 'write', 'admin')),
            secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
            label        text NOT NULL DEFAULT '' CHECK (length(label) <= 200),
            created_at   timestamptz NOT NULL DEFAULT now(),
            revoked_at   timestamptz,
            -- Refreshed at most hourly (a write per request would be a distributed write on Citus).
            last_used_at timestamptz,
            -- Admin keys belong to no tenant; every other key to exactly one.
            CHECK ((kind = 'admin') = (tenant_id IS NULL))
        )
    $ddl$;
    EXECUTE $ddl$
        CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at)
    $ddl$;
    EXECUTE $ddl$
        CREATE TABLE share_tokens (
            token_id   text PRIMARY KEY CHECK (token_id ~ '^[0-9a-f]{16}$'),
            tenant_id  bigint NOT NULL REFERENCES tenants (tenant_id),
            -- Dimension filters fixed by the token, e.g. {"country": "DE"}; also inside the signed token.
            filters    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(filters) = 'object'),
            expires_at timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz,
            label      text NOT NULL DEFAULT '' CHECK (length(label) <= 200),
            CHECK (expires_at > created_at)
        )
    $ddl$;
    EXECUTE $ddl$
        CREATE INDEX share_tokens_tenant_idx ON share_tokens (tenant_id, created_at)
    $ddl$;
END
$tables$;

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_reference_table('api_keys');
        PERFORM create_reference_table('share_tokens');
    END IF;
END
$citus$;
