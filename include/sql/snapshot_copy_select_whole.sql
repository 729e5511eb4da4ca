-- What the parallel copy reads of a table it does not split.
SELECT {columns} FROM {table}
