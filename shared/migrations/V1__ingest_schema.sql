-- Ingest schema: tenants, events, dead letters, stream positions and the ingest ledger.
-- Runs unchanged on plain PostgreSQL and on Citus; Citus-only calls sit behind a check for the
-- extension (see the DO block at the end).

CREATE TABLE tenants (
    tenant_id  bigint PRIMARY KEY CHECK (tenant_id > 0),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    time_zone  text NOT NULL DEFAULT 'UTC',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- bigint with CACHE 1: int sequences fail on Citus workers, and a cache would hand ids out of
-- commit order across sessions, which the rollup window must not see.
CREATE SEQUENCE events_event_id_seq AS bigint CACHE 1;

CREATE TABLE events (
    tenant_id        bigint NOT NULL,
    event_id         bigint NOT NULL DEFAULT nextval('events_event_id_seq'),
    event_time       timestamptz NOT NULL,
    event_type       text NOT NULL,
    device_id        bigint NOT NULL,
    session_id       bigint NOT NULL,
    country          text,
    browser          text,
    page_url         text,
    referrer         text,
    campaign         text,
    source           text,
    medium           text,
    revenue          numeric(18, 4),
    currency         text,
    properties       jsonb,
    -- When the hub enqueued the event, and where it sat in the stream (for audits and checks).
    received_at      timestamptz NOT NULL,
    stream_partition text NOT NULL,
    stream_sequence  bigint NOT NULL,
    PRIMARY KEY (tenant_id, event_id, event_time)
) PARTITION BY RANGE (event_time);

ALTER SEQUENCE events_event_id_seq OWNED BY events.event_id;

-- Rollups read event_id windows; BETWEEN on event_id cannot prune time partitions, so every
-- partition needs this index. BRIN: ids grow with insertion order, and it costs ingest little.
CREATE INDEX events_event_id_idx ON events USING brin (event_id) WITH (pages_per_range = 32);

-- Events that could not be stored. The payload is kept byte for byte (bytea: it may not even be
-- text PostgreSQL can hold).
CREATE TABLE dead_letters (
    dead_letter_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           text NOT NULL,
    stream_partition text NOT NULL,
    stream_sequence  bigint NOT NULL,
    stream_offset    text,
    enqueued_at      timestamptz NOT NULL,
    tenant_id        bigint,
    reason           text NOT NULL,
    message          text NOT NULL,
    payload          bytea NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    replay_status    text NOT NULL DEFAULT 'pending'
                     CHECK (replay_status IN ('pending', 'replayed', 'discarded')),
    replayed_at      timestamptz,
    UNIQUE (source, stream_partition, stream_sequence)
);
CREATE INDEX dead_letters_tenant_idx ON dead_letters (tenant_id, received_at);

-- High-water sequence number per stream partition: advanced in the transaction that writes the
-- partition's rows, so a redelivered event is recognised as a duplicate.
CREATE TABLE ingest_positions (
    source           text NOT NULL,
    stream_partition text NOT NULL,
    last_sequence    bigint NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, stream_partition)
);

-- What happened to every delivered event, per tenant and per hour of its enqueue time.
-- tenant_id 0 collects events whose tenant could not be read.
CREATE TABLE ingest_ledger (
    tenant_id     bigint NOT NULL CHECK (tenant_id >= 0),
    hour          timestamptz NOT NULL,
    received      bigint NOT NULL DEFAULT 0,
    stored        bigint NOT NULL DEFAULT 0,
    duplicates    bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour),
    CHECK (received = stored + duplicates + dead_lettered)
);

-- Partition layout per partitioned table. The interval is fixed once the first partition exists
-- (Citus refuses partitions of mixed sizes); retention and look-ahead may change any time.
CREATE TABLE partition_settings (
    table_name         text PRIMARY KEY,
    partition_interval interval NOT NULL
        CHECK (partition_interval >= interval '5 minutes' AND partition_interval <= interval '7 days'
               AND date_part('month', partition_interval) = 0
               AND date_part('year', partition_interval) = 0),
    retention          interval NOT NULL CHECK (retention > interval '0'),
    lookahead          interval NOT NULL CHECK (lookahead >= interval '1 hour')
);
INSERT INTO partition_settings VALUES ('events', interval '1 hour', interval '30 days', interval '1 day');

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_reference_table('tenants');
        PERFORM create_distributed_table('events', 'tenant_id');
        PERFORM create_distributed_table('ingest_ledger', 'tenant_id', colocate_with => 'events');
    END IF;
END
$citus$;
