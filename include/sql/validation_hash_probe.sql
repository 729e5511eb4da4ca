-- Can this table's rows be hashed by their columns' own hash functions (hash_record, PostgreSQL
-- 14+)? A column type without a hash function makes this fail; then rows are hashed as text.
SELECT {row_hash} FROM {table} AS migration_row LIMIT 1
