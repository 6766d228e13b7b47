-- Starts a replay of one tenant's dead letters. Replays of the same tenant queue on a
-- transaction-level advisory lock: the one that waited then finds what the first replayed no
-- longer pending. $1 the tenant.
-- Answers when the tenant was registered (NULL: it is not), and the events sequence's last
-- value, read before this transaction takes any id: the floor of the range it records in
-- event_id_ranges.
SELECT (SELECT t.created_at FROM tenants t WHERE t.tenant_id = $1) AS registered_at,
       coalesce(pg_sequence_last_value('events_event_id_seq'), 0) AS id_floor
FROM pg_advisory_xact_lock(hashtextextended('remarketable.replay_dead_letters', $1)) AS locked
