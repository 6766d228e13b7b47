-- Schedules ReMarketable's upkeep inside PostgreSQL with pg_cron, for deployments that prefer
-- it to the `rollup` and `maintenance` timer functions (run one or the other, not both:
-- runs serialize safely, but twice the work buys nothing).
--
-- pg_cron keeps its jobs in the database named by its `cron.database_name` setting; run this
-- file there, naming the app's database:
--
--   psql "<url of the cron database>" -v target_db=remarketable -f infra/sql/pg_cron.sql
--
-- Optional: -v rollup_schedule='* * * * *' (default: every minute)
--           -v maintenance_schedule='7 * * * *' (default: hourly at minute 7)
-- Schedules are five-field cron, in cron.timezone (UTC unless configured). Running the file
-- again updates the jobs (they are named after the target database).
\set ON_ERROR_STOP on
\if :{?target_db}
\else
  \echo 'set the app database: -v target_db=<name>'
  \quit
\endif
\if :{?rollup_schedule}
\else
  \set rollup_schedule '* * * * *'
\endif
\if :{?maintenance_schedule}
\else
  \set maintenance_schedule '7 * * * *'
\endif

CREATE EXTENSION IF NOT EXISTS pg_cron;

-- Each rollup advances and commits in turn (a procedure, so it must be the only statement).
SELECT cron.schedule_in_database(
    'remarketable-rollup-' || :'target_db',
    :'rollup_schedule',
    'CALL run_rollups()',
    :'target_db');

-- Partitions ahead and expired, rollup retention, ledger compaction.
SELECT cron.schedule_in_database(
    'remarketable-maintenance-' || :'target_db',
    :'maintenance_schedule',
    'SELECT count(*) FROM maintain_partitions(''events''); '
    || 'SELECT count(*) FROM apply_rollup_retention(); '
    || 'SELECT compact_ingest_ledger()',
    :'target_db');

SELECT jobid, jobname, schedule, database, command FROM cron.job
WHERE jobname LIKE 'remarketable-%-' || :'target_db' ORDER BY jobname;
