-- Dead letters per reason and tenant (NULL: the tenant could not be read).
SELECT reason, tenant_id, count(*) AS dead_letters
FROM dead_letters
GROUP BY 1, 2
