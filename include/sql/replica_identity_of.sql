-- The replica identity of one table: d(efault), n(othing), f(ull) or i(ndex).
SELECT c.relreplident::text
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s
