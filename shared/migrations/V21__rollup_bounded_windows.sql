-- Rollup windows of bounded size (issue 16). A window was everything committed since the
-- watermark: an import of millions of events made one window of millions, one transaction
-- holding the rollup state for many minutes (a 100,000-event window takes about 12 s on the
-- development machine), during which no live event was rolled up. Now a window ends at most
-- rollup_state.max_window_events ids after the least watermark it advances (default 100,000;
-- `remarketable rollup window N`), and the rollup job (jobs::rollup, and
-- run_rollups() for pg_cron) runs window after window, each its own transaction, while windows
-- come back full, for at most 50 s per run. Reports read raw events above the watermark, so they
-- stay exact while the rollups catch up.

SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

-- Through EXECUTE, one command each, the constraint named: rollup_state is a reference table
-- on Citus, which refuses a column added together with an unnamed constraint and forwards a
-- DDL command's text to the workers.
DO $alter$
BEGIN
    EXECUTE 'ALTER TABLE rollup_state ADD COLUMN max_window_events bigint NOT NULL DEFAULT 100000';
    EXECUTE 'ALTER TABLE rollup_state ADD CONSTRAINT rollup_state_max_window_events_check '
            'CHECK (max_window_events > 0)';
END
$alter$;

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
    -- Every state row, in order: a call for one rollup also waits for a call for another.
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
    -- Bounded: at most `cap` ids past the least watermark this call advances. Ids up to a lower
    -- end are as settled as up to the sequence's value (the lock below waits for all of them).
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

-- All rollups, window after window (each committed) while windows come back full, for at most
-- 50 s (for pg_cron: CALL run_rollups()).
CREATE OR REPLACE PROCEDURE run_rollups()
LANGUAGE plpgsql AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    cap bigint;
    more boolean;
BEGIN
    LOOP
        SELECT min(max_window_events) INTO cap FROM rollup_state;
        SELECT bool_or(a.window_end - a.window_start >= cap) INTO more FROM advance_rollups() a;
        COMMIT;
        EXIT WHEN NOT coalesce(more, false) OR clock_timestamp() - started > interval '50 seconds';
    END LOOP;
END
$fn$;
