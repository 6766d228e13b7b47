-- Records one batch in the ledger: its counts per (tenant, hour of enqueue time) as parallel
-- arrays. $1 source, $2 partition, $3..$8 tenants, hours, received, stored, duplicates,
-- dead-lettered.
INSERT INTO ingest_ledger_batches (source, stream_partition, tenant_ids, hours, received, stored,
                                   duplicates, dead_lettered)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
