-- Has this (restored, replaying) cluster applied WAL up to the given position?
SELECT coalesce(pg_last_wal_replay_lsn() >= %(lsn)s::pg_lsn, false) AS reached,
       pg_last_wal_replay_lsn()::text AS replay_lsn
