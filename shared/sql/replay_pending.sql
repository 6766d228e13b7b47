-- A tenant's pending dead letters after a given one, oldest first, locked until the replay
-- commits (a concurrent discard waits for it). $1 the tenant, $2 the last dead_letter_id
-- already examined (0: from the start), $3 how many.
-- The select list is dead_letters::COLUMNS (a test there checks it).
SELECT dead_letter_id, stream_partition, stream_sequence, stream_offset,
       enqueued_at, received_at, reason, message, replay_status,
       payload_bytes, payload
FROM dead_letters
WHERE tenant_id = $1 AND replay_status = 'pending' AND dead_letter_id > $2
ORDER BY dead_letter_id
LIMIT $3
FOR UPDATE
