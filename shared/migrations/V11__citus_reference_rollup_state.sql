-- Reports router-planned on Citus: rollup_state becomes a reference table.
--
-- Every report reads its rollup's watermark inside the statement that reads the rollup rows
-- and the raw events above it. As a coordinator table, the watermark made Citus run that
-- statement in steps (the coordinator subquery first, then each shard part, then a merge on
-- the coordinator): 3-4 round trips. As a reference table it has a copy on every node, so a
-- tenant's report is one task on the worker holding the tenant's shards, and it reads the
-- watermark from the same node, in the same local snapshot as the rollup rows (a rollup run
-- writes both in one distributed transaction). Rollups still run on the coordinator; the
-- watermark row is locked there as before. Nothing changes on plain PostgreSQL.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_reference_table('rollup_state');
    END IF;
END
$citus$;

-- A modification of a coordinator table cannot read a reference table in the same statement
-- on Citus ("relation event_id_ranges is not distributed"): read the least watermark first.
CREATE OR REPLACE FUNCTION prune_event_id_ranges() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    passed bigint;
    gone   bigint;
BEGIN
    SELECT min(last_event_id) INTO passed FROM rollup_state;
    DELETE FROM event_id_ranges WHERE id_ceiling <= passed;
    GET DIAGNOSTICS gone = ROW_COUNT;
    RETURN gone;
END
$fn$;
