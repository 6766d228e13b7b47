-- The dimension cardinality guard (issue 15). Write keys are public, so one of them sending
-- 30,000 events with unique campaign and browser values made one rollup window upsert 275,823
-- rows (8.5 per event) and every breakdown of those days ten times slower. Now a tenant's
-- guarded dimensions (event_type, browser, campaign; country is bounded by the ISO list) take at
-- most dimension_limits.max_values_per_day distinct values per tenant-local day into the
-- rollups. The values are admitted in the order the rollup windows meet them (within a window
-- the most frequent first, ties by value); a value met once the day is full is rolled up as
-- '(other)' and its events are counted in dimension_days.folded_events. Raw events keep their
-- real values. Event types the tenant counts as conversions, and 'purchase' (the rollups' own
-- purchase count), are never folded. Raising a limit admits new values from the next window on;
-- events already folded stay in '(other)'. The guard runs on each staged pass: when rollups are
-- advanced apart (advance_rollup(name)), events staged in two passes have their folded events
-- counted twice, and a limit raised between the passes can admit in one rollup a value the
-- other folded; the rollup job and run_rollups() advance all rollups in one pass.

SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

CREATE TABLE dimension_limits (
    dimension          text PRIMARY KEY CHECK (dimension IN ('event_type', 'browser', 'campaign')),
    max_values_per_day integer NOT NULL CHECK (max_values_per_day >= 0)
);
INSERT INTO dimension_limits VALUES ('event_type', 1000), ('browser', 1000), ('campaign', 1000);

-- The values admitted, per tenant, local day and dimension.
CREATE TABLE dimension_values (
    tenant_id bigint NOT NULL,
    day       date NOT NULL,
    dimension text NOT NULL,
    value     text NOT NULL,
    PRIMARY KEY (tenant_id, day, dimension, value)
);

-- Per tenant, local day and dimension: how many values were admitted and how many events were
-- rolled up as '(other)'.
CREATE TABLE dimension_days (
    tenant_id     bigint NOT NULL,
    day           date NOT NULL,
    dimension     text NOT NULL,
    admitted      integer NOT NULL,
    folded_events bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, dimension)
);

-- A window's values not admitted before it, with their events in the window and whether they
-- are admitted now. Unlogged: the rows live only inside an advancing transaction.
CREATE UNLOGGED TABLE rollup_stage_values (
    tenant_id bigint NOT NULL,
    day       date NOT NULL,
    dimension text NOT NULL,
    value     text NOT NULL,
    events    bigint NOT NULL,
    admitted  boolean NOT NULL
);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_reference_table('dimension_limits');
        PERFORM create_distributed_table('dimension_values', 'tenant_id', colocate_with => 'events');
        PERFORM create_distributed_table('dimension_days', 'tenant_id', colocate_with => 'events');
        EXECUTE 'ALTER TABLE rollup_stage_values SET LOGGED';
        PERFORM create_distributed_table('rollup_stage_values', 'tenant_id', colocate_with => 'events');
    END IF;
END
$citus$;

-- Applies the guard to the staged window (rollup_stage, rollup_stage_items): admits what fits,
-- relabels the rest '(other)'. Answers the events relabelled. Every statement joins on
-- tenant_id, so on Citus each is one task per shard.
CREATE FUNCTION rollup_guard_stage() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    met bigint;
    folded bigint;
    d text;
BEGIN
    INSERT INTO rollup_stage_values (tenant_id, day, dimension, value, events, admitted)
    SELECT n.tenant_id, n.day, n.dimension, n.value, n.events,
           n.rank <= l.max_values_per_day - coalesce(dd.admitted, 0)
    FROM (SELECT f.*, row_number() OVER (PARTITION BY f.tenant_id, f.day, f.dimension
                                          ORDER BY f.events DESC, f.value) AS rank
          FROM (SELECT s.tenant_id, s.day, v.dimension, v.value, count(*) AS events
                FROM rollup_stage s
                CROSS JOIN LATERAL (VALUES ('event_type', s.event_type), ('browser', s.browser),
                                           ('campaign', s.campaign)) AS v (dimension, value)
                -- A value sent as '(other)' itself takes no slot: it is rolled up with the
                -- folded values it names.
                WHERE v.value <> '' AND v.value <> '(other)'
                GROUP BY 1, 2, 3, 4) f
          JOIN tenants t ON t.tenant_id = f.tenant_id
          WHERE NOT (f.dimension = 'event_type'
                     AND (f.value = 'purchase' OR f.value = ANY (t.conversion_event_types)))
            AND NOT EXISTS (SELECT 1 FROM dimension_values k
                            WHERE k.tenant_id = f.tenant_id AND k.day = f.day
                              AND k.dimension = f.dimension AND k.value = f.value)) n
    JOIN dimension_limits l ON l.dimension = n.dimension
    LEFT JOIN dimension_days dd
      ON dd.tenant_id = n.tenant_id AND dd.day = n.day AND dd.dimension = n.dimension;
    GET DIAGNOSTICS met = ROW_COUNT;
    IF met = 0 THEN
        RETURN 0;
    END IF;

    INSERT INTO dimension_values (tenant_id, day, dimension, value)
    SELECT tenant_id, day, dimension, value FROM rollup_stage_values WHERE admitted;
    INSERT INTO dimension_days AS dd (tenant_id, day, dimension, admitted, folded_events)
    SELECT tenant_id, day, dimension, count(*) FILTER (WHERE admitted),
           coalesce(sum(events) FILTER (WHERE NOT admitted), 0)
    FROM rollup_stage_values GROUP BY 1, 2, 3
    ON CONFLICT (tenant_id, day, dimension) DO UPDATE SET
        admitted = dd.admitted + excluded.admitted,
        folded_events = dd.folded_events + excluded.folded_events;

    SELECT coalesce(sum(events), 0) INTO folded FROM rollup_stage_values WHERE NOT admitted;
    IF folded > 0 THEN
        ANALYZE rollup_stage_values;
        FOREACH d IN ARRAY ARRAY['event_type', 'browser', 'campaign'] LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM rollup_stage_values v
                                      WHERE v.dimension = d AND NOT v.admitted);
            EXECUTE format($u$UPDATE %1$I s SET %2$I = '(other)' FROM rollup_stage_values v
                              WHERE v.tenant_id = s.tenant_id AND v.day = s.day
                                AND v.dimension = %3$L AND v.value = s.%2$I AND NOT v.admitted$u$,
                           'rollup_stage', d, d);
            EXECUTE format($u$UPDATE %1$I s SET %2$I = '(other)' FROM rollup_stage_values v
                              WHERE v.tenant_id = s.tenant_id AND v.day = s.day
                                AND v.dimension = %3$L AND v.value = s.%2$I AND NOT v.admitted$u$,
                           'rollup_stage_items', d, d);
        END LOOP;
    END IF;
    TRUNCATE rollup_stage_values;
    RETURN folded;
END
$fn$;

-- advance_rollups (V21) with the guard applied to each staged pass before the rollups read it;
-- the text is V21's otherwise.
CREATE OR REPLACE FUNCTION advance_rollups(p_rollups text[] DEFAULT NULL)
RETURNS TABLE (rollup text, window_start bigint, window_end bigint,
               min_event_time timestamptz, max_event_time timestamptz, rows_upserted bigint,
               milliseconds double precision)
LANGUAGE plpgsql AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    names text[];
    starts bigint[];
    keeps interval[];
    cap bigint;
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
    SELECT array_agg(s.rollup ORDER BY s.position), array_agg(s.last_event_id ORDER BY s.position),
           array_agg(s.retention ORDER BY s.position), min(s.max_window_events)
    INTO names, starts, keeps, cap
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
    the_end := least(the_end, (SELECT min(starts[j]) FROM generate_subscripts(names, 1) j
                               WHERE p_rollups IS NULL OR names[j] = ANY (p_rollups)) + cap);
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
            SELECT array_agg(CASE
                       WHEN NOT ((p_rollups IS NULL OR names[j] = ANY (p_rollups))
                                 AND starts[j] = pass_start) THEN 'infinity'::timestamptz
                       WHEN keeps[j] IS NOT NULL THEN now() - keeps[j]
                       ELSE '-infinity'::timestamptz END ORDER BY j)
            INTO cutoffs
            FROM generate_subscripts(names, 1) j;

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
            ANALYZE rollup_stage, rollup_stage_items;
            -- Relabelled rows change the groups the planner was told of: tell it again.
            IF rollup_guard_stage() > 0 THEN
                ANALYZE rollup_stage, rollup_stage_items;
            END IF;

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
