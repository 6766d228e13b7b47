-- Distinct devices and sessions per tenant over all hours.
SELECT tenant_id,
       count(DISTINCT device_id) AS devices,
       count(DISTINCT session_id) AS sessions
FROM events
GROUP BY 1
