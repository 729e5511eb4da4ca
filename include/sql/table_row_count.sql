-- A table's exact row count.
SELECT count(*) FROM {table}
