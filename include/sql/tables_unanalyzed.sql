-- User tables on this side that have no planner statistics yet (a copy just filled them, and
-- neither ANALYZE nor autovacuum has looked at them).
WITH user_tables AS ({user_tables})
SELECT t.schema_name, t.table_name
FROM user_tables AS t
LEFT JOIN pg_stat_user_tables AS s ON s.relid = t.relid
WHERE s.last_analyze IS NULL AND s.last_autoanalyze IS NULL
ORDER BY 1, 2
