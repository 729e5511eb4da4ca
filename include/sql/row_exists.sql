-- Does a row with this key exist? The condition compares each key column with a bound value.
SELECT EXISTS (SELECT 1 FROM {table} WHERE {condition})
