"""Is production's WAL reaching the repository? Checked before anything relies on it: every
problem named at once, and nothing changed (`pgbackrest check` only closes the current WAL segment).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyairtable_migration.hooks.database import MigrationPostgresHook, fetch_one, statement
from pyairtable_migration.pgbackrest.repository import (
    PgBackRest,
    PgBackRestError,
    StanzaInfo,
    archive_command,
)


@dataclass(frozen=True)
class ArchivingState:
    problems: list[str]
    info: StanzaInfo | None
    archive_mode: str | None


def archiving_state(production: MigrationPostgresHook, pgbackrest: PgBackRest) -> ArchivingState:
    """Production's archive settings, the stanza in the repository, then `pgbackrest check`
    (only when the rest is in order: it would fail for the same reasons, less clearly)."""
    settings = pgbackrest.settings
    problems: list[str] = []
    expected = archive_command(settings)
    archive_mode = None
    try:
        with production.cursor() as cursor:
            row = fetch_one(cursor, statement("backup_archive_settings"))
    except Exception as exc:  # named as a problem, with the others
        problems.append(f"production ({production.describe()}) cannot be read: {str(exc).strip()}")
        row = None
    if row is not None:
        archive_mode = row["archive_mode"]
        if archive_mode not in ("on", "always"):
            problems.append(
                f"archiving is off on production (archive_mode={archive_mode}): set archive_mode=on and "
                f"archive_command='{expected}', then restart it"
            )
        elif (
            f"--stanza={settings.stanza}" not in row["archive_command"]
            or "archive-push" not in row["archive_command"]
        ):
            problems.append(
                f"production's archive_command {row['archive_command']!r} does not push to stanza "
                f"{settings.stanza}: set it to '{expected}'"
            )
        if row["wal_level"] == "minimal":
            problems.append("wal_level=minimal on production: backups need replica or logical")
        if row["last_failed_time"] and (
            row["last_archived_time"] is None or row["last_failed_time"] > row["last_archived_time"]
        ):
            problems.append(
                f"production's last archive attempt failed (WAL {row['last_failed_wal']} at "
                f"{row['last_failed_time']:%Y-%m-%d %H:%M:%S %Z}, {row['failed_count']} failures so far)"
            )
    info = None
    try:
        info = pgbackrest.info()
    except PgBackRestError as exc:
        problems.append(str(exc))
    if info is not None and not info.exists:
        problems.append(
            f"stanza {settings.stanza} does not exist in the repository ({settings.repository.type} "
            f"{settings.repository.path}): create it with "
            f"`pgbackrest --stanza={settings.stanza} stanza-create`"
        )
    if not problems:
        try:
            pgbackrest.check()
        except PgBackRestError as exc:
            problems.append(f"WAL does not reach the repository: {exc}")
    return ArchivingState(problems, info, archive_mode)
