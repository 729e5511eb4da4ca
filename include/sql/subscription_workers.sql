-- The subscription's running workers: the apply worker (relid NULL) and table-sync workers.
SELECT pid, relid::regclass::text AS relation, received_lsn::text, latest_end_lsn::text
FROM pg_stat_subscription
WHERE subname = %(name)s
