-- Has a parallel copy ever run on this cluster (its progress table exists)?
SELECT to_regclass('pyairtable_snapshot_copy.copy_run') IS NOT NULL
