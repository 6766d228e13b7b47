-- collect's limits (issue 15): per-tenant overrides of the rate and daily-quota settings, the
-- origins a write key may be used from, and the daily usage that quotas are counted against and
-- the ingest report shows.
--
-- One statement per EXECUTE, as in V5: Citus propagates each command on its own.
DO $collect$
BEGIN
    -- NULL keeps the setting (COLLECT_EVENTS_PER_SECOND_PER_TENANT and the others); 0 lifts
    -- the limit for this tenant. Constraints named and added on their own: Citus refuses a
    -- column added to a reference table together with an unnamed constraint.
    EXECUTE $ddl$ALTER TABLE tenants
        ADD COLUMN collect_events_per_second integer,
        ADD COLUMN collect_events_per_day bigint,
        ADD COLUMN collect_key_events_per_second integer,
        ADD COLUMN collect_key_events_per_day bigint$ddl$;
    EXECUTE $ddl$ALTER TABLE tenants ADD CONSTRAINT tenants_collect_limits_check
        CHECK (collect_events_per_second >= 0 AND collect_events_per_day >= 0
               AND collect_key_events_per_second >= 0 AND collect_key_events_per_day >= 0)$ddl$;
    -- Origins (scheme://host[:port], lower case) a write key is accepted from when a browser
    -- names one in Origin or Referer; NULL: any. Requests naming no origin (servers) pass.
    EXECUTE $ddl$ALTER TABLE api_keys ADD COLUMN allowed_origins text[]$ddl$;
    EXECUTE $ddl$ALTER TABLE api_keys ADD CONSTRAINT api_keys_allowed_origins_check
        CHECK (allowed_origins IS NULL OR kind = 'write')$ddl$;
    -- Events and requests per write key and UTC day. Refusals count requests.
    EXECUTE $ddl$
        CREATE TABLE collect_usage (
            tenant_id         bigint NOT NULL,
            day               date NOT NULL,
            key_id            text NOT NULL,
            accepted_events   bigint NOT NULL DEFAULT 0,
            accepted_requests bigint NOT NULL DEFAULT 0,
            refused_rate      bigint NOT NULL DEFAULT 0,
            refused_quota     bigint NOT NULL DEFAULT 0,
            refused_origin    bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant_id, day, key_id)
        )
    $ddl$;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('collect_usage', 'tenant_id', colocate_with => 'events');
    END IF;
END
$collect$;
