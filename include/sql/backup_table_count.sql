-- Exact row count of one table.
SELECT count(*) AS row_count FROM {table}
