-- Preflight, source: user tables the publication would list (logged, partitions
-- included: each publishes its own changes) that have no usable replica identity (no primary key
-- under the default identity, identity NOTHING, or an identity index that is gone or not valid).
-- Their UPDATE and DELETE would fail on the source.
WITH user_tables AS ({user_tables})
SELECT t.schema_name, t.table_name, c.relreplident::text AS identity
FROM user_tables AS t
JOIN pg_class AS c ON c.oid = t.relid
WHERE t.persistence = 'p'
  AND (
      c.relreplident = 'n'
      OR (c.relreplident = 'd' AND NOT EXISTS (
          SELECT 1 FROM pg_index AS i WHERE i.indrelid = c.oid AND i.indisprimary))
      OR (c.relreplident = 'i' AND NOT EXISTS (
          SELECT 1 FROM pg_index AS i WHERE i.indrelid = c.oid AND i.indisreplident AND i.indisvalid))
  )
ORDER BY 1, 2
