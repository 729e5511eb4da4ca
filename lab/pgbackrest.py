"""pgBackRest for the lab's target cluster (production): a real stanza whose repository is a
directory under the lab's data dir, written from the project's own backup settings model.

The target runs with archive_mode=on and its archive_command pushes every WAL segment through
pgbackrest; the stanza is created once the cluster answers (`ensure_stanza`, from its seed).
The lab's migration config carries these settings as its `backup` section (lab/migration_config.py).
"""

from __future__ import annotations

from pathlib import Path

from lab.processes import Binary, LabError, apt_hint, run_as_service, service_dir, write_private
from lab.settings import LabSettings
from pyairtable_migration.pgbackrest.repository import archive_command, render_config
from pyairtable_migration.pgbackrest.settings import BackupSettings

BINARY = Binary(Path("/usr/bin/pgbackrest"), apt_hint("pgbackrest"))
STANZA = "pyairtable"
TARGET_CONN_ID = "pyairtable_target_db"


def root(settings: LabSettings) -> Path:
    return settings.data_dir / "pgbackrest"


def backup_settings(settings: LabSettings) -> BackupSettings:
    """The lab's production stanza: repository, logs, locks and restores all under the data dir."""
    base = root(settings)
    return BackupSettings(
        stanza=STANZA,
        config_path=str(base / "pgbackrest.conf"),
        repository={"type": "local", "path": str(base / "repo")},  # type: ignore[arg-type]
        pg_data_path=str(settings.data_dir / "postgres" / "target"),
        pg_port=settings.postgres_target_port,
        pg_socket_path=str(settings.data_dir / "run"),
        target_conn_id=TARGET_CONN_ID,
        scratch_dir=str(base / "restore" / "scratch"),
        recovery_dir=str(base / "restore" / "recovery"),
        log_path=str(base / "log"),
        lock_path=str(base / "lock"),
        spool_path=str(base / "spool"),
    )


def server_settings(settings: LabSettings) -> str:
    """The target's lab.conf lines that archive every WAL segment into the stanza."""
    command = archive_command(backup_settings(settings)).replace("'", "''")
    return f"archive_mode = on\narchive_command = '{command}'\narchive_timeout = 60\n"


def prepare(settings: LabSettings) -> None:
    """Directories owned by the service user (postgres runs archive-push) and the config. Safe to
    repeat; refuses early when pgbackrest is not installed."""
    BINARY.require("postgres-target (archive_command)")
    backup = backup_settings(settings)
    base = service_dir(root(settings))
    base.chmod(0o755)  # the restore directories below are entered by root and by postgres
    for path in (backup.repository.path, backup.log_path, backup.lock_path, backup.spool_path):
        service_dir(Path(path))
    write_private(Path(backup.config_path), render_config(backup), for_service=True)


def ensure_stanza(settings: LabSettings) -> None:
    """`stanza-create`: a no-op once the stanza matches this cluster."""
    backup = backup_settings(settings)
    command = ["pgbackrest", f"--config={backup.config_path}", f"--stanza={backup.stanza}", "stanza-create"]
    try:
        run_as_service(command, timeout=120)
    except LabError as exc:
        raise LabError(f"pgBackRest stanza {backup.stanza} for postgres-target: {exc}") from None
