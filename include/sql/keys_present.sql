-- Primary, unique and foreign keys of the user tables on this side.
WITH user_tables AS ({user_tables})
SELECT t.schema_name, t.table_name, con.conname AS constraint_name
FROM pg_constraint AS con
JOIN user_tables AS t ON t.relid = con.conrelid
WHERE con.contype IN ('p', 'u', 'f')
