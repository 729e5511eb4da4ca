"""pgBackRest for production: archive and backup checks, full backups, verification by a restore
into a scratch cluster off production, and point-in-time recovery into a new cluster.

    settings      the backup configuration (include/migration.yaml's `backup`), every problem named
    repository    the `pgbackrest` command: its config file, check/backup/verify/info/restore
    cluster       a restored cluster started on its own port, read, stopped and removed
    verification  verify + restore the latest backup to scratch + compare with production
    recovery      the recoverable window, a timestamp checked against it, restore to that time
    trigger       the wait until a restored cluster has replayed up to its recovery target
"""
