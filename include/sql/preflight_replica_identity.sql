-- Preflight, source: ordinary tables a FOR ALL TABLES publication would publish that have no
-- usable replica identity (no primary key under the default identity, identity NOTHING, or an
-- identity index that is gone or not valid). Their UPDATE and DELETE would fail on the source.
SELECT n.nspname AS schema_name, c.relname AS table_name, c.relreplident::text AS identity
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND left(n.nspname, 3) <> 'pg_'
  AND (
      c.relreplident = 'n'
      OR (c.relreplident = 'd' AND NOT EXISTS (
          SELECT 1 FROM pg_index AS i WHERE i.indrelid = c.oid AND i.indisprimary))
      OR (c.relreplident = 'i' AND NOT EXISTS (
          SELECT 1 FROM pg_index AS i WHERE i.indrelid = c.oid AND i.indisreplident AND i.indisvalid))
  )
ORDER BY 1, 2
