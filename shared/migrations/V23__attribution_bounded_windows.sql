-- Attribution in bounded windows, as the rollups (V21). V19's advance_attribution() took
-- everything committed since its watermark: after an import of millions of events that was one
-- transaction holding the attribution state for minutes. V21, written alongside V19, also
-- replaced V19's run_rollups() with one that no longer ran attribution for pg_cron. Now
-- attribution takes at most rollup_state.max_window_events ids per window (the one setting,
-- `remarketable rollup window N`), and run_rollups() runs attribution and then the rollups,
-- each window its own transaction, while windows come back full, for at most 50 s.
-- Windows are taken in id order, which is one of the arrival orders attribution already gives
-- the same result for: cutting a window in two changes nothing once both are processed.

CREATE OR REPLACE FUNCTION advance_attribution(
    OUT window_start bigint, OUT window_end bigint, OUT touches_added bigint,
    OUT conversions_attributed bigint, OUT milliseconds double precision)
LANGUAGE plpgsql AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    lo timestamptz;
    hi timestamptz;
    part text;
BEGIN
    SELECT s.last_event_id INTO window_start FROM attribution_state s FOR UPDATE;
    -- At most rollup_state.max_window_events ids past the watermark (V21): ids up to a lower
    -- end are as settled as up to the sequence's value (the lock below waits for all of them).
    window_end := greatest(window_start,
                           least(coalesce(pg_sequence_last_value('events_event_id_seq'), 0),
                                 window_start + (SELECT min(max_window_events) FROM rollup_state)));
    touches_added := 0;
    conversions_attributed := 0;
    IF window_end > window_start THEN
        BEGIN
            LOCK TABLE ONLY events IN EXCLUSIVE MODE;
            RAISE EXCEPTION 'writers drained' USING ERRCODE = 'RMK01';
        EXCEPTION WHEN SQLSTATE 'RMK01' THEN
            NULL;
        END;
        SELECT min(r.min_event_time), max(r.max_event_time) INTO lo, hi
        FROM event_id_ranges r
        WHERE r.id_ceiling > window_start AND r.id_floor < window_end;
        -- No recorded range (only failed writers, or a writer that did not record its range):
        -- read every partition rather than risk missing a row.
        lo := coalesce(lo, '-infinity'::timestamptz);
        hi := coalesce(hi, 'infinity'::timestamptz);
        FOREACH part IN ARRAY ARRAY['touches', 'sessions', 'conversions', 'stale_touches',
                                    'stale_sessions', 'attribute'] LOOP
            EXECUTE attribution_statement(part) USING window_start, window_end, lo, hi;
            IF part = 'touches' THEN
                GET DIAGNOSTICS touches_added = ROW_COUNT;
            ELSIF part = 'attribute' THEN
                GET DIAGNOSTICS conversions_attributed = ROW_COUNT;
            END IF;
        END LOOP;
    END IF;
    UPDATE attribution_state
    SET last_event_id = window_end, last_run_at = now(), last_rows = conversions_attributed;
    milliseconds := extract(epoch FROM clock_timestamp() - started) * 1000;
END
$fn$;

CREATE OR REPLACE PROCEDURE run_rollups()
LANGUAGE plpgsql AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    cap bigint;
    more boolean;
BEGIN
    LOOP
        SELECT min(max_window_events) INTO cap FROM rollup_state;
        SELECT a.window_end - a.window_start >= cap INTO more FROM advance_attribution() a;
        COMMIT;
        SELECT coalesce(bool_or(a.window_end - a.window_start >= cap), false) OR more INTO more
        FROM advance_rollups() a;
        COMMIT;
        EXIT WHEN NOT more OR clock_timestamp() - started > interval '50 seconds';
    END LOOP;
END
$fn$;
