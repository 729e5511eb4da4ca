-- Indexes of the user tables on this side, and whether each is valid (a killed concurrent build
-- leaves an invalid one behind).
WITH user_tables AS ({user_tables})
SELECT t.schema_name, ic.relname AS index_name, i.indisvalid
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN user_tables AS t ON t.relid = i.indrelid
