-- Let logical replication identify rows of a table without a primary key by the whole row.
ALTER TABLE {table} REPLICA IDENTITY FULL
