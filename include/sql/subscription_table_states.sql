-- Per table of a subscription: its sync state (i init, d data copy, f finished copy, s synced,
-- r ready).
SELECT n.nspname AS schema_name, c.relname AS table_name, sr.srsubstate::text AS state
FROM pg_subscription_rel AS sr
JOIN pg_subscription AS s ON s.oid = sr.srsubid
JOIN pg_class AS c ON c.oid = sr.srrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE s.subname = %(name)s
ORDER BY 1, 2
