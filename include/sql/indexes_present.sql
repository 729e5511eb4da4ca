-- Indexes present on this side, and whether each is valid (a killed concurrent build leaves an
-- invalid one behind).
SELECT n.nspname AS schema_name, ic.relname AS index_name, i.indisvalid
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = ic.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
