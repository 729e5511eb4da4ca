-- The backup check's scratch database, restored into and dropped afterwards.
CREATE DATABASE {database}
