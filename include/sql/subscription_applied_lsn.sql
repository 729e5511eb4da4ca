-- How far the subscriber has applied the publisher's WAL (its replication origin).
SELECT o.remote_lsn::text
FROM pg_replication_origin_status AS o
JOIN pg_subscription AS s ON o.external_id = 'pg_' || s.oid
WHERE s.subname = %(name)s
