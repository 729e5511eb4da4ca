-- A deferred foreign key from the source's own pg_get_constraintdef text (correctly quoted by
-- PostgreSQL), validated as it is added; ONLY but on a partitioned table, as pg_dump writes it.
ALTER TABLE {only} {table} ADD CONSTRAINT {constraint} {definition}
