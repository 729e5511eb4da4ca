-- Security check: every replication object of this cluster (publications, this database's
-- subscriptions, slots) and every non-superuser role with REPLICATION (built-in pg_* roles aside);
-- `own`: the role this check logs in as (the migration's, which the reverse path connects as).
SELECT 'publication' AS kind, pubname::text AS name, false AS own FROM pg_publication
UNION ALL
SELECT 'subscription', subname::text, false FROM pg_subscription
WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
UNION ALL
SELECT 'slot', slot_name::text, false FROM pg_replication_slots
UNION ALL
SELECT 'replication role', rolname::text, rolname = current_user FROM pg_roles
WHERE rolreplication AND NOT rolsuper AND left(rolname, 3) <> 'pg_'
