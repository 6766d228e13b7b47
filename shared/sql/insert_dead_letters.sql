-- The rejected events of one batch, one array element each.
-- $1 source, $2 partition, $3..$10 sequences, offsets, enqueue times, tenants, reasons,
-- messages, payloads (a too_large one cut short), the full size of a payload cut short.
INSERT INTO dead_letters (source, stream_partition, stream_sequence, stream_offset,
                          enqueued_at, tenant_id, reason, message, payload, payload_bytes)
SELECT $1, $2, * FROM unnest($3::numeric[], $4::text[], $5::timestamptz[], $6::bigint[],
                             $7::text[], $8::text[], $9::bytea[], $10::bigint[])
