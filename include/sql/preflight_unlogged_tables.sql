-- Preflight, source: unlogged user tables, which logical replication never carries.
WITH user_tables AS ({user_tables})
SELECT schema_name, table_name
FROM user_tables
WHERE persistence = 'u'
ORDER BY 1, 2
