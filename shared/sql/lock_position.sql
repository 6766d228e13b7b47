-- Creates or locks a stream partition's position and answers its last stored sequence number.
-- $1 source, $2 partition. A new position starts at -1: sequence numbers start at 0.
-- Also answers the events sequence's last value, read before this transaction takes any id:
-- every id it takes is above it (the floor of the range recorded in event_id_ranges).
INSERT INTO ingest_positions AS p (source, stream_partition, last_sequence)
VALUES ($1, $2, -1)
ON CONFLICT (source, stream_partition) DO UPDATE SET last_sequence = p.last_sequence
RETURNING last_sequence, coalesce(pg_sequence_last_value('events_event_id_seq'), 0)
