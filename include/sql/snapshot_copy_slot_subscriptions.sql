-- Subscriptions of this database that stream from a given slot of the publisher.
SELECT s.subname
FROM pg_subscription AS s
JOIN pg_database AS d ON d.oid = s.subdbid
WHERE d.datname = current_database() AND s.subslotname = %(slot)s
ORDER BY 1
