-- Each row's key and hash within an integer key range, to name the rows that differ.
SELECT {key}::bigint AS key, {row_hash} AS row_hash
FROM {table} AS migration_row
WHERE {key} >= %(low)s AND {key} < %(high)s
