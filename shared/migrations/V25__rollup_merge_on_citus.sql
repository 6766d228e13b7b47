-- The rollups' apply statements pushed down on Citus again. V12's counter merge counted the
-- merged counter's items with a subquery over jsonb_object_keys(); Citus 13.2 refuses that in
-- the INSERT .. SELECT ("correlated subqueries are not supported when the FROM clause contains
-- a set returning function"), so no rollup window could run on a cluster. The count is now the
-- length of the counter's values as a jsonb array (jsonb_path_query_array, a plain function):
-- the same number, and every statement of a window is again one task per shard; it is also
-- cheaper (2,000 counters of 1,000-1,006 items on PostgreSQL 15: 225-231 ms counted through
-- jsonb_object_keys, 99-100 ms as the array's length). Nothing else
-- changes; the text below is V12's otherwise.

CREATE OR REPLACE FUNCTION rollup_pass_statement(p_part text, p_rollup text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $fn$
DECLARE
    keys constant text := $k$
        e.tenant_id, date_bin('5 minutes', e.event_time, TIMESTAMPTZ 'epoch'),
        (e.event_time AT TIME ZONE t.time_zone)::date,
        e.event_time >= $5, e.event_time >= $6, e.event_time >= $7,
        e.event_type, coalesce(e.country, ''), coalesce(e.browser, ''), coalesce(e.campaign, '')$k$;
    stage_columns constant text :=
        'tenant_id, bucket, day, in_5min, in_1hour, in_1day, event_type, country, browser, campaign';
    window_events constant text := $w$
        FROM events e JOIN tenants t ON t.tenant_id = e.tenant_id {lateral}
        WHERE e.event_id > $1 AND e.event_id <= $2
          AND e.event_time >= $3 AND e.event_time <= $4
          AND e.event_time >= least($5, $6, $7)$w$;
    merge constant text := $m$
        CROSS JOIN LATERAL (
            SELECT CASE WHEN win.{list} IS NULL THEN NULL
                        WHEN u.fresh = 0 THEN u.merged
                        WHEN jsonb_array_length(jsonb_path_query_array(u.merged, '$.*')) <= $1
                            THEN u.merged
                        ELSE rollup_topn_prune(u.merged, $1) END AS counter
            FROM (SELECT coalesce(stored.{list}, '{}'::jsonb)
                         || coalesce(jsonb_object_agg(x.key, coalesce((stored.{list} ->> x.key)::bigint, 0)
                                                               + x.value::bigint), '{}'::jsonb)
                             AS merged,
                         count(*) FILTER (WHERE stored.{list} IS NULL OR NOT stored.{list} ? x.key)
                             AS fresh
                  FROM jsonb_each_text(win.{list}) x) u) merged_{list}$m$;
    sql text;
    key text;
    grp text;
    flag text;
BEGIN
    IF p_part = 'stage' THEN
        RETURN 'INSERT INTO rollup_stage (' || stage_columns || ', revenue, device, session)
            SELECT ' || keys || ', e.revenue, hll_hash_bigint(e.device_id),
                   hll_hash_bigint(e.session_id)' || replace(window_events, '{lateral}', '');
    ELSIF p_part = 'items' THEN
        -- Top pages are the URL without its query, cut to fit TopN's 255-byte items.
        RETURN 'INSERT INTO rollup_stage_items (' || stage_columns || ', list, item, n)
            SELECT ' || keys || ', l.list, l.item, count(*)'
            || replace(window_events, '{lateral}', $l$
            CROSS JOIN LATERAL (VALUES
                ('d'::"char", e.device_id::text),
                ('p'::"char", CASE WHEN octet_length(left(split_part(e.page_url, '?', 1), 255)) <= 255
                                   THEN left(split_part(e.page_url, '?', 1), 255)
                                   ELSE left(split_part(e.page_url, '?', 1), 63) END))
                AS l (list, item)$l$) || $s$
          AND l.item IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12$s$;
    END IF;

    SELECT v.key, v.grp, v.flag INTO key, grp, flag
    FROM (VALUES ('5min', 'bucket', '{a}.bucket', 'in_5min'),
                 ('1hour', 'bucket', $g$date_bin('1 hour', {a}.bucket, TIMESTAMPTZ 'epoch')$g$, 'in_1hour'),
                 ('1day', 'day', '{a}.day', 'in_1day')) AS v (rollup, key, grp, flag)
    WHERE v.rollup = p_rollup;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown rollup %', p_rollup USING ERRCODE = 'invalid_parameter_value';
    END IF;

    sql := $s$INSERT INTO {target} AS r (tenant_id, {key}, {columns}, event_count, revenue, purchases,
                       devices, sessions, top_devices, top_pages)
        SELECT w.tenant_id, w.k, {w_columns}, w.event_count, w.revenue, w.purchases,
               w.devices, w.sessions, merged_devices.counter, merged_pages.counter
        FROM (SELECT s.tenant_id, {s_group} AS k, {s_dims},
                     count(*) AS event_count, coalesce(sum(s.revenue), 0) AS revenue,
                     count(*) FILTER (WHERE s.event_type = 'purchase') AS purchases,
                     hll_add_agg(s.device, 14, 5) AS devices,
                     hll_add_agg(s.session, 14, 5) AS sessions
              FROM rollup_stage s {s_lateral}
              WHERE s.{flag}
              GROUP BY {w_group}) w
        LEFT JOIN (
            SELECT i.tenant_id, i.k, {i_dims}
                   jsonb_object_agg(i.item, i.n) FILTER (WHERE i.list = 'd') AS devices,
                   jsonb_object_agg(i.item, i.n) FILTER (WHERE i.list = 'p') AS pages
            FROM (SELECT i.tenant_id, {i_group} AS k, {i_dims} i.list, i.item,
                         sum(i.n)::bigint AS n
                  FROM rollup_stage_items i WHERE i.{flag}
                  GROUP BY {i_inner_group}) i
            GROUP BY {i_outer_group}) n
          ON n.tenant_id = w.tenant_id AND n.k = w.k AND {n_on}
        LEFT JOIN LATERAL (
            SELECT (array_agg(o.top_devices))[1] AS devices, (array_agg(o.top_pages))[1] AS pages
            FROM {target} o
            WHERE o.tenant_id = w.tenant_id AND o.{key} = w.k AND {o_on}) stored ON true
        CROSS JOIN LATERAL (SELECT {win_devices} AS devices, {win_pages} AS pages) win
        {merge_devices}
        {merge_pages}
        ON CONFLICT (tenant_id, {key}, {columns}) DO UPDATE SET
            event_count = r.event_count + excluded.event_count,
            revenue = r.revenue + excluded.revenue,
            purchases = r.purchases + excluded.purchases,
            devices = coalesce(hll_union(r.devices, excluded.devices), r.devices, excluded.devices),
            sessions = coalesce(hll_union(r.sessions, excluded.sessions), r.sessions, excluded.sessions),
            -- Already merged with the stored counter in the SELECT: only rollups write these
            -- rows, one transaction at a time, so the row read there is the row updated here.
            top_devices = coalesce(excluded.top_devices, r.top_devices),
            top_pages = coalesce(excluded.top_pages, r.top_pages)$s$;

    IF p_part = 'rows' THEN
        sql := replace(sql, '{target}', 'rollup_events_' || p_rollup);
        sql := replace(sql, '{columns}', 'event_type, country, browser, campaign');
        sql := replace(sql, '{w_columns}', 'w.event_type, w.country, w.browser, w.campaign');
        sql := replace(sql, '{s_dims}', 's.event_type, s.country, s.browser, s.campaign');
        sql := replace(sql, '{s_lateral}', '');
        sql := replace(sql, '{w_group}', '1, 2, 3, 4, 5, 6');
        sql := replace(sql, '{i_dims}', 'i.event_type, i.country, i.browser, i.campaign,');
        sql := replace(sql, '{i_inner_group}', '1, 2, 3, 4, 5, 6, 7, 8');
        sql := replace(sql, '{i_outer_group}', '1, 2, 3, 4, 5, 6');
        sql := replace(sql, '{n_on}', 'n.event_type = w.event_type AND n.country = w.country
             AND n.browser = w.browser AND n.campaign = w.campaign');
        sql := replace(sql, '{o_on}', 'o.event_type = w.event_type AND o.country = w.country
              AND o.browser = w.browser AND o.campaign = w.campaign');
        sql := replace(sql, '{win_devices}', $x$coalesce(n.devices, '{}'::jsonb)$x$);
        sql := replace(sql, '{win_pages}', $x$coalesce(n.pages, '{}'::jsonb)$x$);
    ELSIF p_part = 'slices' THEN
        -- Top lists are kept on the totals rows only (V6); the other rows keep NULL.
        sql := replace(sql, '{target}', 'rollup_slices_' || p_rollup);
        sql := replace(sql, '{columns}', 'dimension, value');
        sql := replace(sql, '{w_columns}', 'w.dimension, w.value');
        sql := replace(sql, '{s_dims}', 'd.dimension, d.value');
        sql := replace(sql, '{s_lateral}', $x$
              CROSS JOIN LATERAL (VALUES ('', ''), ('event_type', s.event_type),
                                         ('country', s.country), ('browser', s.browser),
                                         ('campaign', s.campaign)) AS d (dimension, value)$x$);
        sql := replace(sql, '{w_group}', '1, 2, 3, 4');
        sql := replace(sql, '{i_dims}', '');
        sql := replace(sql, '{i_inner_group}', '1, 2, 3, 4');
        sql := replace(sql, '{i_outer_group}', '1, 2');
        sql := replace(sql, '{n_on}', $x$w.dimension = ''$x$);
        sql := replace(sql, '{o_on}', $x$o.dimension = '' AND o.value = '' AND w.dimension = ''$x$);
        sql := replace(sql, '{win_devices}', $x$CASE WHEN w.dimension = '' THEN coalesce(n.devices, '{}'::jsonb) END$x$);
        sql := replace(sql, '{win_pages}', $x$CASE WHEN w.dimension = '' THEN coalesce(n.pages, '{}'::jsonb) END$x$);
    ELSE
        RAISE EXCEPTION 'unknown statement part %', p_part USING ERRCODE = 'invalid_parameter_value';
    END IF;
    sql := replace(sql, '{merge_devices}', replace(merge, '{list}', 'devices'));
    sql := replace(sql, '{merge_pages}', replace(merge, '{list}', 'pages'));
    sql := replace(sql, '{s_group}', replace(grp, '{a}', 's'));
    sql := replace(sql, '{i_group}', replace(grp, '{a}', 'i'));
    sql := replace(sql, '{flag}', flag);
    sql := replace(sql, '{key}', key);
    RETURN sql;
END
$fn$;

