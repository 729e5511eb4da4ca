-- A foreign key added NOT VALID while replication writes the table, validated without blocking
-- those writes (SHARE UPDATE EXCLUSIVE).
ALTER TABLE {table} VALIDATE CONSTRAINT {constraint}
