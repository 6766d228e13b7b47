-- The rejected events of one batch, one array element each.
-- $1 source, $2 partition, $3..$9 sequences, offsets, enqueue times, tenants, reasons,
-- messages, raw payloads.
INSERT INTO dead_letters (source, stream_partition, stream_sequence, stream_offset,
                          enqueued_at, tenant_id, reason, message, payload)
SELECT $1, $2, * FROM unnest($3::numeric[], $4::text[], $5::timestamptz[], $6::bigint[],
                             $7::text[], $8::text[], $9::bytea[])
