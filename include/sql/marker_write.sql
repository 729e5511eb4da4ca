-- Switchover: the marker, written on the side writers are leaving.
INSERT INTO pyairtable_migration.switchover_marker (id, written_on)
VALUES (%(id)s, %(side)s)
ON CONFLICT (id) DO UPDATE SET written_at = clock_timestamp()
RETURNING written_at
