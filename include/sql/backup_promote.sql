-- End recovery at the target it paused on: the restored cluster becomes a primary of its own.
SELECT pg_promote(true, %(wait_seconds)s) AS promoted
