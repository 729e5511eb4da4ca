-- The run's ranges, planned and copied, biggest first (the order the workers take them in).
SELECT table_schema, table_name, range_number, method, key_column, low, high, estimated_bytes,
       estimated_rows, copied_rows, copied_bytes, copy_seconds, copied_in_attempt, copied_at
FROM pyairtable_snapshot_copy.copy_range
ORDER BY estimated_bytes DESC, table_schema, table_name, range_number
