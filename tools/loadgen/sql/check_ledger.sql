-- The ledger's totals next to the rows it counts. A replayed dead letter (replay_status
-- 'replayed') is an event the ledger has moved from dead-lettered to stored: it is counted
-- among the rows of events, no longer among the dead letters.
SELECT coalesce(sum(received), 0)::bigint AS received,
       coalesce(sum(stored), 0)::bigint AS stored,
       coalesce(sum(duplicates), 0)::bigint AS duplicates,
       coalesce(sum(dead_lettered), 0)::bigint AS dead_lettered,
       (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM dead_letters WHERE replay_status <> 'replayed') AS dead_letter_rows
FROM ingest_ledger
