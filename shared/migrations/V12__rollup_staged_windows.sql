-- Rollups in one pass per window (issue 19). Until now each of the three rollups read its window
-- of events twice (rows and slices) and every rollup row merged its TopN counters through a
-- function call in ON CONFLICT: measured with perf on a 100,000-event window, 65 % of the
-- backend's time ran inside SQL-language function calls (the TopN stand-in), a fifth of it
-- decompressing the same stored counter once per item looked up in it.
--
-- Now advance_rollups() locks every rollup's state row, reads the window's events once (one
-- partition-pruned scan, one join with tenants) into two staging tables -- the events with every
-- key the rollups need computed (5-minute bucket, tenant-local day, dimensions) and their sketch
-- inputs hashed, and the TopN items counted exactly per such group -- and fills the six rollup
-- tables from them. 1-hour buckets group the staged 5-minute ones, days are the local day each
-- event was staged with. TopN counters are merged set-based inside the INSERT .. SELECT (the
-- stored counter is read once per row by an index probe, each window item looked up in it, the
-- result pruned only when it overflows), so no SQL function runs per rollup row. Watermarks move
-- in the same transaction; the staging tables are emptied before it commits. Semantics are
-- unchanged: sums add, sketches are built from the same hashes and unioned with the stored ones,
-- a counter is the stored counter plus the window's exact counts pruned to
-- topn.number_of_counters by frequency (ties by item), as the stand-in's topn_union did, and with
-- the topn extension installed the rollups compute the same jsonb themselves.

SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

-- The window's events, each with the keys every rollup needs computed once (5-minute bucket,
-- tenant-local day, dimensions with '' for missing) and its sketch inputs hashed. in_5min /
-- in_1hour / in_1day: whether the event feeds that rollup in this pass (the rollup is advanced
-- in it and the event is within its retention). Unlogged: the rows live only inside an
-- advancing transaction.
CREATE UNLOGGED TABLE rollup_stage (
    tenant_id   bigint NOT NULL,
    bucket      timestamptz NOT NULL,
    day         date NOT NULL,
    in_5min     boolean NOT NULL,
    in_1hour    boolean NOT NULL,
    in_1day     boolean NOT NULL,
    event_type  text NOT NULL,
    country     text NOT NULL,
    browser     text NOT NULL,
    campaign    text NOT NULL,
    revenue     numeric,
    device      hll_hashval NOT NULL,
    session     hll_hashval NOT NULL
);
-- The TopN items of the same events counted exactly per tenant, bucket, day, flags and
-- dimensions: list 'd' devices, 'p' pages.
CREATE UNLOGGED TABLE rollup_stage_items (
    tenant_id   bigint NOT NULL,
    bucket      timestamptz NOT NULL,
    day         date NOT NULL,
    in_5min     boolean NOT NULL,
    in_1hour    boolean NOT NULL,
    in_1day     boolean NOT NULL,
    event_type  text NOT NULL,
    country     text NOT NULL,
    browser     text NOT NULL,
    campaign    text NOT NULL,
    list        "char" NOT NULL,
    item        text NOT NULL,
    n           bigint NOT NULL
);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        -- Logged on Citus: distributed like the rollups so that every statement of a window
        -- stays a colocated INSERT .. SELECT pushed down to the shards.
        EXECUTE 'ALTER TABLE rollup_stage SET LOGGED';
        EXECUTE 'ALTER TABLE rollup_stage_items SET LOGGED';
        PERFORM create_distributed_table('rollup_stage', 'tenant_id', colocate_with => 'events');
        PERFORM create_distributed_table('rollup_stage_items', 'tenant_id', colocate_with => 'events');
    END IF;
END
$citus$;

-- Sketches are stored without compression: hll registers hardly compress, and trying cost 6 %
-- of a window's time in pglz_compress (perf). Applies to values written from now on.
-- Citus refuses SET STORAGE on a distributed table ("alter table command is currently
-- unsupported"): there it is set on the coordinator's table alone, without propagation, and on
-- every shard by run_command_on_shards.
DO $storage$
DECLARE
    t text;
    alter_columns constant text := 'ALTER TABLE %s ALTER COLUMN devices SET STORAGE EXTERNAL, '
                                   'ALTER COLUMN sessions SET STORAGE EXTERNAL';
BEGIN
    FOREACH t IN ARRAY ARRAY['rollup_events_5min', 'rollup_events_1hour', 'rollup_events_1day',
                             'rollup_slices_5min', 'rollup_slices_1hour', 'rollup_slices_1day'] LOOP
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
            PERFORM set_config('citus.enable_ddl_propagation', 'off', true);
            EXECUTE format(alter_columns, quote_ident(t));
            PERFORM set_config('citus.enable_ddl_propagation', 'on', true);
            PERFORM run_command_on_shards(t, alter_columns);
        ELSE
            EXECUTE format(alter_columns, quote_ident(t));
        END IF;
    END LOOP;
END
$storage$;

-- How many items a TopN counter keeps: the extension's setting (default 1000), read once per
-- window and passed to the statements as a parameter.
CREATE FUNCTION rollup_topn_counters() RETURNS integer
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(nullif(current_setting('topn.number_of_counters', true), '')::integer, 1000)
$fn$;

-- A counter that holds more than k items, cut to its k most frequent (ties: by item). Called
-- only for counters that overflow. Few items to drop: deleted by key from the counter as it is;
-- many: the kept items are aggregated again.
CREATE FUNCTION rollup_topn_prune(counter jsonb, k integer) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT AS $fn$
    SELECT CASE
        WHEN n.items <= k THEN counter
        WHEN n.items - k <= 64 THEN
            counter - ARRAY(SELECT key FROM jsonb_each(counter)
                            ORDER BY value::bigint, key DESC LIMIT n.items - k)
        ELSE (SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb)
              FROM (SELECT key, value FROM jsonb_each(counter)
                    ORDER BY value::bigint DESC, key LIMIT k) kept)
    END
    FROM (SELECT count(*) AS items FROM jsonb_object_keys(counter)) n
$fn$;

-- The statements of one pass. Stage statements' parameters: $1 window start (exclusive), $2
-- window end, $3 and $4 the event times its ranges span, $5, $6, $7 the cutoffs of 5min, 1hour
-- and 1day ('infinity': not advanced in this pass). Apply statements (p_part 'rows' or
-- 'slices' of rollup p_rollup): $1 the items a counter keeps.
--
-- Merging a counter: `stored` is the stored counter, looked up by key and detoasted once per
-- row (array_agg detoasts, and as an aggregate it keeps the planner from substituting the
-- expression into every reference: looking items up in the stored value itself decompressed
-- it once per item, 22 % of a window in pglz_decompress); `win` the window's exact counts. The result is the stored counter with every window item added (looked
-- up in it), pruned if it then overflows (the only case that calls a function).
CREATE FUNCTION rollup_pass_statement(p_part text, p_rollup text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $fn$
DECLARE
    keys constant text := $k$
        e.tenant_id, date_bin('5 minutes', e.event_time, TIMESTAMPTZ 'epoch'),
        (e.event_time AT TIME ZONE t.time_zone)::date,
        e.event_time >= $5, e.event_time >= $6, e.event_time >= $7,
        e.event_type, coalesce(e.country, ''), coalesce(e.browser, ''), coalesce(e.campaign, '')$k$;
    stage_columns constant text :=
        'tenant_id, bucket, day, in_5min, in_1hour, in_1day, event_type, country, browser, campaign';
    window_events constant text := $w$
        FROM events e JOIN tenants t ON t.tenant_id = e.tenant_id {lateral}
        WHERE e.event_id > $1 AND e.event_id <= $2
          AND e.event_time >= $3 AND e.event_time <= $4
          AND e.event_time >= least($5, $6, $7)$w$;
    merge constant text := $m$
        CROSS JOIN LATERAL (
            SELECT CASE WHEN win.{list} IS NULL THEN NULL
                        WHEN u.fresh = 0 THEN u.merged
                        WHEN (SELECT count(*) FROM jsonb_object_keys(u.merged)) <= $1 THEN u.merged
                        ELSE rollup_topn_prune(u.merged, $1) END AS counter
            FROM (SELECT coalesce(stored.{list}, '{}'::jsonb)
                         || coalesce(jsonb_object_agg(x.key, coalesce((stored.{list} ->> x.key)::bigint, 0)
                                                               + x.value::bigint), '{}'::jsonb)
                             AS merged,
                         count(*) FILTER (WHERE stored.{list} IS NULL OR NOT stored.{list} ? x.key)
                             AS fresh
                  FROM jsonb_each_text(win.{list}) x) u) merged_{list}$m$;
    sql text;
    key text;
    grp text;
    flag text;
BEGIN
    IF p_part = 'stage' THEN
        RETURN 'INSERT INTO rollup_stage (' || stage_columns || ', revenue, device, session)
            SELECT ' || keys || ', e.revenue, hll_hash_bigint(e.device_id),
                   hll_hash_bigint(e.session_id)' || replace(window_events, '{lateral}', '');
    ELSIF p_part = 'items' THEN
        -- Top pages are the URL without its query, cut to fit TopN's 255-byte items.
        RETURN 'INSERT INTO rollup_stage_items (' || stage_columns || ', list, item, n)
            SELECT ' || keys || ', l.list, l.item, count(*)'
            || replace(window_events, '{lateral}', $l$
            CROSS JOIN LATERAL (VALUES
                ('d'::"char", e.device_id::text),
                ('p'::"char", CASE WHEN octet_length(left(split_part(e.page_url, '?', 1), 255)) <= 255
                                   THEN left(split_part(e.page_url, '?', 1), 255)
                                   ELSE left(split_part(e.page_url, '?', 1), 63) END))
                AS l (list, item)$l$) || $s$
          AND l.item IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12$s$;
    END IF;

    SELECT v.key, v.grp, v.flag INTO key, grp, flag
    FROM (VALUES ('5min', 'bucket', '{a}.bucket', 'in_5min'),
                 ('1hour', 'bucket', $g$date_bin('1 hour', {a}.bucket, TIMESTAMPTZ 'epoch')$g$, 'in_1hour'),
                 ('1day', 'day', '{a}.day', 'in_1day')) AS v (rollup, key, grp, flag)
    WHERE v.rollup = p_rollup;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown rollup %', p_rollup USING ERRCODE = 'invalid_parameter_value';
    END IF;

    sql := $s$INSERT INTO {target} AS r (tenant_id, {key}, {columns}, event_count, revenue, purchases,
                       devices, sessions, top_devices, top_pages)
        SELECT w.tenant_id, w.k, {w_columns}, w.event_count, w.revenue, w.purchases,
               w.devices, w.sessions, merged_devices.counter, merged_pages.counter
        FROM (SELECT s.tenant_id, {s_group} AS k, {s_dims},
                     count(*) AS event_count, coalesce(sum(s.revenue), 0) AS revenue,
                     count(*) FILTER (WHERE s.event_type = 'purchase') AS purchases,
                     hll_add_agg(s.device, 14, 5) AS devices,
                     hll_add_agg(s.session, 14, 5) AS sessions
              FROM rollup_stage s {s_lateral}
              WHERE s.{flag}
              GROUP BY {w_group}) w
        LEFT JOIN (
            SELECT i.tenant_id, i.k, {i_dims}
                   jsonb_object_agg(i.item, i.n) FILTER (WHERE i.list = 'd') AS devices,
                   jsonb_object_agg(i.item, i.n) FILTER (WHERE i.list = 'p') AS pages
            FROM (SELECT i.tenant_id, {i_group} AS k, {i_dims} i.list, i.item,
                         sum(i.n)::bigint AS n
                  FROM rollup_stage_items i WHERE i.{flag}
                  GROUP BY {i_inner_group}) i
            GROUP BY {i_outer_group}) n
          ON n.tenant_id = w.tenant_id AND n.k = w.k AND {n_on}
        LEFT JOIN LATERAL (
            SELECT (array_agg(o.top_devices))[1] AS devices, (array_agg(o.top_pages))[1] AS pages
            FROM {target} o
            WHERE o.tenant_id = w.tenant_id AND o.{key} = w.k AND {o_on}) stored ON true
        CROSS JOIN LATERAL (SELECT {win_devices} AS devices, {win_pages} AS pages) win
        {merge_devices}
        {merge_pages}
        ON CONFLICT (tenant_id, {key}, {columns}) DO UPDATE SET
            event_count = r.event_count + excluded.event_count,
            revenue = r.revenue + excluded.revenue,
            purchases = r.purchases + excluded.purchases,
            devices = coalesce(hll_union(r.devices, excluded.devices), r.devices, excluded.devices),
            sessions = coalesce(hll_union(r.sessions, excluded.sessions), r.sessions, excluded.sessions),
            -- Already merged with the stored counter in the SELECT: only rollups write these
            -- rows, one transaction at a time, so the row read there is the row updated here.
            top_devices = coalesce(excluded.top_devices, r.top_devices),
            top_pages = coalesce(excluded.top_pages, r.top_pages)$s$;

    IF p_part = 'rows' THEN
        sql := replace(sql, '{target}', 'rollup_events_' || p_rollup);
        sql := replace(sql, '{columns}', 'event_type, country, browser, campaign');
        sql := replace(sql, '{w_columns}', 'w.event_type, w.country, w.browser, w.campaign');
        sql := replace(sql, '{s_dims}', 's.event_type, s.country, s.browser, s.campaign');
        sql := replace(sql, '{s_lateral}', '');
        sql := replace(sql, '{w_group}', '1, 2, 3, 4, 5, 6');
        sql := replace(sql, '{i_dims}', 'i.event_type, i.country, i.browser, i.campaign,');
        sql := replace(sql, '{i_inner_group}', '1, 2, 3, 4, 5, 6, 7, 8');
        sql := replace(sql, '{i_outer_group}', '1, 2, 3, 4, 5, 6');
        sql := replace(sql, '{n_on}', 'n.event_type = w.event_type AND n.country = w.country
             AND n.browser = w.browser AND n.campaign = w.campaign');
        sql := replace(sql, '{o_on}', 'o.event_type = w.event_type AND o.country = w.country
              AND o.browser = w.browser AND o.campaign = w.campaign');
        sql := replace(sql, '{win_devices}', $x$coalesce(n.devices, '{}'::jsonb)$x$);
        sql := replace(sql, '{win_pages}', $x$coalesce(n.pages, '{}'::jsonb)$x$);
    ELSIF p_part = 'slices' THEN
        -- Top lists are kept on the totals rows only (V6); the other rows keep NULL.
        sql := replace(sql, '{target}', 'rollup_slices_' || p_rollup);
        sql := replace(sql, '{columns}', 'dimension, value');
        sql := replace(sql, '{w_columns}', 'w.dimension, w.value');
        sql := replace(sql, '{s_dims}', 'd.dimension, d.value');
        sql := replace(sql, '{s_lateral}', $x$
              CROSS JOIN LATERAL (VALUES ('', ''), ('event_type', s.event_type),
                                         ('country', s.country), ('browser', s.browser),
                                         ('campaign', s.campaign)) AS d (dimension, value)$x$);
        sql := replace(sql, '{w_group}', '1, 2, 3, 4');
        sql := replace(sql, '{i_dims}', '');
        sql := replace(sql, '{i_inner_group}', '1, 2, 3, 4');
        sql := replace(sql, '{i_outer_group}', '1, 2');
        sql := replace(sql, '{n_on}', $x$w.dimension = ''$x$);
        sql := replace(sql, '{o_on}', $x$o.dimension = '' AND o.value = '' AND w.dimension = ''$x$);
        sql := replace(sql, '{win_devices}', $x$CASE WHEN w.dimension = '' THEN coalesce(n.devices, '{}'::jsonb) END$x$);
        sql := replace(sql, '{win_pages}', $x$CASE WHEN w.dimension = '' THEN coalesce(n.pages, '{}'::jsonb) END$x$);
    ELSE
        RAISE EXCEPTION 'unknown statement part %', p_part USING ERRCODE = 'invalid_parameter_value';
    END IF;
    sql := replace(sql, '{merge_devices}', replace(merge, '{list}', 'devices'));
    sql := replace(sql, '{merge_pages}', replace(merge, '{list}', 'pages'));
    sql := replace(sql, '{s_group}', replace(grp, '{a}', 's'));
    sql := replace(sql, '{i_group}', replace(grp, '{a}', 'i'));
    sql := replace(sql, '{flag}', flag);
    sql := replace(sql, '{key}', key);
    RETURN sql;
END
$fn$;

DROP FUNCTION rollup_statement(text);
DROP FUNCTION slices_statement(text);

-- Advances the given rollups (NULL: all of them, and then forgets the event id ranges every
-- rollup has passed) in the caller's transaction, each over the events committed since its
-- watermark, and moves their watermarks in that same transaction: a window is aggregated
-- exactly once, and a failure or crash anywhere leaves nothing of it applied. Every call locks
-- every rollup's state row, so calls never overlap (they also share the staging tables); one that
-- waited finds the window already done.
--
-- The window ends at the sequence's last value. Ids up to there may belong to transactions still
-- writing; a brief EXCLUSIVE lock on `events`, taken and released inside an exception block,
-- waits for them to finish (writers hold ROW EXCLUSIVE on the parent table, whichever partition
-- they write). Rollups whose watermarks are equal (the usual case) share one pass over the
-- window; others get a pass each.
CREATE FUNCTION advance_rollups(p_rollups text[] DEFAULT NULL)
RETURNS TABLE (rollup text, window_start bigint, window_end bigint,
               min_event_time timestamptz, max_event_time timestamptz, rows_upserted bigint,
               milliseconds double precision)
LANGUAGE plpgsql AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    names text[];
    starts bigint[];
    keeps interval[];
    the_end bigint;
    pass_start bigint;
    lo timestamptz;
    hi timestamptz;
    cutoffs timestamptz[];
    counters integer;
    changed bigint;
    pass_rows bigint[];
    los timestamptz[];
    his timestamptz[];
    i integer;
BEGIN
    -- Every state row, in order: a call for one rollup also waits for a call for another.
    SELECT array_agg(s.rollup ORDER BY s.position), array_agg(s.last_event_id ORDER BY s.position),
           array_agg(s.retention ORDER BY s.position)
    INTO names, starts, keeps
    FROM (SELECT * FROM rollup_state ORDER BY position FOR UPDATE) s;
    IF p_rollups IS NOT NULL THEN
        FOR i IN 1 .. coalesce(cardinality(p_rollups), 0) LOOP
            IF NOT p_rollups[i] = ANY (names) THEN
                RAISE EXCEPTION 'unknown rollup %', p_rollups[i]
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
    END IF;

    the_end := coalesce(pg_sequence_last_value('events_event_id_seq'), 0);
    pass_rows := array_fill(0::bigint, ARRAY[cardinality(names)]);
    los := array_fill(NULL::timestamptz, ARRAY[cardinality(names)]);
    his := los;

    IF EXISTS (SELECT 1 FROM generate_subscripts(names, 1) j
               WHERE (p_rollups IS NULL OR names[j] = ANY (p_rollups)) AND starts[j] < the_end) THEN
        BEGIN
            LOCK TABLE ONLY events IN EXCLUSIVE MODE;
            RAISE EXCEPTION 'writers drained' USING ERRCODE = 'RMK01';
        EXCEPTION WHEN SQLSTATE 'RMK01' THEN
            NULL;
        END;
        counters := rollup_topn_counters();

        FOR pass_start IN
            SELECT DISTINCT starts[j] FROM generate_subscripts(names, 1) j
            WHERE (p_rollups IS NULL OR names[j] = ANY (p_rollups)) AND starts[j] < the_end
            ORDER BY 1
        LOOP
            SELECT min(r.min_event_time), max(r.max_event_time) INTO lo, hi
            FROM event_id_ranges r
            WHERE r.id_ceiling > pass_start AND r.id_floor < the_end;
            -- Per rollup: 'infinity' when it is not in this pass; its retention cutoff when it
            -- has one (buckets older than a rollup keeps are not created again by late
            -- events); else '-infinity'.
            SELECT array_agg(CASE
                       WHEN NOT ((p_rollups IS NULL OR names[j] = ANY (p_rollups))
                                 AND starts[j] = pass_start) THEN 'infinity'::timestamptz
                       WHEN keeps[j] IS NOT NULL THEN now() - keeps[j]
                       ELSE '-infinity'::timestamptz END ORDER BY j)
            INTO cutoffs
            FROM generate_subscripts(names, 1) j;

            -- No recorded range: only failed writers used these ids (or a writer did not record
            -- its range); read every partition rather than risk missing a row.
            EXECUTE rollup_pass_statement('stage', '')
            USING pass_start, the_end, coalesce(lo, '-infinity'::timestamptz),
                  coalesce(hi, 'infinity'::timestamptz),
                  cutoffs[array_position(names, '5min')], cutoffs[array_position(names, '1hour')],
                  cutoffs[array_position(names, '1day')];
            EXECUTE rollup_pass_statement('items', '')
            USING pass_start, the_end, coalesce(lo, '-infinity'::timestamptz),
                  coalesce(hi, 'infinity'::timestamptz),
                  cutoffs[array_position(names, '5min')], cutoffs[array_position(names, '1hour')],
                  cutoffs[array_position(names, '1day')];
            -- The planner has to know what the staging tables hold (their rows are never
            -- committed, so autovacuum never samples them): without statistics it took them
            -- for one row and joined a 20,000-event window's groups by nested loops, for 15
            -- minutes. ANALYZE counts the transaction's own rows.
            ANALYZE rollup_stage, rollup_stage_items;

            FOR i IN 1 .. cardinality(names) LOOP
                CONTINUE WHEN cutoffs[i] = 'infinity';
                EXECUTE rollup_pass_statement('rows', names[i]) USING counters;
                GET DIAGNOSTICS changed = ROW_COUNT;
                pass_rows[i] := changed;
                EXECUTE rollup_pass_statement('slices', names[i]) USING counters;
                GET DIAGNOSTICS changed = ROW_COUNT;
                pass_rows[i] := pass_rows[i] + changed;
                los[i] := lo;
                his[i] := hi;
            END LOOP;
            TRUNCATE rollup_stage, rollup_stage_items;
        END LOOP;
    END IF;

    FOR i IN 1 .. cardinality(names) LOOP
        CONTINUE WHEN p_rollups IS NOT NULL AND NOT names[i] = ANY (p_rollups);
        rollup := names[i];
        window_start := starts[i];
        window_end := greatest(starts[i], the_end);
        min_event_time := los[i];
        max_event_time := his[i];
        rows_upserted := pass_rows[i];
        UPDATE rollup_state s
        SET last_event_id = window_end, last_run_at = now(), last_rows = rows_upserted
        WHERE s.rollup = names[i];
        milliseconds := extract(epoch FROM clock_timestamp() - started) * 1000;
        RETURN NEXT;
    END LOOP;
    IF p_rollups IS NULL THEN
        PERFORM prune_event_id_ranges();
    END IF;
END
$fn$;

-- advance_rollup (V4) for one rollup, now a call of advance_rollups.
CREATE OR REPLACE FUNCTION advance_rollup(p_rollup text,
    OUT rollup text, OUT window_start bigint, OUT window_end bigint,
    OUT min_event_time timestamptz, OUT max_event_time timestamptz, OUT rows_upserted bigint,
    OUT milliseconds double precision)
LANGUAGE plpgsql AS $fn$
BEGIN
    SELECT a.rollup, a.window_start, a.window_end, a.min_event_time, a.max_event_time,
           a.rows_upserted, a.milliseconds
    INTO rollup, window_start, window_end, min_event_time, max_event_time, rows_upserted,
         milliseconds
    FROM advance_rollups(ARRAY[p_rollup]) a;
END
$fn$;

-- All rollups in one transaction (for pg_cron: CALL run_rollups()).
CREATE OR REPLACE PROCEDURE run_rollups()
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM advance_rollups();
    COMMIT;
END
$fn$;

-- apply_rollup_retention as in V6, now waiting for a rollup in progress first: a rollup merges
-- the counters of the rows it read, so no row may vanish between its read and its upsert.
CREATE OR REPLACE FUNCTION apply_rollup_retention()
RETURNS TABLE (rollup text, rows_deleted bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    s record;
    slice_rows bigint;
BEGIN
    PERFORM 1 FROM rollup_state ORDER BY position FOR UPDATE;
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
