-- Adds one batch's counts to the ledger, one array element per (tenant, hour); the caller
-- sorts the keys so that concurrent batches lock ledger rows in the same order.
INSERT INTO ingest_ledger AS l (tenant_id, hour, received, stored, duplicates, dead_lettered)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[], $4::bigint[],
                     $5::bigint[], $6::bigint[])
ON CONFLICT (tenant_id, hour) DO UPDATE SET
    received = l.received + excluded.received,
    stored = l.stored + excluded.stored,
    duplicates = l.duplicates + excluded.duplicates,
    dead_lettered = l.dead_lettered + excluded.dead_lettered
