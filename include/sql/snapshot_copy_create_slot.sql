-- Replication protocol (a connection with replication=database), not SQL: the forward slot for
-- pgoutput, and the snapshot its changes start after, exported for the parallel copy to import.
-- The snapshot stays importable while this session runs no other command and stays open. This
-- grammar has no comments: snapshot_copy.py sends the command without these lines.
CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput EXPORT_SNAPSHOT
