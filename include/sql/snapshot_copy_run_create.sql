-- A new run: the slot and snapshot every range is copied under.
INSERT INTO pyairtable_snapshot_copy.copy_run (slot, consistent_point, snapshot)
VALUES (%(slot)s, %(consistent_point)s::pg_lsn, %(snapshot)s)
