-- The roles writers log in as through the pooler(s), as this server sees them: whether each
-- exists, may log in (LOGIN, a connection limit other than 0, not expired) and may connect to this
-- database.
SELECT name AS role_name,
       r.rolname IS NOT NULL AS present,
       coalesce(r.rolcanlogin, false) AS can_login,
       r.rolconnlimit = 0 AS no_connections,
       r.rolvaliduntil IS NOT NULL AND r.rolvaliduntil < now() AS expired,
       r.rolvaliduntil::text AS valid_until,
       r.rolname IS NOT NULL AND has_database_privilege(r.oid, current_database(), 'CONNECT') AS can_connect,
       current_database() AS database_name
FROM unnest(%(names)s::text[]) AS name
LEFT JOIN pg_roles AS r ON r.rolname = name
ORDER BY 1
