"""The backup configuration: where pgBackRest keeps production's backups and WAL, how long, and
where restores go: the `backup` section of the migration's configuration (include/migration.yaml,
or $PYAIRTABLE_MIGRATION_CONFIG); a bad section is refused with every problem named at once.

`method: rds` is for a managed production (Aurora, RDS) where no pgBackRest reaches the data
directory: the service's automated backups give the point-in-time window, and the migration takes
a manual cluster snapshot through the RDS API (`rds`: the cluster and the AWS connection).

Secrets never live here: an S3 repository's keys come from the Airflow AWS connection
`repository.aws_conn_id` (or the instance's IAM role with `s3_key_type: auto`).

    python -m pyairtable_migration.pgbackrest.settings check [PATH]    validate
    python -m pyairtable_migration.pgbackrest.settings render [PATH]   print pgbackrest.conf
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, StringConstraints, ValidationError, model_validator

from pyairtable_migration.problems import ConfigError, StrictModel, describe_error

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[3] / "include" / "migration.yaml"
CONFIG_VARIABLE = "PYAIRTABLE_MIGRATION_CONFIG"
SECTION = "backup"

# pgBackRest's own rule for a stanza name; it also becomes a directory name in the repository.
Stanza = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
ConnId = Annotated[str, StringConstraints(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
AbsolutePath = Annotated[str, StringConstraints(pattern=r"^/\S*$")]
Positive = Annotated[int, Field(gt=0)]


class BackupConfigError(ConfigError):
    """Every problem found in the backup configuration, so all can be fixed in one pass."""

    def __init__(self, problems: list[str], source: str = "backup configuration") -> None:
        super().__init__(problems, source)


class RepositorySettings(StrictModel):
    """Where backups and archived WAL go: a directory (`local`) or an S3 bucket."""

    type: Literal["local", "s3"] = "local"
    # local: the repository directory; s3: the prefix inside the bucket.
    path: AbsolutePath = "/var/lib/pgbackrest"
    s3_bucket: str = ""
    s3_region: str = ""
    s3_endpoint: str = ""  # e.g. s3.eu-west-1.amazonaws.com
    s3_uri_style: Literal["host", "path"] = "host"
    s3_verify_tls: bool = True
    # shared: keys from the Airflow connection `aws_conn_id`; auto: the host's IAM role.
    s3_key_type: Literal["shared", "auto"] = "shared"
    aws_conn_id: ConnId | None = None

    @model_validator(mode="after")
    def _s3_complete(self) -> RepositorySettings:
        if self.type != "s3":
            return self
        problems = [
            f"repository.{name}: required for an s3 repository"
            for name in ("s3_bucket", "s3_region", "s3_endpoint")
            if not getattr(self, name)
        ]
        if self.s3_key_type == "shared" and not self.aws_conn_id:
            problems.append(
                "repository.aws_conn_id: required with s3_key_type shared (the keys come from that "
                "Airflow connection; or set s3_key_type: auto for the host's IAM role)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RdsBackupSettings(StrictModel):
    """Production as a managed cluster: its backups are the service's, reached by the RDS API."""

    aws_conn_id: ConnId
    db_cluster_identifier: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,62}$")]
    # Manual snapshots this project takes are named <prefix>-<run>, tagged with the run id.
    snapshot_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,40}$")] = (
        "pyairtable-migration"
    )
    # Automated backups kept at least this long: the point-in-time window production must have.
    min_retention_days: Positive = 7
    snapshot_timeout_seconds: Positive = 3600
    poll_seconds: Annotated[float, Field(gt=0)] = 10.0


class BackupSettings(StrictModel):
    """pgBackRest for the production cluster, and where this project restores its backups; or, with
    `method: rds`, the managed cluster whose snapshots and automated backups stand for them."""

    method: Literal["pgbackrest", "rds"] = "pgbackrest"
    rds: RdsBackupSettings | None = None
    stanza: Stanza = "pyairtable"
    # The pgbackrest.conf every command reads (rendered from these settings: `render`).
    config_path: AbsolutePath = "/etc/pgbackrest/pgbackrest.conf"
    repository: RepositorySettings = RepositorySettings()
    retention_full_days: Positive = 30
    compress_type: Literal["lz4", "zst", "gz", "none"] = "lz4"
    process_max: Positive = 2
    # Production's cluster as pgBackRest reaches it (on this host, over the unix socket).
    pg_data_path: AbsolutePath = "/var/lib/postgresql/15/main"
    pg_port: Positive = 5432
    pg_socket_path: AbsolutePath = "/var/run/postgresql"
    pg_user: str = "postgres"
    pg_bin_dir: AbsolutePath = "/usr/lib/postgresql/15/bin"
    # The OS user pgBackRest and restored clusters run as (PostgreSQL refuses root).
    os_user: str = "postgres"
    # Production's Airflow connection: archive settings read, restored data compared with it.
    target_conn_id: ConnId = "pyairtable_target_db"
    # Verification restores here, then removes it; each recovery gets a new directory below.
    scratch_dir: AbsolutePath = "/var/lib/pgbackrest-restore/scratch"
    recovery_dir: AbsolutePath = "/var/lib/pgbackrest-restore/recovery"
    log_path: AbsolutePath = "/var/log/pgbackrest"
    lock_path: AbsolutePath = "/tmp/pgbackrest"
    spool_path: AbsolutePath = "/var/spool/pgbackrest"
    # Schedule hints for the team's own scheduler; this project takes one full backup per migration.
    full_backup_schedule: str = "0 1 * * 0"
    differential_backup_schedule: str = "0 1 * * 1-6"
    backup_timeout_seconds: Positive = 6 * 3600
    restore_timeout_seconds: Positive = 6 * 3600
    recovery_timeout_seconds: Positive = 6 * 3600
    validation_chunk_rows: Positive = 100_000

    @property
    def managed(self) -> RdsBackupSettings | None:
        """The managed cluster whose backups stand for production's (`method: rds`), else None."""
        return self.rds if self.method == "rds" else None

    @model_validator(mode="after")
    def _rds_named(self) -> BackupSettings:
        if self.method == "rds" and self.rds is None:
            raise ValueError("rds: required with method rds (aws_conn_id, db_cluster_identifier)")
        return self

    @model_validator(mode="after")
    def _distinct_paths(self) -> BackupSettings:
        paths = {
            "pg_data_path": self.pg_data_path,
            "scratch_dir": self.scratch_dir,
            "recovery_dir": self.recovery_dir,
        }
        if self.repository.type == "local":
            paths["repository.path"] = self.repository.path
        problems = []
        names = list(paths)
        for index, first in enumerate(names):
            for second in names[index + 1 :]:
                a, b = Path(paths[first]), Path(paths[second])
                if a == b or a in b.parents or b in a.parents:
                    problems.append(
                        f"{first} ({a}) and {second} ({b}) overlap: a restore would write into the other"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def parse_backup_settings(data: Any, source: str = "backup configuration") -> BackupSettings:
    """Validate a mapping; raise BackupConfigError naming every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BackupConfigError([f"expected a mapping, got {type(data).__name__}"], source)
    try:
        return BackupSettings.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors():
            if error["type"] == "value_error":
                # The model's own checks name their fields and join several problems with "; ".
                problems.extend(error["msg"].removeprefix("Value error, ").split("; "))
            else:
                problems.append(describe_error(error))
        raise BackupConfigError(problems, source) from None


def default_path() -> Path:
    return Path(os.environ.get(CONFIG_VARIABLE) or DEFAULT_CONFIG_PATH)


def load_backup_settings(path: str | Path | None = None) -> BackupSettings:
    """The `backup` section of a migration configuration file (defaults where it has none)."""
    path = Path(path) if path else default_path()
    try:
        text = path.read_text()
    except OSError as exc:
        raise BackupConfigError([f"cannot read: {exc.strerror}"], str(path)) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BackupConfigError([f"not valid YAML: {exc}"], str(path)) from None
    section = document.get(SECTION) if isinstance(document, dict) else None
    return parse_backup_settings(section, f"{path} ({SECTION})")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("check", "render") or len(argv) > 2:
        print(
            "usage: python -m pyairtable_migration.pgbackrest.settings check|render [PATH]", file=sys.stderr
        )
        return 2
    try:
        settings = load_backup_settings(argv[1] if len(argv) == 2 else None)
    except BackupConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if argv[0] == "render":
        from pyairtable_migration.pgbackrest.repository import render_config

        print(render_config(settings), end="")
    elif (rds := settings.managed) is not None:
        print(
            f"OK: RDS cluster {rds.db_cluster_identifier} (connection {rds.aws_conn_id}), "
            f"automated backups kept at least {rds.min_retention_days} days"
        )
    else:
        print(
            f"OK: stanza {settings.stanza}, {settings.repository.type} repository, "
            f"full backups kept {settings.retention_full_days} days"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
