-- Build one deferred index without blocking writes, from the source's own pg_get_indexdef text
-- after its leading CREATE [UNIQUE] INDEX (correctly quoted by PostgreSQL).
CREATE {unique} INDEX CONCURRENTLY IF NOT EXISTS {definition}
