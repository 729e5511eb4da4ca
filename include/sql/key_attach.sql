-- A deferred primary key or unique constraint, made of the unique index built for it (same name):
-- no scan, as its columns are already NOT NULL. {kind} is PRIMARY KEY or UNIQUE, {deferrable}
-- empty, DEFERRABLE or DEFERRABLE INITIALLY DEFERRED, as on the source.
ALTER TABLE ONLY {table} ADD CONSTRAINT {constraint} {kind} USING INDEX {constraint} {deferrable}
