-- Every user table, every kind of change. Listed (FOR TABLE), not FOR ALL TABLES: the tables'
-- owner may create it, where FOR ALL TABLES takes a superuser, which no role is on RDS/Aurora,
-- Cloud SQL or Azure. Tables created later are not published, as logical replication carries no
-- DDL anyway; the schema drift check refuses the switchover while the two sides differ.
CREATE PUBLICATION {publication} FOR TABLE {tables}
    WITH (publish = 'insert, update, delete, truncate')
