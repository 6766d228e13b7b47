-- Stream positions become numeric: Kinesis sequence numbers are decimal strings of up to 129
-- digits, larger than bigint. numeric holds them and every Event Hubs sequence number and
-- Kafka offset exactly, and orders them as numbers, so the high-water mark, the dead letters'
-- uniqueness and the events' audit column keep one type for every stream.
--
-- Rewrites the three tables (and rebuilds dead_letters' unique index): on a large existing
-- events table this takes a while and locks it; run it in a quiet hour.

-- As V3: on Citus, DDL on a distributed table goes over one connection per worker, and through
-- EXECUTE so that each command reaches the workers on its own.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

DO $numeric$
BEGIN
    EXECUTE 'ALTER TABLE ingest_positions ALTER COLUMN last_sequence TYPE numeric';
    EXECUTE 'ALTER TABLE dead_letters ALTER COLUMN stream_sequence TYPE numeric';
    EXECUTE 'ALTER TABLE events ALTER COLUMN stream_sequence TYPE numeric';
END
$numeric$;
