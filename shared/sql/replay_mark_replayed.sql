-- Marks dead letters whose events the replay stored. $1 their ids, $2 when.
UPDATE dead_letters SET replay_status = 'replayed', replayed_at = $2
WHERE dead_letter_id = ANY($1) AND replay_status = 'pending'
