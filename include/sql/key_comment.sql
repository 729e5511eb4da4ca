COMMENT ON CONSTRAINT {constraint} ON {table} IS %(comment)s
