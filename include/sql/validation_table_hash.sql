-- Rows and an order-independent sum of their row hashes, over the whole table.
SELECT count(*) AS row_count, coalesce(sum({row_hash}), 0) AS row_hash
FROM {table} AS migration_row
