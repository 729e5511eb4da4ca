-- Every row's hash, for a table without a primary key (compared as a multiset).
SELECT {row_hash} AS row_hash
FROM {table} AS migration_row
