-- The ledger, written once per batch instead of once per tenant and batch.
--
-- Upserting one ledger row per (tenant, hour) in every batch cost the database about 0.06 of
-- the handler's throughput relative to \copy in the ingest benchmark, made concurrent
-- partitions queue on the same hot rows until commit, and was a multi-shard write on Citus.
-- Now each batch inserts one row holding its counts as parallel arrays; the maintenance timer
-- folds those rows into the hourly table (compact_ingest_ledger); the view ingest_ledger adds
-- both, so readers see every committed batch at once.

-- On Citus, DDL on a distributed table and a new function in one transaction must go over one
-- connection per worker. (A setting with a dot is a harmless placeholder on plain PostgreSQL.)
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

-- Through EXECUTE: Citus forwards the text of a DDL command to the workers, and a migration
-- arrives as one multi-statement query, which workers refuse to take as one command.
DO $rename$
BEGIN
    EXECUTE 'ALTER TABLE ingest_ledger RENAME TO ingest_ledger_hourly';
END
$rename$;

-- A coordinator table on Citus (a batch holds many tenants).
CREATE TABLE ingest_ledger_batches (
    entry_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           text NOT NULL,
    stream_partition text NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    tenant_ids       bigint[] NOT NULL,
    hours            timestamptz[] NOT NULL,
    received         bigint[] NOT NULL,
    stored           bigint[] NOT NULL,
    duplicates       bigint[] NOT NULL,
    dead_lettered    bigint[] NOT NULL,
    CHECK (cardinality(tenant_ids) = cardinality(hours)
           AND cardinality(tenant_ids) = cardinality(received)
           AND cardinality(tenant_ids) = cardinality(stored)
           AND cardinality(tenant_ids) = cardinality(duplicates)
           AND cardinality(tenant_ids) = cardinality(dead_lettered))
);

CREATE VIEW ingest_ledger AS
SELECT tenant_id, hour,
       sum(received)::bigint AS received,
       sum(stored)::bigint AS stored,
       sum(duplicates)::bigint AS duplicates,
       sum(dead_lettered)::bigint AS dead_lettered
FROM (
    SELECT tenant_id, hour, received, stored, duplicates, dead_lettered
    FROM ingest_ledger_hourly
    UNION ALL
    SELECT u.tenant_id, u.hour, u.received, u.stored, u.duplicates, u.dead_lettered
    FROM ingest_ledger_batches b,
         unnest(b.tenant_ids, b.hours, b.received, b.stored, b.duplicates, b.dead_lettered)
             AS u (tenant_id, hour, received, stored, duplicates, dead_lettered)
) entries
GROUP BY tenant_id, hour;

-- Folds the batch entries into ingest_ledger_hourly, in one transaction, so the view's totals
-- never change. Entries committed while it runs are left for the next run. Returns how many
-- (tenant, hour) totals were folded.
CREATE FUNCTION compact_ingest_ledger()
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    folded bigint;
BEGIN
    -- One compaction at a time; ingest is not blocked.
    PERFORM pg_advisory_xact_lock(hashtext('compact_ingest_ledger'));
    CREATE TEMP TABLE ledger_fold ON COMMIT DROP AS
    WITH moved AS (
        DELETE FROM ingest_ledger_batches
        RETURNING tenant_ids, hours, received, stored, duplicates, dead_lettered
    )
    SELECT u.tenant_id, u.hour, sum(u.received)::bigint AS received,
           sum(u.stored)::bigint AS stored, sum(u.duplicates)::bigint AS duplicates,
           sum(u.dead_lettered)::bigint AS dead_lettered, count(*) AS parts
    FROM moved,
         unnest(moved.tenant_ids, moved.hours, moved.received, moved.stored, moved.duplicates,
                moved.dead_lettered) AS u (tenant_id, hour, received, stored, duplicates, dead_lettered)
    GROUP BY u.tenant_id, u.hour;
    GET DIAGNOSTICS folded = ROW_COUNT;
    -- Key order, so concurrent writers of the hourly table cannot deadlock with this one.
    INSERT INTO ingest_ledger_hourly AS l (tenant_id, hour, received, stored, duplicates, dead_lettered)
    SELECT tenant_id, hour, received, stored, duplicates, dead_lettered
    FROM ledger_fold ORDER BY tenant_id, hour
    ON CONFLICT (tenant_id, hour) DO UPDATE SET
        received = l.received + excluded.received,
        stored = l.stored + excluded.stored,
        duplicates = l.duplicates + excluded.duplicates,
        dead_lettered = l.dead_lettered + excluded.dead_lettered;
    DROP TABLE ledger_fold;
    RETURN folded;
END
$fn$;
