-- The key that made a share token: revoking the key revokes its links. NULL for links made
-- before this column existed, or by an operator with the CLI (those live until revoked or
-- expired). No foreign key: api_keys and share_tokens are both reference tables on Citus, and
-- keys are never deleted, only revoked.
-- Through EXECUTE, one command each: Citus forwards the text of a DDL command on a reference
-- table to the workers, which refuse a multi-statement migration as one command.
DO $alter$
BEGIN
    EXECUTE 'ALTER TABLE share_tokens ADD COLUMN created_by text';
    EXECUTE 'CREATE INDEX share_tokens_created_by_idx ON share_tokens (created_by) '
            'WHERE created_by IS NOT NULL';
END
$alter$;
