-- A logical slot for pgoutput, created here and now: it keeps every change made after this point.
SELECT lsn::text FROM pg_create_logical_replication_slot(%(name)s, 'pgoutput')
