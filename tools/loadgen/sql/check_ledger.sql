-- The ledger's totals next to the rows it counts.
SELECT coalesce(sum(received), 0)::bigint AS received,
       coalesce(sum(stored), 0)::bigint AS stored,
       coalesce(sum(duplicates), 0)::bigint AS duplicates,
       coalesce(sum(dead_lettered), 0)::bigint AS dead_lettered,
       (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM dead_letters) AS dead_letter_rows
FROM ingest_ledger
