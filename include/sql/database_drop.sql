-- Drop the backup check's scratch database, disconnecting any session left in it.
DROP DATABASE IF EXISTS {database} WITH (FORCE)
