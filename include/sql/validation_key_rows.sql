-- Each row's key and hash for the integer keys given (the re-check of rows that differed).
SELECT {key}::bigint AS key, {row_hash} AS row_hash
FROM {table} AS migration_row
WHERE {key} = ANY(%(keys)s)
