-- Incremental rollups: 5-minute, hourly and daily aggregates of `events`, each advanced over
-- event_id windows (ARCHITECTURE.md invariant 5) by advance_rollup(), in the transaction that
-- moves its watermark. Called by the `rollup` timer function and schedulable by pg_cron
-- (infra/sql/pg_cron.sql).

SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

CREATE EXTENSION IF NOT EXISTS hll;

-- TopN: the extension where it is installed (Citus packages, managed Citus); elsewhere a SQL
-- stand-in with the same names, signatures and jsonb shape ({"item": count}, pruned to
-- topn.number_of_counters items by frequency). The stand-in counts every item of a group
-- exactly before pruning, so its counts are exact within one aggregation and estimates after
-- unions, like the extension's. To move to the extension later, drop these functions first.
DO $topn$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'topn') THEN
        EXECUTE 'CREATE EXTENSION IF NOT EXISTS topn';
        RETURN;
    END IF;

    -- How many items a counter keeps: the extension's setting, default 1000.
    EXECUTE $sql$
        CREATE FUNCTION topn_counters() RETURNS integer
        LANGUAGE sql STABLE AS
        'SELECT coalesce(nullif(current_setting(''topn.number_of_counters'', true), '''')::integer, 1000)'
    $sql$;

    -- Declared IMMUTABLE like the extension's functions, although the counter count is a
    -- setting: Citus accepts only immutable functions in an upsert's DO UPDATE SET. Each
    -- function is one statement that counts, orders and prunes at once: these run once per
    -- rollup row, and their per-call cost is most of what the stand-in costs a rollup.
    EXECUTE $sql$
        CREATE FUNCTION topn(jsonb, integer) RETURNS TABLE (item text, frequency bigint)
        LANGUAGE sql IMMUTABLE STRICT AS $fn$
            SELECT key, value::bigint FROM jsonb_each_text($1) ORDER BY 2 DESC, 1 LIMIT $2
        $fn$
    $sql$;

    -- Keeps the most frequent items (ties broken by item, so the result is deterministic).
    EXECUTE $sql$
        CREATE FUNCTION topn_prune(counts jsonb) RETURNS jsonb
        LANGUAGE sql IMMUTABLE AS $fn$
            SELECT coalesce(jsonb_object_agg(key, frequency), '{}'::jsonb)
            FROM (SELECT key, value::bigint AS frequency
                  FROM jsonb_each_text(counts)
                  ORDER BY 2 DESC, 1
                  LIMIT topn_counters()) kept
        $fn$
    $sql$;

    -- Adds the second counter's items into the first (a lookup each: rollup rows hold up to
    -- topn.number_of_counters items, and an upsert usually brings a few), and prunes only
    -- when the result holds more items than a counter keeps.
    EXECUTE $sql$
        CREATE FUNCTION topn_union(jsonb, jsonb) RETURNS jsonb
        LANGUAGE sql IMMUTABLE STRICT AS $fn$
            SELECT CASE WHEN (SELECT count(*) FROM jsonb_object_keys(merged)) <= topn_counters()
                        THEN merged ELSE topn_prune(merged) END
            FROM (SELECT $1 || coalesce((SELECT jsonb_object_agg(key, coalesce(($1 ->> key)::bigint, 0)
                                                                    + value::bigint)
                                         FROM jsonb_each_text($2)), '{}'::jsonb) AS merged) m
        $fn$
    $sql$;

    EXECUTE $sql$
        CREATE FUNCTION topn_add(jsonb, text) RETURNS jsonb
        LANGUAGE sql IMMUTABLE AS $fn$
            SELECT CASE WHEN $2 IS NULL THEN coalesce($1, '{}'::jsonb)
                        ELSE topn_union(coalesce($1, '{}'::jsonb), jsonb_build_object($2, 1))
                   END
        $fn$
    $sql$;

    -- The aggregates collect their inputs in an array (appending to an aggregate's array state
    -- is cheap) and count once at the end.
    EXECUTE $sql$
        CREATE FUNCTION topn_pack_items(items text[]) RETURNS jsonb
        LANGUAGE sql IMMUTABLE AS $fn$
            SELECT CASE
                WHEN cardinality(items) = 1 AND items[1] IS NOT NULL
                    THEN jsonb_build_object(items[1], 1)
                ELSE (SELECT coalesce(jsonb_object_agg(item, frequency), '{}'::jsonb)
                      FROM (SELECT item, count(*) AS frequency
                            FROM unnest(items) AS item
                            WHERE item IS NOT NULL
                            GROUP BY item
                            ORDER BY 2 DESC, 1
                            LIMIT topn_counters()) kept)
            END
        $fn$
    $sql$;
    EXECUTE $sql$
        CREATE AGGREGATE topn_add_agg(text) (
            SFUNC = array_append, STYPE = text[], FINALFUNC = topn_pack_items)
    $sql$;

    EXECUTE $sql$
        CREATE FUNCTION topn_pack_counters(counters jsonb[]) RETURNS jsonb
        LANGUAGE sql IMMUTABLE AS $fn$
            SELECT coalesce(jsonb_object_agg(key, total), '{}'::jsonb)
            FROM (SELECT e.key, sum(e.value::bigint) AS total
                  FROM unnest(counters) AS c (counter)
                  CROSS JOIN LATERAL jsonb_each_text(c.counter) AS e
                  GROUP BY e.key
                  ORDER BY 2 DESC, 1
                  LIMIT topn_counters()) kept
        $fn$
    $sql$;
    EXECUTE $sql$
        CREATE AGGREGATE topn_union_agg(jsonb) (
            SFUNC = array_append, STYPE = jsonb[], FINALFUNC = topn_pack_counters)
    $sql$;
END
$topn$;

-- Which event_id range each ingest transaction wrote, and the event times it held. A rollup
-- window bounds its scan of `events` by the times of the ranges it overlaps, so that it reads
-- only the partitions that received new events (event_id alone cannot prune time partitions).
-- Every writer of `events` records its range here in the same transaction (the ingest core
-- does). A range may be wider than the ids it covers: id_floor is read before the writer takes
-- its first id.
CREATE TABLE event_id_ranges (
    range_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id_floor       bigint NOT NULL,
    id_ceiling     bigint NOT NULL,
    min_event_time timestamptz NOT NULL,
    max_event_time timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (id_floor < id_ceiling AND min_event_time <= max_event_time)
);
CREATE INDEX event_id_ranges_ceiling_idx ON event_id_ranges (id_ceiling);

-- Events stored before this migration form one range.
INSERT INTO event_id_ranges (id_floor, id_ceiling, min_event_time, max_event_time)
SELECT min(event_id) - 1, max(event_id), min(event_time), max(event_time)
FROM events
HAVING count(*) > 0;

-- One row per rollup: its watermark (the last event_id it has aggregated), how long its rows are
-- kept (NULL: for ever) and what its last run did.
CREATE TABLE rollup_state (
    rollup         text PRIMARY KEY CHECK (rollup IN ('5min', '1hour', '1day')),
    position       smallint NOT NULL UNIQUE,
    last_event_id  bigint NOT NULL DEFAULT 0,
    retention      interval CHECK (retention > interval '0'),
    last_run_at    timestamptz,
    last_rows      bigint
);
INSERT INTO rollup_state (rollup, position, retention) VALUES
    ('5min', 1, interval '90 days'),
    ('1hour', 2, interval '2 years'),
    ('1day', 3, NULL);

-- Dimensions that an event lacks are stored as '' (key columns cannot hold NULL).
CREATE TABLE rollup_events_5min (
    tenant_id   bigint NOT NULL,
    bucket      timestamptz NOT NULL,
    event_type  text NOT NULL,
    country     text NOT NULL,
    browser     text NOT NULL,
    campaign    text NOT NULL,
    event_count bigint NOT NULL,
    revenue     numeric NOT NULL,
    purchases   bigint NOT NULL,
    devices     hll NOT NULL,
    sessions    hll NOT NULL,
    top_devices jsonb,
    top_pages   jsonb,
    PRIMARY KEY (tenant_id, bucket, event_type, country, browser, campaign)
);
CREATE TABLE rollup_events_1hour (LIKE rollup_events_5min INCLUDING ALL);
-- Days are the tenant's local calendar days (tenants.time_zone).
CREATE TABLE rollup_events_1day (
    tenant_id   bigint NOT NULL,
    day         date NOT NULL,
    event_type  text NOT NULL,
    country     text NOT NULL,
    browser     text NOT NULL,
    campaign    text NOT NULL,
    event_count bigint NOT NULL,
    revenue     numeric NOT NULL,
    purchases   bigint NOT NULL,
    devices     hll NOT NULL,
    sessions    hll NOT NULL,
    top_devices jsonb,
    top_pages   jsonb,
    PRIMARY KEY (tenant_id, day, event_type, country, browser, campaign)
);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('rollup_events_5min', 'tenant_id', colocate_with => 'events');
        PERFORM create_distributed_table('rollup_events_1hour', 'tenant_id', colocate_with => 'events');
        PERFORM create_distributed_table('rollup_events_1day', 'tenant_id', colocate_with => 'events');
    END IF;
END
$citus$;

-- The aggregation of one window into one rollup table. Static text per rollup (no identifier
-- comes from a caller); executed with EXECUTE so each run is planned with its own bounds and
-- prunes partitions at plan time. Parameters: $1 window start (exclusive), $2 window end
-- (inclusive), $3 and $4 the event times the window's ranges span, $5 the retention cutoff.
--
-- hll: log2m 14, regwidth 5, explicit on every call (session defaults do not reach Citus
-- workers); chosen by measurement, see README "Rollups". Top pages are the URL without its
-- query, cut to fit TopN's 255-byte items.
CREATE FUNCTION rollup_statement(p_rollup text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $fn$
SELECT format($sql$
INSERT INTO %1$s AS r (tenant_id, %2$s, event_type, country, browser, campaign,
                       event_count, revenue, purchases, devices, sessions, top_devices, top_pages)
SELECT e.tenant_id, %3$s, e.event_type,
       coalesce(e.country, ''), coalesce(e.browser, ''), coalesce(e.campaign, ''),
       count(*), coalesce(sum(e.revenue), 0), count(*) FILTER (WHERE e.event_type = 'purchase'),
       hll_add_agg(hll_hash_bigint(e.device_id), 14, 5),
       hll_add_agg(hll_hash_bigint(e.session_id), 14, 5),
       topn_add_agg(e.device_id::text),
       topn_add_agg(CASE WHEN octet_length(left(split_part(e.page_url, '?', 1), 255)) <= 255
                         THEN left(split_part(e.page_url, '?', 1), 255)
                         ELSE left(split_part(e.page_url, '?', 1), 63) END)
FROM events e %4$s
WHERE e.event_id > $1 AND e.event_id <= $2
  AND e.event_time >= $3 AND e.event_time <= $4 AND e.event_time >= $5
GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT (tenant_id, %2$s, event_type, country, browser, campaign) DO UPDATE SET
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
    ('5min', 'rollup_events_5min', 'bucket',
     $b$date_bin('5 minutes', e.event_time, TIMESTAMPTZ 'epoch')$b$, ''),
    ('1hour', 'rollup_events_1hour', 'bucket',
     $b$date_bin('1 hour', e.event_time, TIMESTAMPTZ 'epoch')$b$, ''),
    ('1day', 'rollup_events_1day', 'day',
     '(e.event_time AT TIME ZONE t.time_zone)::date', 'JOIN tenants t ON t.tenant_id = e.tenant_id')
) AS t (rollup, target, key, bucket, joins)
WHERE t.rollup = p_rollup
$fn$;

-- Advances one rollup by the window of events committed since its last run, in the caller's
-- transaction, and moves its watermark in that same transaction (so a window is aggregated
-- exactly once). Concurrent calls for the same rollup queue on its state row; the one that
-- waited then finds the window already done.
--
-- The window ends at the sequence's last value. Ids up to there may belong to transactions
-- still writing; a brief EXCLUSIVE lock on `events`, taken and released inside an exception
-- block, waits for them to finish (writers hold ROW EXCLUSIVE on the parent table, whichever
-- partition they write).
CREATE FUNCTION advance_rollup(p_rollup text,
    OUT rollup text, OUT window_start bigint, OUT window_end bigint,
    OUT min_event_time timestamptz, OUT max_event_time timestamptz, OUT rows_upserted bigint,
    OUT milliseconds double precision)
LANGUAGE plpgsql AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    keep interval;
    cutoff timestamptz := '-infinity';
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
    ELSE
        window_end := window_start;
    END IF;

    UPDATE rollup_state s
    SET last_event_id = window_end, last_run_at = now(), last_rows = rows_upserted
    WHERE s.rollup = p_rollup;
    milliseconds := extract(epoch FROM clock_timestamp() - started) * 1000;
END
$fn$;

-- Ranges every rollup has passed are no longer needed.
CREATE FUNCTION prune_event_id_ranges() RETURNS bigint
LANGUAGE sql AS $fn$
    WITH gone AS (
        DELETE FROM event_id_ranges
        WHERE id_ceiling <= (SELECT min(last_event_id) FROM rollup_state)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$fn$;

-- All rollups in order, each in its own transaction (for pg_cron: CALL run_rollups()).
CREATE PROCEDURE run_rollups()
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT s.rollup FROM rollup_state s ORDER BY s.position LOOP
        PERFORM advance_rollup(r.rollup);
        COMMIT;
    END LOOP;
    PERFORM prune_event_id_ranges();
    COMMIT;
END
$fn$;

-- Deletes rollup rows older than each rollup's retention; returns the rows deleted per rollup.
-- A day is deleted one day after its UTC date has passed the cutoff, so that no time zone's
-- day is cut short.
CREATE FUNCTION apply_rollup_retention()
RETURNS TABLE (rollup text, rows_deleted bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    s record;
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
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;
