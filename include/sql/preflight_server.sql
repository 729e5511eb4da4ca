-- Preflight, either side: the server facts logical replication depends on (read only).
SELECT
    current_setting('server_version_num')::int AS server_version_num,
    current_setting('server_version') AS server_version,
    current_setting('server_encoding') AS server_encoding,
    current_setting('wal_level') AS wal_level,
    current_setting('max_replication_slots')::int AS max_replication_slots,
    (SELECT count(*) FROM pg_replication_slots)::int AS used_replication_slots,
    current_setting('max_wal_senders')::int AS max_wal_senders,
    (SELECT count(*) FROM pg_stat_replication)::int AS used_wal_senders,
    current_setting('max_logical_replication_workers')::int AS max_logical_replication_workers,
    current_setting('max_connections')::int AS max_connections,
    current_setting('superuser_reserved_connections')::int AS reserved_connections,
    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used_connections,
    current_user AS role_name,
    r.rolsuper AS is_superuser,
    r.rolreplication AS has_replication,
    (SELECT count(*) FROM pg_largeobject_metadata)::bigint AS large_objects
FROM pg_roles AS r
WHERE r.rolname = current_user
