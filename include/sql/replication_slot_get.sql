-- A replication slot by name, with its lag behind the current WAL position.
SELECT slot_name, plugin, slot_type, database, active, active_pid,
       confirmed_flush_lsn::text AS confirmed_flush_lsn,
       pg_current_wal_lsn()::text AS current_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes
FROM pg_replication_slots
WHERE slot_name = %(name)s
