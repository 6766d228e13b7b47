-- Moves a stream partition's position forward, in the transaction that stored its rows.
-- $1 source, $2 partition, $3 the highest sequence number of the batch.
UPDATE ingest_positions SET last_sequence = $3, updated_at = now()
WHERE source = $1 AND stream_partition = $2
