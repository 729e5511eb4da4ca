-- One planned range of a new run, not yet copied.
INSERT INTO pyairtable_snapshot_copy.copy_range
    (table_schema, table_name, range_number, method, key_column, low, high, estimated_bytes,
     estimated_rows)
VALUES (%(table_schema)s, %(table_name)s, %(range_number)s, %(method)s, %(key_column)s, %(low)s,
        %(high)s, %(estimated_bytes)s, %(estimated_rows)s)
