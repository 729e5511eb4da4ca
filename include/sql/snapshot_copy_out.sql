-- A range streamed out of the source: the query is one of snapshot_copy_select_*, the format
-- binary or text.
COPY (
{query}
) TO STDOUT WITH (FORMAT {format})
