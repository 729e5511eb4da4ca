-- The smallest and largest value of an integer primary key.
SELECT min({key})::bigint, max({key})::bigint FROM {table}
