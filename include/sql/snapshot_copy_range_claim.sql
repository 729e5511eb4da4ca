-- Lock one range for this transaction's COPY: another copy of the same range waits here until
-- this one commits, then reads it as copied. True when it still needs copying.
SELECT copied_at IS NULL AS pending
FROM pyairtable_snapshot_copy.copy_range
WHERE table_schema = %(table_schema)s AND table_name = %(table_name)s
  AND range_number = %(range_number)s
FOR UPDATE
