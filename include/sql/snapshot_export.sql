-- Backup check: a read-only snapshot other sessions (pg_dump --snapshot) can share; the
-- transaction that exports it must stay open while they use it.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SELECT pg_export_snapshot()
