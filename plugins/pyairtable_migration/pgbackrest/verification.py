"""Proof that production can be restored, without touching production's cluster: `pgbackrest verify`
reads the repository back, the latest backup is restored into a scratch cluster on its own port,
and that copy is compared with production by the project's validator, then removed.

The copy runs as a standby replaying production's archived WAL. Production keeps taking writes,
so the validator's first pass may find rows the copy has not replayed yet; before each re-check,
production closes its current WAL segment and the copy replays up to it (the validator's
`catch_up`), exactly as the replication check waits for its subscriber. What still differs after
that is a real difference between production and what its backup and archive restore.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyairtable_migration.hooks.database import MigrationPostgresHook, fetch_one, statement
from pyairtable_migration.pgbackrest.cluster import RestoredCluster, RestoreError, free_port
from pyairtable_migration.pgbackrest.repository import PgBackRest
from pyairtable_migration.postgres.validator import Validator

STANDBY_OPTIONS = {
    "hot_standby": "on",
    # The comparison's long scans must not be cancelled by replay, nor replay wait on them forever:
    # the copy is ours alone.
    "max_standby_archive_delay": "-1",
    "wal_retrieve_retry_interval": "500ms",
}
CATCH_UP_TIMEOUT_SECONDS = 300.0


def replay_catch_up(
    production: MigrationPostgresHook, copy: MigrationPostgresHook, timeout: float = CATCH_UP_TIMEOUT_SECONDS
) -> Callable[[], None]:
    """The validator's catch-up: production closes its WAL segment, the copy replays up to its end."""

    def catch_up() -> None:
        with production.cursor() as cursor:
            row = fetch_one(cursor, statement("backup_switch_wal"))
        assert row is not None
        lsn = row["switch_lsn"]
        deadline = time.monotonic() + timeout
        while True:
            with copy.cursor() as cursor:
                reached = fetch_one(cursor, statement("backup_replay_reached"), {"lsn": lsn})
            assert reached is not None
            if reached["reached"]:
                return
            if time.monotonic() > deadline:
                raise RestoreError(
                    f"the restored copy replayed only to {reached['replay_lsn']} within {timeout:.0f} s, "
                    f"production is past {lsn}: is WAL still reaching the repository?"
                )
            time.sleep(0.2)

    return catch_up


def verify_latest_backup(
    pgbackrest: PgBackRest,
    production: MigrationPostgresHook,
    *,
    parallelism: int = 2,
    log: Any = None,
) -> dict[str, Any]:
    """verify, restore the latest backup to scratch, compare with production, remove; the figures
    and the comparison's summary (its `passed` says whether the restore equals production)."""
    settings = pgbackrest.settings
    started = time.monotonic()
    pgbackrest.verify()
    verified = time.monotonic()
    latest = pgbackrest.info().latest
    if latest is None:
        raise RestoreError(f"stanza {settings.stanza} holds no backup to verify")
    scratch = RestoredCluster(settings, Path(settings.scratch_dir), free_port())
    scratch.remove()  # what an interrupted run left behind
    try:
        scratch.create()
        pgbackrest.restore(scratch.data_path, f"--set={latest.label}", "--type=standby")
        restored = time.monotonic()
        scratch.start(STANDBY_OPTIONS)
        scratch.wait_accepting(settings.restore_timeout_seconds)
        consistent = time.monotonic()
        copy = scratch.hook()
        report = Validator(
            production,
            copy,
            chunk_rows=settings.validation_chunk_rows,
            parallelism=parallelism,
            catch_up=replay_catch_up(production, copy),
            log=log,
        ).run()
    finally:
        scratch.remove()
    return {
        "backup": latest.summary(),
        "verify_seconds": round(verified - started, 2),
        "restore_seconds": round(restored - verified, 2),
        "consistent_seconds": round(consistent - restored, 2),
        "compare": report.summary(),
        "differences": [d.describe() for d in report.differences]
        + [f"{table}: missing in the restored copy" for table in report.missing_tables],
        "passed": report.passed,
    }
