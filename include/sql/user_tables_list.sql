-- The user tables logical replication carries (logged; a partition travels with its parent),
-- with their estimated row counts.
WITH user_tables AS ({user_tables})
SELECT schema_name, table_name, estimated_rows
FROM user_tables
WHERE persistence = 'p'
  AND NOT is_partition
ORDER BY 1, 2
