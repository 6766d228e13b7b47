-- Funnels (issue 14): ordered steps a tenant defines (an event type, optionally a URL prefix),
-- and per session how far along them it got, kept by the attribution step (V19, V23) over the
-- same windows and watermark, so the funnel report reads a rolled-up per-session state plus
-- the raw events above the watermark.
--
-- A session reaches step k when, in event-time order, it has an event matching step 1, then a
-- later one matching step 2, ... then a later one matching step k: the greedy in-order match,
-- which finds the longest prefix of the steps the session's events hold as a subsequence. An
-- event counts for one step at most; two events of the same microsecond cannot make two steps.
-- The greedy match over a set of events does not depend on the order they arrived in, and more
-- events never reach fewer steps, so a late event only ever moves a session forward.
-- Every table is keyed by tenant_id and, on Citus, distributed colocated with `events`.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

CREATE SEQUENCE funnels_funnel_id_seq AS bigint;

-- A funnel's definition. Steps never change: saving a funnel under a name that exists replaces
-- it by a new funnel_id (and its state is rebuilt), so a stored state always belongs to the
-- steps it was computed for. step_prefixes[i] is '' when step i takes any URL.
CREATE TABLE funnels (
    tenant_id     bigint NOT NULL,
    funnel_id     bigint NOT NULL DEFAULT nextval('funnels_funnel_id_seq'),
    name          text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,39}$'),
    title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 80),
    step_types    text[] NOT NULL,
    step_prefixes text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, funnel_id),
    UNIQUE (tenant_id, name),
    CHECK (cardinality(step_types) BETWEEN 2 AND 8
           AND cardinality(step_prefixes) = cardinality(step_types))
);

-- Events of the attributed windows that match at least one step of a funnel, with the steps
-- they match as a bit mask (bit i-1 for step i): what a session's state is recomputed from.
CREATE TABLE funnel_events (
    tenant_id  bigint NOT NULL,
    funnel_id  bigint NOT NULL,
    session_id bigint NOT NULL,
    event_time timestamptz NOT NULL,
    event_id   bigint NOT NULL,
    steps      integer NOT NULL CHECK (steps <> 0),
    PRIMARY KEY (tenant_id, funnel_id, session_id, event_time, event_id)
);

-- Per funnel and session that reached step 1: the steps reached, and the session's start and
-- source as in session_sources (copied, so the report reads one table).
CREATE TABLE funnel_sessions (
    tenant_id  bigint NOT NULL,
    funnel_id  bigint NOT NULL,
    session_id bigint NOT NULL,
    started_at timestamptz NOT NULL,
    campaign   text NOT NULL,
    source     text NOT NULL,
    medium     text NOT NULL,
    reached    smallint NOT NULL CHECK (reached BETWEEN 1 AND 8),
    PRIMARY KEY (tenant_id, funnel_id, session_id)
);
CREATE INDEX funnel_sessions_start_idx ON funnel_sessions (tenant_id, funnel_id, started_at);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('funnels', 'tenant_id', colocate_with => 'events');
        PERFORM create_distributed_table('funnel_events', 'tenant_id', colocate_with => 'events');
        PERFORM create_distributed_table('funnel_sessions', 'tenant_id', colocate_with => 'events');
    END IF;
END
$citus$;

-- The steps of a funnel an event matches, as a bit mask; 0 for none.
CREATE FUNCTION funnel_steps_of(p_types text[], p_prefixes text[], p_type text, p_url text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT coalesce(bit_or(1 << (i - 1)), 0)
    FROM generate_subscripts(p_types, 1) i
    WHERE p_types[i] = p_type AND starts_with(coalesce(p_url, ''), p_prefixes[i])
$fn$;

-- The greedy in-order match, one event at a time: the state holds the time each step was
-- reached at, so its length is the steps reached. An event advances it when it matches the
-- next step and is later than the step before.
CREATE FUNCTION funnel_step(p_state timestamptz[], p_steps integer, p_at timestamptz)
RETURNS timestamptz[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE
        WHEN (p_steps >> cardinality(p_state)) & 1 = 1
             AND (cardinality(p_state) = 0 OR p_at > p_state[cardinality(p_state)])
        THEN p_state || p_at
        ELSE p_state
    END
$fn$;

CREATE FUNCTION funnel_reached(p_state timestamptz[]) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$ SELECT cardinality(p_state) $fn$;

-- funnel_reach(steps, event_time ORDER BY event_time): the steps a session's events reach.
-- Only meaningful with that ORDER BY; events of the same time may come in any order (at most
-- one of them can advance the match, and which one does not change the result).
CREATE AGGREGATE funnel_reach(integer, timestamptz) (
    SFUNC = funnel_step,
    STYPE = timestamptz[],
    FINALFUNC = funnel_reached,
    INITCOND = '{}'
);

-- The statements of one window, with $1 the window's start (exclusive), $2 its end (inclusive),
-- $3 and $4 the least and greatest event time it can hold, as attribution_statement(). They run
-- after attribution's, so session_sources already holds the window's session starts.
CREATE FUNCTION funnel_statement(p_part text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $fn$
BEGIN
    RETURN CASE p_part
    WHEN 'funnel_events' THEN $s$
        INSERT INTO funnel_events (tenant_id, funnel_id, session_id, event_time, event_id, steps)
        SELECT e.tenant_id, f.funnel_id, e.session_id, e.event_time, e.event_id, m.steps
        FROM events e
        JOIN funnels f ON f.tenant_id = e.tenant_id AND e.event_type = ANY (f.step_types)
        CROSS JOIN LATERAL (SELECT funnel_steps_of(f.step_types, f.step_prefixes, e.event_type,
                                                   e.page_url) AS steps) m
        WHERE e.event_id > $1 AND e.event_id <= $2
          AND e.event_time >= $3 AND e.event_time <= $4
          AND m.steps <> 0
        ON CONFLICT DO NOTHING$s$
    -- Every session with an event in the window: a new step, or a new start or source.
    WHEN 'funnel_sessions' THEN $s$
        INSERT INTO funnel_sessions AS fs (tenant_id, funnel_id, session_id, started_at,
                                           campaign, source, medium, reached)
        SELECT f.tenant_id, f.funnel_id, s.session_id, ss.first_event_time, ss.campaign,
               ss.source, ss.medium, r.reached
        FROM (SELECT DISTINCT e.tenant_id, e.session_id
              FROM events e
              WHERE e.event_id > $1 AND e.event_id <= $2
                AND e.event_time >= $3 AND e.event_time <= $4) s
        JOIN funnels f ON f.tenant_id = s.tenant_id
        JOIN session_sources ss ON ss.tenant_id = s.tenant_id AND ss.session_id = s.session_id
        CROSS JOIN LATERAL (
            SELECT funnel_reach(x.steps, x.event_time ORDER BY x.event_time) AS reached
            FROM funnel_events x
            WHERE x.tenant_id = f.tenant_id AND x.funnel_id = f.funnel_id
              AND x.session_id = s.session_id) r
        WHERE r.reached > 0
        ON CONFLICT (tenant_id, funnel_id, session_id) DO UPDATE
        SET started_at = excluded.started_at, campaign = excluded.campaign,
            source = excluded.source, medium = excluded.medium, reached = excluded.reached
        WHERE (fs.started_at, fs.campaign, fs.source, fs.medium, fs.reached)
              IS DISTINCT FROM (excluded.started_at, excluded.campaign, excluded.source,
                                excluded.medium, excluded.reached)$s$
    END;
END
$fn$;

-- V23's advance_attribution(), now also advancing the funnels in the same window.
CREATE OR REPLACE FUNCTION advance_attribution(
    OUT window_start bigint, OUT window_end bigint, OUT touches_added bigint,
    OUT conversions_attributed bigint, OUT milliseconds double precision)
LANGUAGE plpgsql AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    lo timestamptz;
    hi timestamptz;
    part text;
BEGIN
    SELECT s.last_event_id INTO window_start FROM attribution_state s FOR UPDATE;
    window_end := greatest(window_start,
                           least(coalesce(pg_sequence_last_value('events_event_id_seq'), 0),
                                 window_start + (SELECT min(max_window_events) FROM rollup_state)));
    touches_added := 0;
    conversions_attributed := 0;
    IF window_end > window_start THEN
        BEGIN
            LOCK TABLE ONLY events IN EXCLUSIVE MODE;
            RAISE EXCEPTION 'writers drained' USING ERRCODE = 'RMK01';
        EXCEPTION WHEN SQLSTATE 'RMK01' THEN
            NULL;
        END;
        SELECT min(r.min_event_time), max(r.max_event_time) INTO lo, hi
        FROM event_id_ranges r
        WHERE r.id_ceiling > window_start AND r.id_floor < window_end;
        lo := coalesce(lo, '-infinity'::timestamptz);
        hi := coalesce(hi, 'infinity'::timestamptz);
        FOREACH part IN ARRAY ARRAY['touches', 'sessions', 'conversions', 'stale_touches',
                                    'stale_sessions', 'attribute'] LOOP
            EXECUTE attribution_statement(part) USING window_start, window_end, lo, hi;
            IF part = 'touches' THEN
                GET DIAGNOSTICS touches_added = ROW_COUNT;
            ELSIF part = 'attribute' THEN
                GET DIAGNOSTICS conversions_attributed = ROW_COUNT;
            END IF;
        END LOOP;
        -- Only tenants with funnels have work here; skip both statements when none has one.
        IF EXISTS (SELECT 1 FROM funnels) THEN
            FOREACH part IN ARRAY ARRAY['funnel_events', 'funnel_sessions'] LOOP
                EXECUTE funnel_statement(part) USING window_start, window_end, lo, hi;
            END LOOP;
        END IF;
    END IF;
    UPDATE attribution_state
    SET last_event_id = window_end, last_run_at = now(), last_rows = conversions_attributed;
    milliseconds := extract(epoch FROM clock_timestamp() - started) * 1000;
END
$fn$;
