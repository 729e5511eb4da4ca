-- Does this cluster hold the migration's own schema? On the target: a copy this migration made;
-- on the source: the switchover's marker table is already there.
SELECT to_regclass('pyairtable_migration.switchover_marker') IS NOT NULL AS is_ours
