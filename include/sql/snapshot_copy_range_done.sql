-- A range copied: recorded in the transaction of its COPY, so it commits with its rows or not at all.
UPDATE pyairtable_snapshot_copy.copy_range
SET copied_rows = %(rows)s, copied_bytes = %(bytes)s, copy_seconds = %(seconds)s,
    copied_in_attempt = %(attempt)s, copied_at = clock_timestamp()
WHERE table_schema = %(table_schema)s AND table_name = %(table_name)s
  AND range_number = %(range_number)s AND copied_at IS NULL
