-- Partition upkeep, written with plain DDL so the same functions serve PostgreSQL and Citus
-- (partitions of a distributed table are distributed on creation). Called by
-- `remarketable migrate`, by the `maintenance` timer function, and schedulable by pg_cron.

-- Range bounds of a table's partitions, read from the catalog (the same source Citus's
-- time_partitions view reads). A DEFAULT partition has no bounds and is not listed.
CREATE FUNCTION partition_bounds(parent regclass)
RETURNS TABLE (partition_name text, from_value timestamptz, to_value timestamptz)
LANGUAGE sql STABLE AS $fn$
    SELECT c.oid::regclass::text, b[1]::timestamptz, b[2]::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                    $re$FROM \('([^']+)'\) TO \('([^']+)'\)$re$) AS b
    WHERE i.inhparent = parent
    ORDER BY 2
$fn$;

-- Sets a table's partition layout. The interval may change only while the table has no
-- partition; retention and look-ahead may change at any time.
CREATE FUNCTION configure_partitions(p_table text, p_interval interval, p_retention interval,
                                     p_lookahead interval)
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    current_interval interval;
BEGIN
    SELECT partition_interval INTO current_interval
    FROM partition_settings WHERE table_name = p_table FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no partition settings', p_table;
    END IF;
    IF p_interval IS NOT NULL AND p_interval <> current_interval
       AND EXISTS (SELECT 1 FROM partition_bounds(p_table::regclass)) THEN
        RAISE EXCEPTION 'table % already has partitions of %; its partition interval cannot change to %',
            p_table, current_interval, p_interval
            USING HINT = 'the interval is chosen once, before the first partition is created';
    END IF;
    UPDATE partition_settings
    SET partition_interval = coalesce(p_interval, partition_interval),
        retention = coalesce(p_retention, retention),
        lookahead = coalesce(p_lookahead, lookahead)
    WHERE table_name = p_table;
END
$fn$;

-- Creates the missing partitions from the retention horizon to now + look-ahead, aligned with
-- date_bin(interval, t, TIMESTAMPTZ 'epoch'), and drops partitions that end before the horizon.
-- Returns one row per partition created or dropped.
CREATE FUNCTION maintain_partitions(p_table text DEFAULT 'events', p_now timestamptz DEFAULT now())
RETURNS TABLE (action text, partition_name text, from_value timestamptz, to_value timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    s          partition_settings%ROWTYPE;
    parent     regclass := p_table::regclass;
    parent_ns  text;
    existing   tstzrange[];
    horizon    timestamptz;
    t          timestamptz;
    r          record;
BEGIN
    SELECT * INTO s FROM partition_settings ps WHERE ps.table_name = p_table;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no partition settings', p_table;
    END IF;
    -- Two upkeep runs at once would race on CREATE TABLE; let the second wait and find nothing
    -- left to do.
    PERFORM pg_advisory_xact_lock(hashtext('maintain_partitions:' || p_table));
    SELECT n.nspname INTO parent_ns
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;

    horizon := p_now - s.retention;
    FOR r IN SELECT * FROM partition_bounds(parent) b WHERE b.to_value <= horizon LOOP
        EXECUTE format('DROP TABLE %s', r.partition_name);
        action := 'dropped';
        partition_name := r.partition_name;
        from_value := r.from_value;
        to_value := r.to_value;
        RETURN NEXT;
    END LOOP;

    existing := ARRAY(SELECT tstzrange(b.from_value, b.to_value) FROM partition_bounds(parent) b);
    t := date_bin(s.partition_interval, horizon, TIMESTAMPTZ 'epoch');
    WHILE t < p_now + s.lookahead LOOP
        IF NOT tstzrange(t, t + s.partition_interval) && ANY (existing) THEN
            partition_name := format('%s_p%s', p_table,
                                     to_char(t AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI'));
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           parent_ns, partition_name, parent, t, t + s.partition_interval);
            action := 'created';
            from_value := t;
            to_value := t + s.partition_interval;
            RETURN NEXT;
        END IF;
        t := t + s.partition_interval;
    END LOOP;
END
$fn$;
