-- Attribution's 'attribute' statement (V19) in one pass per conversion. It joined two
-- DISTINCT ON subqueries over the stale conversions (the last and the first touch) with each
-- other. The stale conversions are marked inside the window's transaction, so the planner's
-- statistics never count them: it took them for one row and joined the two subqueries by a
-- nested loop that sorted the second one again for every conversion. Measured by the campaign
-- benchmark (loadgen bench-campaigns, 200 tenants): windows of 100,000 events took 5 s while
-- few conversions were stale and 60-170 s once 12,425 were (auto_explain: 113 s in that
-- statement, 77 million rows removed by its join filter).
--
-- Now each stale conversion's touches are read once and grouped: the last and the first touch
-- are the first elements of ordered aggregates with the same orderings V19's DISTINCT ON had,
-- so the same touch wins every tie, and every plan the planner can pick is linear in the
-- conversions (an index probe of touches per conversion). On Citus the grouping is by
-- tenant_id, pushed down as before. The other parts are V19's, unchanged.

ALTER FUNCTION attribution_statement(text) RENAME TO attribution_statement_v19;

CREATE FUNCTION attribution_statement(p_part text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $fn$
DECLARE
    last_first constant text :=
        $o$(x.is_click OR NOT t.attribution_clicks_first) DESC, x.event_time DESC,
           x.campaign COLLATE "C", x.source COLLATE "C", x.medium COLLATE "C", x.event_id$o$;
    first_first constant text :=
        $o$(x.is_click OR NOT t.attribution_clicks_first) DESC, x.event_time ASC,
           x.campaign COLLATE "C", x.source COLLATE "C", x.medium COLLATE "C", x.event_id$o$;
BEGIN
    IF p_part <> 'attribute' THEN
        RETURN attribution_statement_v19(p_part);
    END IF;
    RETURN replace(replace($s$
        UPDATE conversions c
        SET last_touch_id = b.last_id, last_campaign = coalesce(b.last_campaign, ''),
            last_source = coalesce(b.last_source, ''), last_medium = coalesce(b.last_medium, ''),
            first_touch_id = b.first_id, first_campaign = coalesce(b.first_campaign, ''),
            first_source = coalesce(b.first_source, ''), first_medium = coalesce(b.first_medium, ''),
            session_campaign = coalesce(s.campaign, ''), session_source = coalesce(s.source, ''),
            session_medium = coalesce(s.medium, ''),
            stale = false, attributed_through = $2
        FROM (
            SELECT c.tenant_id, c.event_id, c.session_id,
                   (array_agg(x.event_id ORDER BY {last}))[1] AS last_id,
                   (array_agg(x.campaign ORDER BY {last}))[1] AS last_campaign,
                   (array_agg(x.source ORDER BY {last}))[1] AS last_source,
                   (array_agg(x.medium ORDER BY {last}))[1] AS last_medium,
                   (array_agg(x.event_id ORDER BY {first}))[1] AS first_id,
                   (array_agg(x.campaign ORDER BY {first}))[1] AS first_campaign,
                   (array_agg(x.source ORDER BY {first}))[1] AS first_source,
                   (array_agg(x.medium ORDER BY {first}))[1] AS first_medium
            FROM conversions c
            JOIN tenants t ON t.tenant_id = c.tenant_id
            LEFT JOIN touches x
                   ON x.tenant_id = c.tenant_id AND x.device_id = c.device_id
                  AND x.event_time <= c.event_time
                  AND x.event_time >= c.lookback_start
            WHERE c.stale
            GROUP BY c.tenant_id, c.event_id, c.session_id) b
        LEFT JOIN session_sources s
               ON s.tenant_id = b.tenant_id AND s.session_id = b.session_id
        WHERE b.tenant_id = c.tenant_id AND b.event_id = c.event_id$s$,
        '{last}', last_first), '{first}', first_first);
END
$fn$;
