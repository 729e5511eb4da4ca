-- Secondary indexes copied after the initial sync: on a user table (not a partitioned parent),
-- valid, not unique, not backing a constraint, not the replica identity.
WITH user_tables AS ({user_tables})
SELECT t.schema_name, t.table_name, ic.relname AS index_name,
       pg_get_indexdef(i.indexrelid) AS definition,
       pg_relation_size(t.relid) AS table_bytes
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN user_tables AS t ON t.relid = i.indrelid
JOIN pg_class AS c ON c.oid = t.relid
WHERE NOT i.indisunique
  AND NOT i.indisprimary
  AND NOT i.indisreplident
  AND i.indisvalid
  AND c.relkind = 'r'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS con WHERE con.conindid = i.indexrelid)
ORDER BY 1, 2, 3
