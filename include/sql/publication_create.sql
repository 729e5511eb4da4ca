-- Every table, present and future, every kind of change.
CREATE PUBLICATION {publication} FOR ALL TABLES
    WITH (publish = 'insert, update, delete, truncate')
