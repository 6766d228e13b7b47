-- Stores ad spend reports (see spend.rs): $1..$8 the columns of the rows, one key each, in key
-- order; $9 the origin. A report replaces the stored figure only when it is later by
-- (reported_at, cost, currency); `revision` counts the replacements that changed the figure.
INSERT INTO ad_spend AS s (tenant_id, day, campaign, source, medium, cost, currency,
                           reported_at, origin)
SELECT r.tenant_id, r.day, r.campaign, r.source, r.medium, r.cost, r.currency, r.reported_at, $9
FROM unnest($1::bigint[], $2::date[], $3::text[], $4::text[], $5::text[], $6::numeric[],
            $7::text[], $8::timestamptz[])
     AS r (tenant_id, day, campaign, source, medium, cost, currency, reported_at)
ON CONFLICT (tenant_id, day, campaign, source, medium) DO UPDATE
SET cost = excluded.cost,
    currency = excluded.currency,
    reported_at = excluded.reported_at,
    origin = excluded.origin,
    revision = s.revision + CASE WHEN (excluded.cost, excluded.currency)
                                      IS DISTINCT FROM (s.cost, s.currency)
                                 THEN 1 ELSE 0 END,
    updated_at = now()
WHERE (excluded.reported_at, excluded.cost, excluded.currency COLLATE "C")
    > (s.reported_at, s.cost, s.currency COLLATE "C")
