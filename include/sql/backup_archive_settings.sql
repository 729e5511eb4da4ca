-- Production's archiving as the server sees it: the settings pgBackRest depends on, and whether
-- the last archive attempt failed (pg_stat_archiver).
SELECT current_setting('archive_mode') AS archive_mode,
       current_setting('archive_command') AS archive_command,
       current_setting('wal_level') AS wal_level,
       a.archived_count, a.last_archived_wal, a.last_archived_time,
       a.failed_count, a.last_failed_wal, a.last_failed_time
FROM pg_stat_archiver AS a
