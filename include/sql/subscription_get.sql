-- A subscription by name, in the current database, with its state (no connection string).
SELECT s.oid::bigint AS oid, s.subname, s.subenabled, s.subslotname, s.subpublications,
       s.subdisableonerr, s.subskiplsn::text AS skip_lsn
FROM pg_subscription AS s
JOIN pg_database AS d ON d.oid = s.subdbid
WHERE d.datname = current_database() AND s.subname = %(name)s
