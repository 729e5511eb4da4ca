-- Every sequence with its last value (NULL when never used).
SELECT schemaname, sequencename, last_value, increment_by
FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2
