-- Whether a subscription streams into this database: replication writes the tables, so the deferred
-- indexes are built CONCURRENTLY.
SELECT EXISTS (
    SELECT 1 FROM pg_subscription
    WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS subscribed
