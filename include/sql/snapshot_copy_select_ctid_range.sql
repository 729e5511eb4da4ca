-- One range of a table split by pages (any table, with or without a key): tuples whose CTID is
-- in [low, high), a NULL bound open (a TID range scan reads only those pages).
SELECT {columns} FROM {table}
WHERE (%(low)s::tid IS NULL OR ctid >= %(low)s::tid)
  AND (%(high)s::tid IS NULL OR ctid < %(high)s::tid)
