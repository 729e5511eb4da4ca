-- Build one deferred index while nothing writes the target yet (no subscription streams into it):
-- one scan instead of CONCURRENTLY's two, and several on one table side by side (their SHARE locks
-- do not conflict). From the source's own pg_get_indexdef text after its leading CREATE [UNIQUE] INDEX.
CREATE {unique} INDEX IF NOT EXISTS {definition}
