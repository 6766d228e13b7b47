-- A too_large dead letter keeps only the first DEAD_LETTER_MAX_PAYLOAD_BYTES of its payload (a
-- 10 MB event must not cost 10 MB of handler memory and database row on every redelivery);
-- payload_bytes is then the size the event had. NULL: the payload is whole.
ALTER TABLE dead_letters ADD COLUMN payload_bytes bigint;
