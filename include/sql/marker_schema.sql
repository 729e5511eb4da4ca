-- The migration's own bookkeeping, on the source before the schema copy (so the target has it
-- too): the switchover writes a marker row on the side writers leave and waits until the other
-- side has applied it, which proves every earlier commit has arrived.
CREATE SCHEMA IF NOT EXISTS pyairtable_migration;
CREATE TABLE IF NOT EXISTS pyairtable_migration.switchover_marker (
    id text PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    written_on text NOT NULL
)
