-- The replication session (by its application name) that exported a slot's snapshot and keeps
-- it importable, if it is still connected.
SELECT pid
FROM pg_stat_activity
WHERE backend_type = 'walsender'
  AND application_name = %(application_name)s
