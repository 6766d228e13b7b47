-- Attribution of conversions to campaign touches (issue 14): per-tenant conversion settings,
-- the touches and session sources read from events, and one attribution row per conversion,
-- advanced incrementally over committed event id windows by advance_attribution().
-- Every table is keyed by tenant_id and, on Citus, distributed colocated with `events`, so each
-- statement of a window is a colocated INSERT/UPDATE .. SELECT pushed down per tenant shard.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

-- Which event types count as conversions, how far back a touch may lie, and whether clicks
-- outrank impressions. A change applies to conversions attributed from then on; conversions
-- already attributed keep their rows until a late event makes them stale.
-- Through EXECUTE, one command each, constraints named: tenants is a reference table on Citus,
-- which forwards a DDL command's text to the workers (they refuse a multi-statement migration
-- as one command) and refuses a column added together with an unnamed constraint.
DO $alter$
BEGIN
    EXECUTE $ddl$ALTER TABLE tenants
        ADD COLUMN conversion_event_types text[] NOT NULL DEFAULT ARRAY['purchase']::text[],
        ADD COLUMN attribution_lookback interval NOT NULL DEFAULT interval '30 days',
        ADD COLUMN attribution_clicks_first boolean NOT NULL DEFAULT true$ddl$;
    EXECUTE $ddl$ALTER TABLE tenants ADD CONSTRAINT tenants_conversion_event_types_check
        CHECK (cardinality(conversion_event_types) BETWEEN 1 AND 32
               AND array_position(conversion_event_types, NULL) IS NULL)$ddl$;
    EXECUTE $ddl$ALTER TABLE tenants ADD CONSTRAINT tenants_attribution_lookback_check
        CHECK (attribution_lookback > interval '0'
               AND attribution_lookback <= interval '366 days')$ddl$;
END
$alter$;

-- A touch: an event carrying a campaign that is not a conversion. `is_click`: every touch but an
-- `ad_impression` (ad and email clicks, UTM page views).
CREATE TABLE touches (
    tenant_id  bigint NOT NULL,
    device_id  bigint NOT NULL,
    event_time timestamptz NOT NULL,
    event_id   bigint NOT NULL,
    is_click   boolean NOT NULL,
    campaign   text NOT NULL,
    source     text NOT NULL,
    medium     text NOT NULL,
    PRIMARY KEY (tenant_id, device_id, event_time, event_id)
);
CREATE INDEX touches_event_id_idx ON touches (event_id);
CREATE INDEX touches_time_idx ON touches (tenant_id, event_time);

-- Each session's first event and its campaign, source and medium ('' where absent: a session
-- whose first event has no campaign is direct). "First" is the least event_time; among events
-- of the same time one with a campaign, then the least (campaign, source, medium) in byte
-- order: never the event id, which depends on arrival order. `changed_through`: the
-- attribution window that last set the row.
CREATE TABLE session_sources (
    tenant_id        bigint NOT NULL,
    session_id       bigint NOT NULL,
    first_event_time timestamptz NOT NULL,
    first_event_id   bigint NOT NULL,
    campaign         text NOT NULL,
    source           text NOT NULL,
    medium           text NOT NULL,
    changed_through  bigint NOT NULL,
    PRIMARY KEY (tenant_id, session_id)
);
CREATE INDEX session_sources_changed_idx ON session_sources (changed_through);
CREATE INDEX session_sources_time_idx ON session_sources (tenant_id, first_event_time);

-- One row per conversion event and its attribution under each model. '' campaign/source/medium
-- (and a NULL touch id) is "direct": no touch in the lookback, or a session without a campaign.
CREATE TABLE conversions (
    tenant_id        bigint NOT NULL,
    event_id         bigint NOT NULL,
    event_time       timestamptz NOT NULL,
    event_type       text NOT NULL,
    device_id        bigint NOT NULL,
    session_id       bigint NOT NULL,
    revenue          numeric(18, 4) NOT NULL,
    -- event_time minus the tenant's lookback when the conversion was stored, as whole seconds
    -- (so no node's TimeZone moves it; and Citus refuses the stable timestamptz - interval
    -- over columns in an UPDATE).
    lookback_start   timestamptz NOT NULL,
    last_touch_id    bigint,
    last_campaign    text NOT NULL DEFAULT '',
    last_source      text NOT NULL DEFAULT '',
    last_medium      text NOT NULL DEFAULT '',
    first_touch_id   bigint,
    first_campaign   text NOT NULL DEFAULT '',
    first_source     text NOT NULL DEFAULT '',
    first_medium     text NOT NULL DEFAULT '',
    session_campaign text NOT NULL DEFAULT '',
    session_source   text NOT NULL DEFAULT '',
    session_medium   text NOT NULL DEFAULT '',
    -- True until the attribution is computed; set again when a later window brings a touch into
    -- its lookback or changes its session's first event.
    stale            boolean NOT NULL DEFAULT true,
    attributed_through bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX conversions_device_idx ON conversions (tenant_id, device_id, event_time);
CREATE INDEX conversions_session_idx ON conversions (tenant_id, session_id);
CREATE INDEX conversions_time_idx ON conversions (tenant_id, event_time);
CREATE INDEX conversions_stale_idx ON conversions (tenant_id) WHERE stale;

-- The attribution watermark. A reference table on Citus, like rollup_state, so that a tenant's
-- campaign report reads it on the worker holding the tenant's rows, in the same snapshot.
CREATE TABLE attribution_state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_event_id  bigint NOT NULL,
    last_run_at    timestamptz,
    last_rows      bigint
);
INSERT INTO attribution_state (last_event_id) VALUES (0);

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('touches', 'tenant_id', colocate_with => 'events');
        PERFORM create_distributed_table('session_sources', 'tenant_id', colocate_with => 'events');
        PERFORM create_distributed_table('conversions', 'tenant_id', colocate_with => 'events');
        PERFORM create_reference_table('attribution_state');
    END IF;
END
$citus$;

-- The statements of one attribution window, by part, with $1 the window's start (exclusive),
-- $2 its end (inclusive), $3 and $4 the least and greatest event time it can hold. Kept as text
-- so the Citus test can EXPLAIN exactly what advance_attribution() runs.
--
-- Rules (documented in the README, "Campaigns"):
-- * last touch / first touch: the device's touches with
--   conversion time - lookback <= touch time <= conversion time; a click outranks every
--   impression (unless the tenant's attribution_clicks_first is off); among those the latest
--   (last touch) or earliest (first touch) event_time wins; touches of the same time by the
--   least (campaign, source, medium) in byte order;
-- * session: the campaign of the session's first event (see session_sources);
-- * no tie is broken by event id, which depends on arrival order.
CREATE FUNCTION attribution_statement(p_part text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $fn$
DECLARE
    window_events constant text := $w$
        FROM events e JOIN tenants t ON t.tenant_id = e.tenant_id
        WHERE e.event_id > $1 AND e.event_id <= $2
          AND e.event_time >= $3 AND e.event_time <= $4$w$;
    -- The best touch per stale conversion, {order} giving the model's ranking.
    best constant text := $b$
        SELECT DISTINCT ON (c.tenant_id, c.event_id)
               c.tenant_id, c.event_id, c.session_id, x.event_id AS touch_id,
               coalesce(x.campaign, '') AS campaign, coalesce(x.source, '') AS source,
               coalesce(x.medium, '') AS medium
        FROM conversions c
        JOIN tenants t ON t.tenant_id = c.tenant_id
        LEFT JOIN touches x
               ON x.tenant_id = c.tenant_id AND x.device_id = c.device_id
              AND x.event_time <= c.event_time
              AND x.event_time >= c.lookback_start
        WHERE c.stale
        ORDER BY c.tenant_id, c.event_id, (x.is_click OR NOT t.attribution_clicks_first) DESC,
                 x.event_time {order}, x.campaign COLLATE "C", x.source COLLATE "C",
                 x.medium COLLATE "C", x.event_id$b$;
BEGIN
    RETURN CASE p_part
    WHEN 'touches' THEN $s$
        INSERT INTO touches (tenant_id, device_id, event_time, event_id, is_click,
                             campaign, source, medium)
        SELECT e.tenant_id, e.device_id, e.event_time, e.event_id,
               e.event_type <> 'ad_impression', e.campaign,
               coalesce(e.source, ''), coalesce(e.medium, '')$s$ || window_events || $s$
          AND e.campaign IS NOT NULL AND e.campaign <> ''
          AND NOT e.event_type = ANY (t.conversion_event_types)
        ON CONFLICT DO NOTHING$s$
    WHEN 'sessions' THEN $s$
        INSERT INTO session_sources AS s (tenant_id, session_id, first_event_time,
                                          first_event_id, campaign, source, medium,
                                          changed_through)
        SELECT DISTINCT ON (e.tenant_id, e.session_id)
               e.tenant_id, e.session_id, e.event_time, e.event_id,
               coalesce(e.campaign, ''), coalesce(e.source, ''), coalesce(e.medium, ''), $2
        $s$ || window_events || $s$
        ORDER BY e.tenant_id, e.session_id, e.event_time, coalesce(e.campaign, '') = '',
                 coalesce(e.campaign, '') COLLATE "C", coalesce(e.source, '') COLLATE "C",
                 coalesce(e.medium, '') COLLATE "C", e.event_id
        ON CONFLICT (tenant_id, session_id) DO UPDATE
        SET first_event_time = excluded.first_event_time,
            first_event_id = excluded.first_event_id,
            campaign = excluded.campaign, source = excluded.source, medium = excluded.medium,
            changed_through = excluded.changed_through
        WHERE (excluded.first_event_time, excluded.campaign = '',
               excluded.campaign COLLATE "C", excluded.source COLLATE "C",
               excluded.medium COLLATE "C")
            < (s.first_event_time, s.campaign = '', s.campaign COLLATE "C",
               s.source COLLATE "C", s.medium COLLATE "C")$s$
    WHEN 'conversions' THEN $s$
        INSERT INTO conversions (tenant_id, event_id, event_time, event_type, device_id,
                                 session_id, revenue, lookback_start)
        SELECT e.tenant_id, e.event_id, e.event_time, e.event_type, e.device_id, e.session_id,
               coalesce(e.revenue, 0),
               e.event_time - extract(epoch FROM t.attribution_lookback) * interval '1 second'$s$ || window_events || $s$
          AND e.event_type = ANY (t.conversion_event_types)
        ON CONFLICT DO NOTHING$s$
    -- Conversions whose lookback holds a touch of this window.
    WHEN 'stale_touches' THEN $s$
        UPDATE conversions c SET stale = true
        FROM touches x
        WHERE x.tenant_id = c.tenant_id
          AND x.device_id = c.device_id
          AND x.event_id > $1 AND x.event_id <= $2
          AND x.event_time <= c.event_time
          AND x.event_time >= c.lookback_start
          AND NOT c.stale$s$
    -- Conversions whose session's first event changed in this window.
    WHEN 'stale_sessions' THEN $s$
        UPDATE conversions c SET stale = true
        FROM session_sources s
        WHERE s.tenant_id = c.tenant_id AND s.session_id = c.session_id
          AND s.changed_through = $2
          AND NOT c.stale$s$
    WHEN 'attribute' THEN $s$
        UPDATE conversions c
        SET last_touch_id = l.touch_id, last_campaign = l.campaign,
            last_source = l.source, last_medium = l.medium,
            first_touch_id = f.touch_id, first_campaign = f.campaign,
            first_source = f.source, first_medium = f.medium,
            session_campaign = coalesce(s.campaign, ''), session_source = coalesce(s.source, ''),
            session_medium = coalesce(s.medium, ''),
            stale = false, attributed_through = $2
        FROM ($s$ || replace(best, '{order}', 'DESC') || $s$) l
        JOIN ($s$ || replace(best, '{order}', 'ASC') || $s$) f
          ON f.tenant_id = l.tenant_id AND f.event_id = l.event_id
        LEFT JOIN session_sources s
               ON s.tenant_id = l.tenant_id AND s.session_id = l.session_id
        WHERE l.tenant_id = c.tenant_id AND l.event_id = c.event_id$s$
    END;
END
$fn$;

-- Advances attribution over the events committed since its watermark, in the caller's
-- transaction, and moves the watermark in that transaction: a window is processed exactly once.
-- The window ends at the sequence's last value after in-flight writers drained (as rollups do).
-- A conversion is (re)computed when it arrives, when a touch arrives inside its lookback, and
-- when its session gets an earlier first event: once every event is processed the result is
-- the same whatever order they arrived in (a change of a tenant's settings is not replayed over
-- conversions already attributed).
CREATE FUNCTION advance_attribution(
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
    window_end := greatest(window_start, coalesce(pg_sequence_last_value('events_event_id_seq'), 0));
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
        -- No recorded range (only failed writers, or a writer that did not record its range):
        -- read every partition rather than risk missing a row.
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
    END IF;
    UPDATE attribution_state
    SET last_event_id = window_end, last_run_at = now(), last_rows = conversions_attributed;
    milliseconds := extract(epoch FROM clock_timestamp() - started) * 1000;
END
$fn$;

-- Ranges are kept until attribution has passed them too, so it reads only the partitions of
-- its window even when the rollups ran alone. As in V11, the least watermark is read first.
CREATE OR REPLACE FUNCTION prune_event_id_ranges() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    passed bigint;
    gone   bigint;
BEGIN
    SELECT min(last_event_id) INTO passed FROM rollup_state;
    passed := least(passed, (SELECT last_event_id FROM attribution_state));
    DELETE FROM event_id_ranges WHERE id_ceiling <= passed;
    GET DIAGNOSTICS gone = ROW_COUNT;
    RETURN gone;
END
$fn$;

-- pg_cron's procedure runs attribution too, before the rollups, each committed on its own.
CREATE OR REPLACE PROCEDURE run_rollups()
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM advance_attribution();
    COMMIT;
    PERFORM advance_rollups();
    COMMIT;
END
$fn$;
