-- Where a restored cluster's recovery stands: still replaying, paused at its target, or promoted;
-- the last transaction it replayed and how far into the WAL it got.
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause_state,
       pg_last_xact_replay_timestamp() AS last_replayed_commit,
       coalesce(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text AS replay_lsn,
       current_setting('recovery_target_time') AS recovery_target_time
