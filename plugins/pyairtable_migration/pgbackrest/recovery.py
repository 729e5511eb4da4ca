"""Point-in-time recovery: production as it was at a given second, restored into a NEW cluster on a
port of its own (never over the running one), paused exactly at the target, then promoted.

The recoverable window starts one second after the first backup ended (a restore can only begin
from a backup that finished before the target; pgBackRest stamps whole seconds) and ends now.
The target is checked against it before anything is restored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pyairtable_migration.hooks.database import fetch_one, row_count, statement, user_tables
from pyairtable_migration.pgbackrest.cluster import RestoredCluster, RestoreError
from pyairtable_migration.pgbackrest.repository import BackupSet, PgBackRest, StanzaInfo

# After the target, the server pauses (so we can confirm where it stopped), then is promoted.
RECOVERY_OPTIONS = {"hot_standby": "on", "wal_retrieve_retry_interval": "500ms"}
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
PROMOTE_WAIT_SECONDS = 60


class RecoveryRefused(Exception):
    """The request cannot be honoured; nothing was changed. Carries every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class RecoveryWindow:
    earliest: datetime | None
    latest: datetime
    first_backup: str | None

    def describe(self) -> str:
        if self.earliest is None:
            return "no backup yet: nothing can be recovered"
        return (
            f"{self.earliest.isoformat()} (one second after backup {self.first_backup} ended) "
            f"to now ({self.latest.isoformat()})"
        )


def recovery_window(info: StanzaInfo, now: datetime) -> RecoveryWindow:
    if not info.backups:
        return RecoveryWindow(None, now, None)
    first = info.backups[0]
    return RecoveryWindow(first.stopped + timedelta(seconds=1), now, first.label)


def parse_target(text: str) -> datetime:
    """An ISO 8601 timestamp with its zone (`2026-12-03T09:29:34Z`, `... +01:00`)."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise ValueError(
            f"target time {text!r} is not an ISO 8601 timestamp (e.g. 2026-12-03T09:29:34Z)"
        ) from None
    if value.tzinfo is None:
        raise ValueError(f"target time {text!r} has no time zone: add Z or an offset such as +01:00")
    return value.astimezone(UTC)


def check_target(text: str, info: StanzaInfo, now: datetime) -> tuple[datetime, BackupSet]:
    """The target as a UTC time and the backup to start from; RecoveryRefused naming the window."""
    try:
        target = parse_target(text)
    except ValueError as exc:
        raise RecoveryRefused([str(exc)]) from None
    window = recovery_window(info, now)
    if window.earliest is None:
        raise RecoveryRefused([f"stanza {info.name} holds no backup: {window.describe()}"])
    if target > now:
        raise RecoveryRefused(
            [f"target {target.isoformat()} is in the future; available: {window.describe()}"]
        )
    if target < window.earliest:
        raise RecoveryRefused(
            [f"target {target.isoformat()} is before the first backup; available: {window.describe()}"]
        )
    usable = [b for b in info.backups if b.stopped + timedelta(seconds=1) <= target]
    return target, usable[-1]


def recovery_target_text(target: datetime) -> str:
    """The target as PostgreSQL's recovery_target_time reads it, in UTC to the microsecond."""
    return target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def recovery_directory(recovery_dir: str, stanza: str, name: str) -> Path:
    """A directory of its own for each recovery (a run id, say), under the settings' recovery_dir."""
    return Path(recovery_dir) / SAFE_NAME.sub("_", f"{stanza}-{name}").strip("_")


def start_recovery(
    pgbackrest: PgBackRest, cluster: RestoredCluster, target: datetime, backup: BackupSet
) -> None:
    """Restore `backup` into the cluster's new directory, replaying to `target`, and start it."""
    if cluster.data_path.exists() and any(cluster.data_path.iterdir()):
        raise RestoreError(
            f"{cluster.data_path} exists and is not empty: a recovery never restores over a cluster"
        )
    if not cluster.data_path.exists():
        cluster.create()
    pgbackrest.restore(
        cluster.data_path,
        f"--set={backup.label}",
        "--type=time",
        f"--target={recovery_target_text(target)}",
        "--target-action=pause",
    )
    cluster.start(RECOVERY_OPTIONS)


def recovery_reached(state: dict[str, Any]) -> bool:
    """Paused at the target (or already promoted by an earlier try)."""
    return not state["in_recovery"] or state["pause_state"] == "paused"


def promote(cluster: RestoredCluster) -> dict[str, Any]:
    """End recovery where it paused; the cluster's state after."""
    if cluster.state()["in_recovery"]:
        with cluster.hook().cursor() as cursor:
            row = fetch_one(cursor, statement("backup_promote"), {"wait_seconds": PROMOTE_WAIT_SECONDS})
        if not row or not row["promoted"]:
            raise RestoreError(
                f"the restored cluster did not finish promotion within {PROMOTE_WAIT_SECONDS} s"
            )
    return cluster.state()


def table_counts(cluster: RestoredCluster) -> dict[str, int]:
    """Exact row counts of every user table in the restored cluster."""
    counts = {}
    with cluster.hook().cursor() as cursor:
        for table in sorted(user_tables(cursor)):
            counts[str(table)] = row_count(cursor, table)
    return counts
