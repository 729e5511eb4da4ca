-- Target: does it hold the migration's own schema (a copy this migration made)?
SELECT to_regclass('pyairtable_migration.switchover_marker') IS NOT NULL AS is_ours
