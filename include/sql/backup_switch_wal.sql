-- Close the current WAL segment so it is archived now; its end is where a restored copy must replay to.
SELECT pg_switch_wal()::text AS switch_lsn
