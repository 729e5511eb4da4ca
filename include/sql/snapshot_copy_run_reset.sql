-- Forget an earlier run (its rows are being emptied from the target in the same transaction).
DELETE FROM pyairtable_snapshot_copy.copy_range;
DELETE FROM pyairtable_snapshot_copy.copy_run
