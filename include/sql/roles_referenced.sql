-- Roles that own, or hold privileges on, the objects a schema dump carries.
SELECT DISTINCT pg_get_userbyid(c.relowner) AS role_name
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND left(n.nspname, 3) <> 'pg_'
UNION
SELECT pg_get_userbyid(n.nspowner)
FROM pg_namespace AS n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND left(n.nspname, 3) <> 'pg_'
UNION
SELECT pg_get_userbyid(a.grantee)
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) AS a
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND left(n.nspname, 3) <> 'pg_'
  AND a.grantee <> 0
