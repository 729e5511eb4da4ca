-- Each row's key (as text, any key type) and hash, for a table without an integer key.
SELECT row({keys})::text AS key, {row_hash} AS row_hash
FROM {table} AS migration_row
