-- Secondary indexes copied after the initial sync: valid, not unique, not backing a constraint,
-- not the replica identity, not an expression over a partitioned parent.
SELECT n.nspname AS schema_name, t.relname AS table_name, ic.relname AS index_name,
       pg_get_indexdef(i.indexrelid) AS definition,
       pg_relation_size(t.oid) AS table_bytes
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_class AS t ON t.oid = i.indrelid
JOIN pg_namespace AS n ON n.oid = t.relnamespace
WHERE NOT i.indisunique
  AND NOT i.indisprimary
  AND NOT i.indisreplident
  AND i.indisvalid
  AND t.relkind = 'r'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS con WHERE con.conindid = i.indexrelid)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND left(n.nspname, 3) <> 'pg_'
ORDER BY 1, 2, 3
