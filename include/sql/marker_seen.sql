-- Switchover: has the marker (at its latest write) arrived on the other side?
SELECT written_at FROM pyairtable_migration.switchover_marker WHERE id = %(id)s
