-- Does a table hold any row?
SELECT EXISTS (SELECT 1 FROM {table})
