-- A range streamed into the target, in the transaction that also records it as copied.
COPY {table} ({columns}) FROM STDIN WITH (FORMAT {format})
