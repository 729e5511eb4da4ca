-- Keys the parallel copy defers until the data is in (one sorted build each instead of an index
-- entry and its WAL per copied row): primary keys and unique constraints of ordinary tables (not
-- partitions, inherited from no parent) of at least %(min_bytes)s bytes, then the foreign keys that
-- reference them (kind f), which cannot exist before them. A key is deferred only where that costs
-- less than it saves: a foreign key added after the data checks every row of its table, one added
-- to the empty table none, so a key whose referencing tables together hold more than its own table
-- is kept (`records` referencing `tables`: 10 M rows checked to save 100 k index entries). With
-- %(min_bytes)s NULL: every such key (what the builds compare the target with). What pg_dump's own
-- entries carry with them comes along: the replica identity and CLUSTER marks of the key's index,
-- the constraint's comment, and the names pg_dump gives those entries (its comment's with
-- quote_ident, as pg_dump quotes them).
WITH user_tables AS ({user_tables}),
keys AS (
    SELECT con.oid, con.conindid, t.schema_name, t.table_name, con.conname, con.contype, c.relkind,
           t.relid
    FROM pg_constraint AS con
    JOIN user_tables AS t ON t.relid = con.conrelid
    JOIN pg_class AS c ON c.oid = t.relid
    WHERE con.conparentid = 0
      AND (
          (con.contype IN ('p', 'u') AND c.relkind = 'r' AND NOT c.relispartition
           AND (%(min_bytes)s IS NULL OR (
               pg_relation_size(t.relid) >= %(min_bytes)s
               AND pg_relation_size(t.relid) > (
                   SELECT coalesce(sum(pg_relation_size(f.conrelid)), 0)
                   FROM pg_constraint AS f
                   WHERE f.contype = 'f' AND f.conindid = con.conindid
               )
           )))
          OR con.contype = 'f'
      )
)
SELECT k.schema_name, k.table_name, k.conname AS constraint_name, k.contype::text AS kind,
       k.relkind = 'p' AS partitioned,
       CASE WHEN k.contype <> 'f' THEN pg_get_indexdef(k.conindid) END AS index_definition,
       pg_get_constraintdef(k.oid) AS definition,
       con.condeferrable AS deferrable, con.condeferred AS initially_deferred,
       coalesce(i.indisreplident, false) AS replica_identity,
       coalesce(i.indisclustered, false) AS clustered,
       obj_description(k.oid, 'pg_constraint') AS comment,
       'CONSTRAINT ' || quote_ident(k.conname) || ' ON ' || quote_ident(k.table_name) AS comment_tag,
       pg_relation_size(k.relid) AS table_bytes
FROM keys AS k
JOIN pg_constraint AS con ON con.oid = k.oid
LEFT JOIN pg_index AS i ON i.indexrelid = k.conindid AND k.contype <> 'f'
WHERE k.contype <> 'f'
   OR k.conindid IN (SELECT conindid FROM keys WHERE contype <> 'f')
ORDER BY k.contype = 'f', 1, 2, 3
