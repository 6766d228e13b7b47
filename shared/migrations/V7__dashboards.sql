-- Saved dashboards: several named layouts per tenant, edited in the web dashboard.
-- The layout is validated by the application (remarketable_core::dashboards) before it is
-- stored; `version` counts saves so that two analysts editing the same dashboard cannot
-- overwrite each other unknowingly (a save names the version it started from).
-- Tenant data like the events: distributed by tenant_id on Citus, co-located with events.
CREATE TABLE dashboards (
    tenant_id  bigint NOT NULL,
    name       text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,39}$'),
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 80),
    layout     jsonb NOT NULL CHECK (jsonb_typeof(layout) = 'object'),
    version    bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('dashboards', 'tenant_id', colocate_with => 'events');
    END IF;
END
$citus$;
