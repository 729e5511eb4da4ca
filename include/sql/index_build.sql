-- Build one deferred index without blocking writes, from the source's own pg_get_indexdef text
-- after its leading CREATE INDEX (correctly quoted by PostgreSQL).
CREATE INDEX CONCURRENTLY IF NOT EXISTS {definition}
