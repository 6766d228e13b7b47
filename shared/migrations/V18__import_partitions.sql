-- History beyond the live retention (issue 16, `remarketable import`).
--
-- An import writes events older than the partitions upkeep keeps. Two things change:
--
-- 1. create_partitions_for(table, times, max_changes) creates the partitions holding the given
--    event times (aligned with date_bin(interval, t, TIMESTAMPTZ 'epoch'), the table's fixed
--    interval; in the order the times first appear), at most max_changes per call, so the import creates what a chunk of history
--    needs in bounded transactions (on Citus every partition is citus.shard_count shard tables
--    and about 13 locks per shard per worker: see V10 and CITUS.md).
-- 2. maintain_partitions no longer drops a partition past the retention horizon while
--    (a) rows written into its time range are not yet rolled up by every rollup (a range of
--    event_id_ranges overlapping it lies above the least watermark), or (b) an import is
--    running (it holds the advisory lock 'import:<table>' shared for its whole session, and
--    may just have created the partition it is about to write). Such a partition is dropped
--    by a later run, once its rollups are done; the daily rollup keeps everything, the hourly
--    two years (rollup retention). Nothing imported is dropped before it is counted.
--    An operator who wants imported raw events kept longer raises the retention
--    (`remarketable migrate --retention '5 years'`).

SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

CREATE FUNCTION create_partitions_for(p_table text, p_times timestamptz[],
                                      p_max_changes integer DEFAULT NULL)
RETURNS TABLE (partition_name text, from_value timestamptz, to_value timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    s          partition_settings%ROWTYPE;
    parent     regclass := p_table::regclass;
    parent_ns  text;
    existing   tstzrange[];
    t          timestamptz;
    budget     integer := coalesce(p_max_changes, 2147483647);
BEGIN
    IF budget < 1 THEN
        RAISE EXCEPTION 'p_max_changes must be at least 1, not %', p_max_changes;
    END IF;
    SELECT * INTO s FROM partition_settings ps WHERE ps.table_name = p_table;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no partition settings', p_table;
    END IF;
    -- The lock of maintain_partitions: the two never race on CREATE TABLE.
    PERFORM pg_advisory_xact_lock(hashtext('maintain_partitions:' || p_table));
    SELECT n.nspname INTO parent_ns
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;

    existing := ARRAY(SELECT tstzrange(b.from_value, b.to_value) FROM partition_bounds(parent) b);
    FOR t IN
        SELECT date_bin(s.partition_interval, u.x, TIMESTAMPTZ 'epoch') AS start
        FROM unnest(p_times) WITH ORDINALITY u (x, ord) WHERE u.x IS NOT NULL
        GROUP BY 1 ORDER BY min(u.ord)
    LOOP
        EXIT WHEN budget = 0;
        IF NOT tstzrange(t, t + s.partition_interval) && ANY (existing) THEN
            partition_name := format('%s_p%s', p_table,
                                     to_char(t AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI'));
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           parent_ns, partition_name, parent, t, t + s.partition_interval);
            budget := budget - 1;
            from_value := t;
            to_value := t + s.partition_interval;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$fn$;

-- maintain_partitions of V10, with the drop guard above; it creates through create_partitions_for.
CREATE OR REPLACE FUNCTION maintain_partitions(p_table text DEFAULT 'events',
                                               p_now timestamptz DEFAULT now(),
                                               p_max_changes integer DEFAULT NULL)
RETURNS TABLE (action text, partition_name text, from_value timestamptz, to_value timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    s          partition_settings%ROWTYPE;
    parent     regclass := p_table::regclass;
    horizon    timestamptz;
    current    timestamptz;
    budget     integer := coalesce(p_max_changes, 2147483647);
    passed     bigint;
    r          record;
BEGIN
    IF budget < 1 THEN
        RAISE EXCEPTION 'p_max_changes must be at least 1, not %', p_max_changes;
    END IF;
    SELECT * INTO s FROM partition_settings ps WHERE ps.table_name = p_table;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no partition settings', p_table;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('maintain_partitions:' || p_table));

    horizon := p_now - s.retention;
    -- rollup_state is a reference table on Citus: read it in a statement of its own.
    SELECT min(last_event_id) INTO passed FROM rollup_state;
    -- An import holds this lock shared for its session; while one runs nothing is dropped.
    IF pg_try_advisory_xact_lock(hashtext('import:' || p_table)) THEN
        FOR r IN
            SELECT * FROM partition_bounds(parent) b
            WHERE b.to_value <= horizon
              AND NOT EXISTS (SELECT 1 FROM event_id_ranges e
                              WHERE e.id_ceiling > coalesce(passed, 0)
                                AND e.min_event_time < b.to_value
                                AND e.max_event_time >= b.from_value)
        LOOP
            EXIT WHEN budget = 0;
            EXECUTE format('DROP TABLE %s', r.partition_name);
            budget := budget - 1;
            action := 'dropped';
            partition_name := r.partition_name;
            from_value := r.from_value;
            to_value := r.to_value;
            RETURN NEXT;
        END LOOP;
    END IF;

    -- Then the missing partitions: first from the one holding p_now forward to now + look-ahead
    -- (what ingest needs next), then backwards to the horizon, created in that order.
    IF budget > 0 THEN
        current := date_bin(s.partition_interval, p_now, TIMESTAMPTZ 'epoch');
        FOR r IN
            SELECT * FROM create_partitions_for(p_table,
                ARRAY(SELECT g FROM generate_series(current,
                                                    p_now + s.lookahead - interval '1 microsecond',
                                                    s.partition_interval) g)
                || ARRAY(SELECT g FROM generate_series(current - s.partition_interval,
                                                       date_bin(s.partition_interval, horizon,
                                                                TIMESTAMPTZ 'epoch'),
                                                       -s.partition_interval) g),
                budget) c
        LOOP
            action := 'created';
            partition_name := r.partition_name;
            from_value := r.from_value;
            to_value := r.to_value;
            RETURN NEXT;
        END LOOP;
    END IF;
END
$fn$;
