"""The `pgbackrest` command for production's stanza: its config file, and the commands the backup
tasks run (check, backup, verify, info, restore), each as the cluster's OS user.

Options that hold secrets (an S3 repository's keys) travel only in the child's environment as
PGBACKREST_REPO1_S3_* variables, never on a command line or in the rendered config; nothing this
module logs or returns contains them.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyairtable_migration.pgbackrest.settings import BackupSettings

BINARY = "pgbackrest"
# `pgbackrest info` status codes for a stanza the repository does not hold (or only partly).
MISSING_STANZA_CODES = frozenset({1, 3})


class PgBackRestError(Exception):
    """A pgbackrest command failed; the message carries its ERROR lines."""


def render_config(settings: BackupSettings) -> str:
    """The pgbackrest.conf for these settings: the repository, retention and production's cluster."""
    repository = settings.repository
    lines = [
        "# Rendered from the backup settings (python -m pyairtable_migration.pgbackrest.settings render).",
        "[global]",
        f"repo1-type={'posix' if repository.type == 'local' else 's3'}",
        f"repo1-path={repository.path}",
        "repo1-retention-full-type=time",
        f"repo1-retention-full={settings.retention_full_days}",
    ]
    if repository.type == "s3":
        lines += [
            f"repo1-s3-bucket={repository.s3_bucket}",
            f"repo1-s3-region={repository.s3_region}",
            f"repo1-s3-endpoint={repository.s3_endpoint}",
            f"repo1-s3-uri-style={repository.s3_uri_style}",
            f"repo1-s3-key-type={repository.s3_key_type}",
            f"repo1-storage-verify-tls={'y' if repository.s3_verify_tls else 'n'}",
        ]
    lines += [
        f"compress-type={settings.compress_type}",
        f"process-max={settings.process_max}",
        f"log-path={settings.log_path}",
        f"lock-path={settings.lock_path}",
        f"spool-path={settings.spool_path}",
        "log-level-console=warn",
        "log-level-file=info",
        "start-fast=y",
        "",
        f"[{settings.stanza}]",
        f"pg1-path={settings.pg_data_path}",
        f"pg1-port={settings.pg_port}",
        f"pg1-socket-path={settings.pg_socket_path}",
        f"pg1-user={settings.pg_user}",
    ]
    return "\n".join(lines) + "\n"


def archive_command(settings: BackupSettings) -> str:
    """The `archive_command` production runs for each WAL segment."""
    return f"{BINARY} --config={settings.config_path} --stanza={settings.stanza} archive-push %p"


def repository_environment(settings: BackupSettings) -> dict[str, str]:
    """The S3 keys from the Airflow AWS connection, as pgBackRest's environment options."""
    repository = settings.repository
    if repository.type != "s3" or repository.s3_key_type != "shared" or not repository.aws_conn_id:
        return {}
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    credentials = AwsBaseHook(aws_conn_id=repository.aws_conn_id, client_type="s3").get_credentials()
    environment = {
        "PGBACKREST_REPO1_S3_KEY": credentials.access_key,
        "PGBACKREST_REPO1_S3_KEY_SECRET": credentials.secret_key,
    }
    if credentials.token:
        environment["PGBACKREST_REPO1_S3_TOKEN"] = credentials.token
    return environment


def os_user(settings: BackupSettings) -> str | None:
    """Who to run as: the cluster's OS user when running as root, else whoever runs this."""
    return settings.os_user if os.geteuid() == 0 else None


def run_as(
    argv: Sequence[str | Path],
    user: str | None,
    *,
    timeout: float,
    environment: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.CompletedProcess[str]:
    """A short command as `user` (None: this process's user), its output captured; with
    new_session, what it leaves running belongs to no task's process group."""
    return subprocess.run(
        [str(part) for part in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        user=user,
        group=user,
        extra_groups=[] if user else None,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", **(environment or {})},
        cwd="/",
        start_new_session=new_session,
        check=False,
    )


def _epoch(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)


@dataclass(frozen=True)
class BackupSet:
    """One backup in the repository, as `pgbackrest info` describes it."""

    label: str
    type: str
    started: datetime
    stopped: datetime
    lsn_start: str
    lsn_stop: str
    size_bytes: int
    repository_bytes: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_info(cls, data: Mapping[str, Any]) -> BackupSet:
        info = data.get("info") or {}
        return cls(
            label=data["label"],
            type=data["type"],
            started=_epoch(data["timestamp"]["start"]),
            stopped=_epoch(data["timestamp"]["stop"]),
            lsn_start=data["lsn"]["start"],
            lsn_stop=data["lsn"]["stop"],
            size_bytes=int(info.get("size") or 0),
            repository_bytes=int((info.get("repository") or {}).get("size") or 0),
            annotations=dict(data.get("annotation") or {}),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "type": self.type,
            "started": self.started.isoformat(),
            "stopped": self.stopped.isoformat(),
            "lsn": [self.lsn_start, self.lsn_stop],
            "size_bytes": self.size_bytes,
            "repository_bytes": self.repository_bytes,
        }


@dataclass(frozen=True)
class StanzaInfo:
    """`pgbackrest info --output=json` of one stanza: its status, backups and archived WAL."""

    name: str
    status_code: int
    status: str
    backups: tuple[BackupSet, ...]
    archive_min: str | None
    archive_max: str | None

    @property
    def exists(self) -> bool:
        return self.status_code not in MISSING_STANZA_CODES

    @property
    def latest(self) -> BackupSet | None:
        return self.backups[-1] if self.backups else None

    @classmethod
    def from_json(cls, text: str, stanza: str) -> StanzaInfo:
        entries = [entry for entry in json.loads(text) if entry.get("name") == stanza]
        if not entries:
            return cls(stanza, 1, "missing stanza", (), None, None)
        entry = entries[0]
        backups = tuple(
            BackupSet.from_info(b)
            for b in sorted(entry.get("backup") or [], key=lambda b: b["timestamp"]["stop"])
            if not b.get("error")
        )
        archives = entry.get("archive") or []
        return cls(
            stanza,
            int(entry["status"]["code"]),
            entry["status"]["message"],
            backups,
            min((a["min"] for a in archives if a.get("min")), default=None),
            max((a["max"] for a in archives if a.get("max")), default=None),
        )


class PgBackRest:
    """pgbackrest commands on one stanza, with the settings' config file, as the cluster's OS user."""

    def __init__(self, settings: BackupSettings, environment: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environment = dict(environment or {})
        self.user = os_user(settings)

    def command(self, name: str, *options: str) -> list[str]:
        return [
            BINARY,
            f"--config={self.settings.config_path}",
            f"--stanza={self.settings.stanza}",
            *options,
            name,
        ]

    def run(self, name: str, *options: str, timeout: float = 600) -> str:
        """Run one command; its stdout, or PgBackRestError with its ERROR lines."""
        argv = self.command(name, *options)
        try:
            done = run_as(argv, self.user, timeout=timeout, environment=self.environment)
        except FileNotFoundError:
            raise PgBackRestError(
                f"pgbackrest {name}: {BINARY} is not installed (apt-get install pgbackrest)"
            ) from None
        except subprocess.TimeoutExpired:
            raise PgBackRestError(f"pgbackrest {name}: still running after {timeout:.0f} s") from None
        if done.returncode != 0:
            errors = [line.strip() for line in done.stderr.splitlines() if "ERROR" in line]
            detail = "; ".join(errors) or done.stderr.strip()[-800:] or done.stdout.strip()[-800:]
            raise PgBackRestError(f"pgbackrest {name} exited {done.returncode}: {detail}")
        return done.stdout

    def info(self) -> StanzaInfo:
        return StanzaInfo.from_json(self.run("info", "--output=json", timeout=120), self.settings.stanza)

    def check(self) -> None:
        """Archiving works end to end: production switches WAL and the segment reaches the repository."""
        self.run("check", timeout=300)

    def stanza_create(self) -> None:
        self.run("stanza-create", timeout=300)

    def backup(self, kind: str, annotations: Mapping[str, str]) -> None:
        options = [f"--type={kind}", *(f"--annotation={k}={v}" for k, v in annotations.items())]
        self.run("backup", *options, timeout=self.settings.backup_timeout_seconds)

    def verify(self) -> str:
        """Every file in the repository read back and checked against its checksum."""
        return self.run("verify", timeout=self.settings.backup_timeout_seconds)

    def restore(self, data_path: Path, *options: str) -> None:
        """Restore into `data_path` (never production's): archiving off in the restored cluster, so
        it can never push WAL into production's repository."""
        self.run(
            "restore",
            f"--pg1-path={data_path}",
            "--archive-mode=off",
            *options,
            timeout=self.settings.restore_timeout_seconds,
        )
