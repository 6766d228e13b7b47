-- Partition upkeep in bounded steps, and a partition interval sized for Citus.
--
-- On Citus every partition of `events` is a distributed table of citus.shard_count shards, and
-- creating one takes about 13 locks per shard on each worker (table, indexes, their shard
-- metadata) until the transaction ends: 16 shards per worker, about 205 locks per partition.
-- Creating the 745 hourly partitions of a fresh install in one transaction ran the workers out
-- of lock memory at the default max_locks_per_transaction. maintain_partitions now takes an
-- optional limit of changes per call; `remarketable migrate`, `remarketable partitions` and the
-- maintenance job call it repeatedly, each call its own transaction, so a run holds few locks at
-- a time and an interrupted one resumes where it stopped. Without a limit (pg_cron, SQL callers)
-- it does everything at once, as before.

-- DDL and a new function in one transaction: one connection per worker on Citus. (A setting
-- with a dot is a harmless placeholder on plain PostgreSQL.)
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

DROP FUNCTION maintain_partitions(text, timestamptz);

-- Drops the partitions that end before the retention horizon, then creates the missing ones:
-- first from the partition holding `p_now` forward to now + look-ahead (what ingest needs
-- next), then backwards to the horizon (only late events go there). Partitions are aligned with
-- date_bin(interval, t, TIMESTAMPTZ 'epoch'). Makes at most `p_max_changes` changes (drops and
-- creations together; NULL: no limit). Returns one row per partition created or dropped; fewer
-- rows than the limit means nothing is left to do.
CREATE FUNCTION maintain_partitions(p_table text DEFAULT 'events', p_now timestamptz DEFAULT now(),
                                    p_max_changes integer DEFAULT NULL)
RETURNS TABLE (action text, partition_name text, from_value timestamptz, to_value timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    s          partition_settings%ROWTYPE;
    parent     regclass := p_table::regclass;
    parent_ns  text;
    existing   tstzrange[];
    horizon    timestamptz;
    current    timestamptz;
    t          timestamptz;
    budget     integer := coalesce(p_max_changes, 2147483647);
    r          record;
BEGIN
    IF budget < 1 THEN
        RAISE EXCEPTION 'p_max_changes must be at least 1, not %', p_max_changes;
    END IF;
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
        EXIT WHEN budget = 0;
        EXECUTE format('DROP TABLE %s', r.partition_name);
        budget := budget - 1;
        action := 'dropped';
        partition_name := r.partition_name;
        from_value := r.from_value;
        to_value := r.to_value;
        RETURN NEXT;
    END LOOP;

    existing := ARRAY(SELECT tstzrange(b.from_value, b.to_value) FROM partition_bounds(parent) b);
    current := date_bin(s.partition_interval, p_now, TIMESTAMPTZ 'epoch');
    FOR t IN
        SELECT g FROM generate_series(current, p_now + s.lookahead - interval '1 microsecond',
                                      s.partition_interval) g
        UNION ALL
        (SELECT g FROM generate_series(current - s.partition_interval,
                                       date_bin(s.partition_interval, horizon, TIMESTAMPTZ 'epoch'),
                                       -s.partition_interval) g)
    LOOP
        EXIT WHEN budget = 0;
        IF NOT tstzrange(t, t + s.partition_interval) && ANY (existing) THEN
            partition_name := format('%s_p%s', p_table,
                                     to_char(t AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI'));
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           parent_ns, partition_name, parent, t, t + s.partition_interval);
            budget := budget - 1;
            action := 'created';
            from_value := t;
            to_value := t + s.partition_interval;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$fn$;

-- Daily partitions on Citus, unless a partition exists already (the interval is then fixed) or
-- the interval was changed from the hourly default. Measured on a coordinator + 2 workers
-- (32 shards, 16 per worker): an empty hourly layout (30 days back, 1 day ahead: 745 partitions)
-- is about 24,000 shards and 1.8 GB per worker; daily (32 partitions) about 1,000 shards and
-- tens of MB. `remarketable migrate --partition-interval` still chooses another one before the
-- first partition is created.
DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')
       AND NOT EXISTS (SELECT 1 FROM partition_bounds('events'::regclass)) THEN
        UPDATE partition_settings SET partition_interval = interval '1 day'
        WHERE table_name = 'events' AND partition_interval = interval '1 hour';
    END IF;
END
$citus$;
