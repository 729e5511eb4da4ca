-- Rows and an order-independent sum of their row hashes, per key range of `width` starting at origin,
-- over [low, high): one scan answers every range in the slice.
SELECT ({key} - %(origin)s) / %(width)s AS chunk,
       count(*) AS row_count,
       sum({row_hash}) AS row_hash
FROM {table} AS migration_row
WHERE {key} >= %(low)s AND {key} < %(high)s
GROUP BY 1
