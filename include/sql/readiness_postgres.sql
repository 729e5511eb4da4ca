-- Services phase, infrastructure readiness: the database answers, and how.
-- Read only; run through the configured connection (database.source_conn_id by default).
SELECT
    current_setting('server_version') AS server_version,
    pg_is_in_recovery() AS in_recovery,
    current_database() AS database,
    (SELECT count(*) FROM pg_stat_activity) AS connections,
    current_setting('max_connections')::int AS max_connections
