-- Stored events per tenant and UTC hour of event time, as the truth file counts them.
SELECT tenant_id,
       date_bin('1 hour', event_time, TIMESTAMPTZ 'epoch') AS hour,
       count(*) AS events,
       count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
       coalesce(sum(revenue), 0)::text AS revenue,
       count(DISTINCT device_id) AS devices,
       count(DISTINCT session_id) AS sessions
FROM events
GROUP BY 1, 2
