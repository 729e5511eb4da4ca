-- Is the first LSN at or past the second?
SELECT %(reached)s::pg_lsn >= %(wanted)s::pg_lsn
