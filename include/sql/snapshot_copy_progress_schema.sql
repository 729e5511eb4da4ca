-- The parallel copy's progress, on the target only: the run (which slot and snapshot the rows in
-- the target's tables come from) and its ranges, each marked copied in the transaction of its
-- COPY. UNLOGGED, so neither publications (user_tables_list) nor validation see these tables; a
-- crash of the target server empties them, and the next run then starts over (never copies twice).
CREATE SCHEMA IF NOT EXISTS pyairtable_snapshot_copy;
CREATE UNLOGGED TABLE IF NOT EXISTS pyairtable_snapshot_copy.copy_run (
    slot text NOT NULL,
    consistent_point pg_lsn NOT NULL,
    snapshot text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    planned_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempt_started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE UNLOGGED TABLE IF NOT EXISTS pyairtable_snapshot_copy.copy_range (
    table_schema text NOT NULL,
    table_name text NOT NULL,
    range_number integer NOT NULL,
    method text NOT NULL CHECK (method IN ('whole', 'key', 'ctid')),
    key_column text,
    low bigint,
    high bigint,
    estimated_bytes bigint NOT NULL,
    estimated_rows bigint NOT NULL,
    copied_rows bigint,
    copied_bytes bigint,
    copy_seconds double precision,
    copied_in_attempt integer,
    copied_at timestamptz,
    PRIMARY KEY (table_schema, table_name, range_number)
)
