-- Preflight, either side: what the connected role may do, and the facts that tell a managed
-- service (RDS/Aurora, Cloud SQL, Azure) from plain PostgreSQL. Read only; a custom parameter
-- that does not exist reads as NULL.
WITH user_tables AS ({user_tables}),
known AS (
    SELECT r.oid, r.rolname
    FROM pg_roles AS r
    WHERE r.rolname IN (
        'rds_superuser', 'rds_replication', 'cloudsqlsuperuser', 'azure_pg_admin', 'pg_create_subscription'
    )
)
SELECT
    current_user AS role_name,
    r.rolsuper AS is_superuser,
    r.rolreplication AS has_replication,
    current_setting('server_version_num')::int AS server_version_num,
    current_setting('wal_level') AS wal_level,
    current_setting('rds.logical_replication', true) AS rds_logical_replication,
    current_setting('cloudsql.logical_decoding', true) AS cloudsql_logical_decoding,
    has_database_privilege(current_database(), 'CREATE') AS can_create_in_database,
    ARRAY(SELECT k.rolname FROM known AS k ORDER BY 1)::text[] AS roles_present,
    ARRAY(
        SELECT k.rolname FROM known AS k WHERE pg_has_role(r.oid, k.oid, 'MEMBER') ORDER BY 1
    )::text[] AS member_of,
    ARRAY(
        SELECT quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
        FROM user_tables AS t
        JOIN pg_class AS c ON c.oid = t.relid
        WHERE NOT pg_has_role(r.oid, c.relowner, 'USAGE')
        ORDER BY 1
    )::text[] AS tables_not_owned,
    ARRAY(
        SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
        FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S'
          AND n.nspname <> 'information_schema'
          AND left(n.nspname, 3) <> 'pg_'
          -- CASE: the planner may test other relations before relkind, and only a sequence has one
          AND CASE WHEN c.relkind = 'S' THEN NOT has_sequence_privilege(r.oid, c.oid, 'UPDATE') END
        ORDER BY 1
    )::text[] AS sequences_not_updatable
FROM pg_roles AS r
WHERE r.rolname = current_user
