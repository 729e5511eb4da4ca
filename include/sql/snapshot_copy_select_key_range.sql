-- One range of a table split by its integer primary key: [low, high), a NULL bound open.
SELECT {columns} FROM {table}
WHERE (%(low)s::bigint IS NULL OR {key} >= %(low)s)
  AND (%(high)s::bigint IS NULL OR {key} < %(high)s)
