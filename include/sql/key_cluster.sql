ALTER TABLE ONLY {table} CLUSTER ON {constraint}
