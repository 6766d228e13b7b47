-- Rollup slices: per tenant and bucket, the totals (dimension '') and each single dimension's
-- values (dimension 'country', value 'DE', ...). A dashboard's usual questions -- a tenant's
-- totals, one breakdown, one filter -- then read one row per bucket and value instead of
-- merging the sketches of every dimension combination of rollup_events_*, which measured
-- 114-195 ms per 30-day report of a tenant with 200,000 events (loadgen bench-reports).
-- Filter combinations still read rollup_events_*. Top lists are kept on the totals rows only
-- (a filtered top list reads rollup_events_*): merging TopN counters on every value's row made
-- the rollup several times slower with the SQL stand-in for TopN.

SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

CREATE TABLE rollup_slices_5min (
    tenant_id   bigint NOT NULL,
    bucket      timestamptz NOT NULL,
    dimension   text NOT NULL CHECK (dimension IN ('', 'event_type', 'country', 'browser', 'campaign')),
    value       text NOT NULL,
    event_count bigint NOT NULL,
    revenue     numeric NOT NULL,
    purchases   bigint NOT NULL,
    devices     hll NOT NULL,
    sessions    hll NOT NULL,
    top_devices jsonb,
    top_pages   jsonb,
    PRIMARY KEY (tenant_id, bucket, dimension, value)
);
CREATE TABLE rollup_slices_1hour (LIKE rollup_slices_5min INCLUDING ALL);
CREATE TABLE rollup_slices_1day (
    tenant_id   bigint NOT NULL,
    day         date NOT NULL,
    dimension   text NOT NULL CHECK (dimension IN ('', 'event_type', 'country', 'browser', 'campaign')),
    value       text NOT NULL,
    event_count bigint NOT NULL,
    revenue     numeric NOT NULL,
    purchases   bigint NOT NULL,
    devices     hll NOT NULL,
    sessions    hll NOT NULL,
    top_devices jsonb,
    top_pages   jsonb,
    PRIMARY KEY (tenant_id, day, dimension, value)
);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('rollup_slices_5min', 'tenant_id', colocate_with => 'events');
        PERFORM create_distributed_table('rollup_slices_1hour', 'tenant_id', colocate_with => 'events');
        PERFORM create_distributed_table('rollup_slices_1day', 'tenant_id', colocate_with => 'events');
    END IF;
END
$citus$;

-- What the rollups already hold, sliced: sums add up, sketches and counters are unions of the
-- same rows, so the slices start equal to aggregating the raw events.
INSERT INTO rollup_slices_5min
SELECT r.tenant_id, r.bucket, d.dimension, d.value, sum(r.event_count), sum(r.revenue),
       sum(r.purchases), hll_union_agg(r.devices), hll_union_agg(r.sessions),
       topn_union_agg(r.top_devices) FILTER (WHERE d.dimension = ''),
       topn_union_agg(r.top_pages) FILTER (WHERE d.dimension = '')
FROM rollup_events_5min r
CROSS JOIN LATERAL (VALUES ('', ''), ('event_type', r.event_type), ('country', r.country),
                           ('browser', r.browser), ('campaign', r.campaign)) AS d (dimension, value)
GROUP BY 1, 2, 3, 4;
INSERT INTO rollup_slices_1hour
SELECT r.tenant_id, r.bucket, d.dimension, d.value, sum(r.event_count), sum(r.revenue),
       sum(r.purchases), hll_union_agg(r.devices), hll_union_agg(r.sessions),
       topn_union_agg(r.top_devices) FILTER (WHERE d.dimension = ''),
       topn_union_agg(r.top_pages) FILTER (WHERE d.dimension = '')
FROM rollup_events_1hour r
CROSS JOIN LATERAL (VALUES ('', ''), ('event_type', r.event_type), ('country', r.country),
                           ('browser', r.browser), ('campaign', r.campaign)) AS d (dimension, value)
GROUP BY 1, 2, 3, 4;
INSERT INTO rollup_slices_1day
SELECT r.tenant_id, r.day, d.dimension, d.value, sum(r.event_count), sum(r.revenue),
       sum(r.purchases), hll_union_agg(r.devices), hll_union_agg(r.sessions),
       topn_union_agg(r.top_devices) FILTER (WHERE d.dimension = ''),
       topn_union_agg(r.top_pages) FILTER (WHERE d.dimension = '')
FROM rollup_events_1day r
CROSS JOIN LATERAL (VALUES ('', ''), ('event_type', r.event_type), ('country', r.country),
                           ('browser', r.browser), ('campaign', r.campaign)) AS d (dimension, value)
GROUP BY 1, 2, 3, 4;

-- The aggregation of one window into one slices table; parameters as rollup_statement's.
CREATE FUNCTION slices_statement(p_rollup text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $fn$
SELECT format($sql$
INSERT INTO %1$s AS r (tenant_id, %2$s, dimension, value,
                       event_count, revenue, purchases, devices, sessions, top_devices, top_pages)
SELECT e.tenant_id, %3$s, d.dimension, d.value,
       count(*), coalesce(sum(e.revenue), 0), count(*) FILTER (WHERE e.event_type = 'purchase'),
       hll_add_agg(hll_hash_bigint(e.device_id), 14, 5),
       hll_add_agg(hll_hash_bigint(e.session_id), 14, 5),
       topn_add_agg(e.device_id::text) FILTER (WHERE d.dimension = ''),
       topn_add_agg(CASE WHEN octet_length(left(split_part(e.page_url, '?', 1), 255)) <= 255
                         THEN left(split_part(e.page_url, '?', 1), 255)
                         ELSE left(split_part(e.page_url, '?', 1), 63) END)
           FILTER (WHERE d.dimension = '')
FROM events e %4$s
CROSS JOIN LATERAL (VALUES ('', ''), ('event_type', e.event_type),
                           ('country', coalesce(e.country, '')),
                           ('browser', coalesce(e.browser, '')),
                           ('campaign', coalesce(e.campaign, ''))) AS d (dimension, value)
WHERE e.event_id > $1 AND e.event_id <= $2
  AND e.event_time >= $3 AND e.event_time <= $4 AND e.event_time >= $5
GROUP BY 1, 2, 3, 4
ON CONFLICT (tenant_id, %2$s, dimension, value) DO UPDATE SET
    event_count = r.event_count + excluded.event_count,
    revenue = r.revenue + excluded.revenue,
    purchases = r.purchases + excluded.purchases,
    devices = coalesce(hll_union(r.devices, excluded.devices), r.devices, excluded.devices),
    sessions = coalesce(hll_union(r.sessions, excluded.sessions), r.sessions, excluded.sessions),
    top_devices = coalesce(topn_union(r.top_devices, excluded.top_devices), r.top_devices,
                           excluded.top_devices),
    top_pages = coalesce(topn_union(r.top_pages, excluded.top_pages), r.top_pages,
                         excluded.top_pages)
$sql$,
    t.target, t.key, t.bucket, t.joins)
FROM (VALUES
    ('5min', 'rollup_slices_5min', 'bucket',
     $b$date_bin('5 minutes', e.event_time, TIMESTAMPTZ 'epoch')$b$, ''),
    ('1hour', 'rollup_slices_1hour', 'bucket',
     $b$date_bin('1 hour', e.event_time, TIMESTAMPTZ 'epoch')$b$, ''),
    ('1day', 'rollup_slices_1day', 'day',
     '(e.event_time AT TIME ZONE t.time_zone)::date', 'JOIN tenants t ON t.tenant_id = e.tenant_id')
) AS t (rollup, target, key, bucket, joins)
WHERE t.rollup = p_rollup
$fn$;

-- advance_rollup as in V4, now also upserting the window into the rollup's slices, in the same
-- transaction as the rollup rows and the watermark.
CREATE OR REPLACE FUNCTION advance_rollup(p_rollup text,
    OUT rollup text, OUT window_start bigint, OUT window_end bigint,
    OUT min_event_time timestamptz, OUT max_event_time timestamptz, OUT rows_upserted bigint,
    OUT milliseconds double precision)
LANGUAGE plpgsql AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    keep interval;
    cutoff timestamptz := '-infinity';
    slice_rows bigint;
BEGIN
    rollup := p_rollup;
    rows_upserted := 0;
    SELECT s.last_event_id, s.retention INTO window_start, keep
    FROM rollup_state s WHERE s.rollup = p_rollup FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown rollup %', p_rollup USING ERRCODE = 'invalid_parameter_value';
    END IF;

    window_end := coalesce(pg_sequence_last_value('events_event_id_seq'), 0);
    IF window_end > window_start THEN
        BEGIN
            LOCK TABLE ONLY events IN EXCLUSIVE MODE;
            RAISE EXCEPTION 'writers drained' USING ERRCODE = 'RMK01';
        EXCEPTION WHEN SQLSTATE 'RMK01' THEN
            NULL;
        END;

        SELECT min(r.min_event_time), max(r.max_event_time)
        INTO min_event_time, max_event_time
        FROM event_id_ranges r
        WHERE r.id_ceiling > window_start AND r.id_floor < window_end;
        IF keep IS NOT NULL THEN
            -- Buckets older than the rollup keeps are not created again by late events.
            cutoff := now() - keep;
        END IF;
        -- No recorded range: only failed writers used these ids (or a writer did not record
        -- its range); scan every partition rather than risk missing a row.
        EXECUTE rollup_statement(p_rollup)
        USING window_start, window_end, coalesce(min_event_time, '-infinity'::timestamptz),
              coalesce(max_event_time, 'infinity'::timestamptz), cutoff;
        GET DIAGNOSTICS rows_upserted = ROW_COUNT;
        EXECUTE slices_statement(p_rollup)
        USING window_start, window_end, coalesce(min_event_time, '-infinity'::timestamptz),
              coalesce(max_event_time, 'infinity'::timestamptz), cutoff;
        GET DIAGNOSTICS slice_rows = ROW_COUNT;
        rows_upserted := rows_upserted + slice_rows;
    ELSE
        window_end := window_start;
    END IF;

    UPDATE rollup_state s
    SET last_event_id = window_end, last_run_at = now(), last_rows = rows_upserted
    WHERE s.rollup = p_rollup;
    milliseconds := extract(epoch FROM clock_timestamp() - started) * 1000;
END
$fn$;

-- apply_rollup_retention as in V4, slices included.
CREATE OR REPLACE FUNCTION apply_rollup_retention()
RETURNS TABLE (rollup text, rows_deleted bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    s record;
    slice_rows bigint;
BEGIN
    FOR s IN SELECT r.rollup, r.retention FROM rollup_state r ORDER BY r.position LOOP
        rollup := s.rollup;
        rows_deleted := 0;
        IF s.retention IS NOT NULL THEN
            EXECUTE CASE s.rollup
                WHEN '5min' THEN 'DELETE FROM rollup_events_5min WHERE bucket < $1'
                WHEN '1hour' THEN 'DELETE FROM rollup_events_1hour WHERE bucket < $1'
                WHEN '1day' THEN
                    'DELETE FROM rollup_events_1day WHERE day < ($1 AT TIME ZONE ''UTC'')::date - 1'
            END
            USING now() - s.retention;
            GET DIAGNOSTICS rows_deleted = ROW_COUNT;
            EXECUTE CASE s.rollup
                WHEN '5min' THEN 'DELETE FROM rollup_slices_5min WHERE bucket < $1'
                WHEN '1hour' THEN 'DELETE FROM rollup_slices_1hour WHERE bucket < $1'
                WHEN '1day' THEN
                    'DELETE FROM rollup_slices_1day WHERE day < ($1 AT TIME ZONE ''UTC'')::date - 1'
            END
            USING now() - s.retention;
            GET DIAGNOSTICS slice_rows = ROW_COUNT;
            rows_deleted := rows_deleted + slice_rows;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;
