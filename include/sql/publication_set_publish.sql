-- Make an existing publication publish every kind of change.
ALTER PUBLICATION {publication} SET (publish = 'insert, update, delete, truncate')
