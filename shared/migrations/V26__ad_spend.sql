-- Ad spend (issue 14): what ad platforms report a campaign cost a tenant per day, one row per
-- (tenant, day, campaign, source, medium) holding the latest figure. It arrives as `ad_spend`
-- events on the stream (written by ingest in the batch's transaction, so exactly once with the
-- batch's position) or as a CSV upload (`remarketable spend import`, the admin route).
--
-- A figure replaces the stored one when it was reported later: `reported_at` is the event's
-- event_time, or the upload's transaction time. Reports of the same time are ordered by
-- (cost, currency), so the same figures in any arrival order leave the same row.
CREATE TABLE ad_spend (
    tenant_id   bigint NOT NULL,
    -- The tenant's calendar day (tenants.time_zone) the cost was spent on.
    day         date NOT NULL,
    campaign    text NOT NULL CHECK (campaign <> ''),
    -- '' where the platform gave none, as touches store them.
    source      text NOT NULL,
    medium      text NOT NULL,
    cost        numeric(18, 4) NOT NULL CHECK (cost >= 0),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    reported_at timestamptz NOT NULL,
    origin      text NOT NULL CHECK (origin IN ('stream', 'upload')),
    -- 1 when first stored; one more for every later report that changed cost or currency.
    revision    integer NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day, campaign, source, medium)
);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('ad_spend', 'tenant_id', colocate_with => 'events');
    END IF;
END
$citus$;
