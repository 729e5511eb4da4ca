"""Backup steps: archiving checked before the migration, a full backup once writers are on
production, the backup proven restorable off production, and point-in-time recovery into a new
cluster. With `method: pgbackrest` the domain logic is in `pyairtable_migration.pgbackrest`; with
`method: rds` (a managed production) in `pyairtable_migration.rds`; these adapt them to Airflow.

Every operator takes `backup`, the backup settings as a mapping (validated on use, every problem
named). Secrets never reach them: an S3 repository's keys are read from its Airflow connection
into the pgbackrest child's environment only.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Context

from pyairtable_migration.hooks.database import MigrationPostgresHook
from pyairtable_migration.operators.base import MigrationOperator, bulleted, fail, run_clear_number
from pyairtable_migration.pgbackrest.archiving import archiving_state
from pyairtable_migration.pgbackrest.cluster import LISTEN_HOST, RestoredCluster, RestoreError, free_port
from pyairtable_migration.pgbackrest.recovery import (
    RecoveryRefused,
    check_target,
    parse_target,
    promote,
    recovery_directory,
    recovery_window,
    start_recovery,
    table_counts,
)
from pyairtable_migration.pgbackrest.repository import PgBackRest, PgBackRestError, repository_environment
from pyairtable_migration.pgbackrest.settings import (
    BackupConfigError,
    BackupSettings,
    RdsBackupSettings,
    parse_backup_settings,
)
from pyairtable_migration.pgbackrest.trigger import RecoveryTargetTrigger
from pyairtable_migration.pgbackrest.verification import verify_latest_backup
from pyairtable_migration.rds.snapshots import (
    RdsBackupError,
    backup_problems,
    cluster_facts,
    ensure_run_snapshot,
    recovery_problems,
    restore_to_time,
    restored_cluster,
    verify,
)
from pyairtable_migration.rds.trigger import RdsClusterAvailableTrigger

RUN_ANNOTATION = "pyairtable-run"
TARGET_PARAM = "target_time"


class BackupOperator(MigrationOperator):
    """Base of the pgBackRest steps: the settings, the pgbackrest command, production's hook."""

    template_fields: Sequence[str] = ("backup",)
    ui_color = "#d9f0e3"

    backup: Mapping[str, Any]

    @functools.cached_property
    def settings(self) -> BackupSettings:
        try:
            return parse_backup_settings(self.backup, "backup settings")
        except BackupConfigError as exc:
            raise fail(str(exc)) from None

    def pgbackrest(self) -> PgBackRest:
        return PgBackRest(self.settings, repository_environment(self.settings))

    def production(self) -> MigrationPostgresHook:
        return MigrationPostgresHook(self.settings.target_conn_id)

    def require_archiving(self, pgbackrest: PgBackRest, action: str) -> Any:
        """Archive settings, stanza and `pgbackrest check`; fails naming every problem."""
        state = archiving_state(self.production(), pgbackrest)
        if state.problems:
            raise fail(bulleted(f"{action}: refused, nothing changed", state.problems))
        return state


class CheckArchivingOperator(BackupOperator):
    """Preflight: production archives its WAL through pgBackRest into the configured stanza, and a
    WAL segment really reaches the repository (`pgbackrest check`). Changes nothing."""

    def execute(self, context: Context) -> dict[str, Any]:
        settings = self.settings
        if self.planned(
            context,
            f"check {settings.target_conn_id}: archive_mode on, archive_command pushes to stanza "
            f"{settings.stanza}; the stanza exists; `pgbackrest check` (one WAL segment archived)",
        ):
            return {"mode": "plan"}
        state = self.require_archiving(self.pgbackrest(), "check_archiving")
        backups = len(state.info.backups) if state.info else 0
        self.log.info(
            "Archiving to stanza %s works (archive_mode=%s); %d backup(s) in the repository",
            settings.stanza,
            state.archive_mode,
            backups,
        )
        return {
            "mode": "apply",
            "stanza": settings.stanza,
            "archive_mode": state.archive_mode,
            "backups": backups,
        }


class FullBackupOperator(BackupOperator):
    """A full backup of production, taken once writers are on it. Annotated with the run id, so a
    clear or retry of the same run finds its backup and does not take another. The switchover's
    last task: its result records the run's clear number, which `switchover.undo` reads."""

    def execute(self, context: Context) -> dict[str, Any]:
        settings = self.settings
        run_id = str(context["run_id"])
        cleared = run_clear_number(context)
        if self.planned(
            context,
            f"take a full pgBackRest backup of production into stanza {settings.stanza} "
            f"({settings.repository.type} {settings.repository.path}, "
            f"kept {settings.retention_full_days} days)",
        ):
            return {"mode": "plan", "clear_number": cleared}
        pgbackrest = self.pgbackrest()
        state = self.require_archiving(pgbackrest, "full_backup")
        existing = [
            b
            for b in (state.info.backups if state.info else ())
            if b.type == "full" and b.annotations.get(RUN_ANNOTATION) == run_id
        ]
        if existing:
            self.log.info("This run's full backup exists already: %s; nothing to do", existing[-1].label)
            return {
                "mode": "apply",
                "taken": False,
                "backup": existing[-1].summary(),
                "clear_number": cleared,
            }
        started = datetime.now(UTC)
        try:
            pgbackrest.backup("full", {RUN_ANNOTATION: run_id})
        except PgBackRestError as exc:
            raise fail(f"full_backup: {exc}") from None
        latest = pgbackrest.info().latest
        assert latest is not None
        seconds = (datetime.now(UTC) - started).total_seconds()
        self.log.info(
            "Full backup %s: %d bytes (%d in the repository) in %.1f s, LSN %s..%s",
            latest.label,
            latest.size_bytes,
            latest.repository_bytes,
            seconds,
            latest.lsn_start,
            latest.lsn_stop,
        )
        return {
            "mode": "apply",
            "taken": True,
            "seconds": round(seconds, 2),
            "backup": latest.summary(),
            "clear_number": cleared,
        }


class VerifyBackupOperator(BackupOperator):
    """`pgbackrest verify`, then the latest backup restored into a scratch cluster on its own port,
    compared table by table (counts and chunked hashes) with production, and removed. Production's
    cluster only answers the comparison's reads."""

    parallelism: int = 2

    def execute(self, context: Context) -> dict[str, Any]:
        settings = self.settings
        if self.planned(
            context,
            f"pgbackrest verify stanza {settings.stanza}",
            f"restore its latest backup into scratch cluster {settings.scratch_dir} on a free port, compare "
            f"every table with {settings.target_conn_id} (counts and hashes), then remove it",
        ):
            return {"mode": "plan"}
        try:
            summary = verify_latest_backup(
                self.pgbackrest(), self.production(), parallelism=self.parallelism, log=self.log
            )
        except (PgBackRestError, RestoreError) as exc:
            raise fail(f"backup: {exc}") from None
        self.log.info(
            "Backup %s: verified in %.1f s, restored in %.1f s, consistent after %.1f s; compared: %s",
            summary["backup"]["label"],
            summary["verify_seconds"],
            summary["restore_seconds"],
            summary["consistent_seconds"],
            json.dumps({k: summary["compare"][k] for k in ("tables", "rows", "rechecks", "passed")}),
        )
        if not summary["passed"]:
            raise fail(bulleted("backup: the restored copy differs from production", summary["differences"]))
        return {"mode": "apply", **summary}


class CheckRecoveryTargetOperator(BackupOperator):
    """The recovery's first step: the trigger form's timestamp inside the recoverable window, the
    stanza present, archiving on. Refuses naming every problem (and the window); changes nothing."""

    def execute(self, context: Context) -> dict[str, Any]:
        settings = self.settings
        text = str((context.get("params") or {}).get(TARGET_PARAM) or "")
        if self.planned(context, f"check target time {text!r} against stanza {settings.stanza}'s window"):
            return {"mode": "plan"}
        pgbackrest = self.pgbackrest()
        state = archiving_state(self.production(), pgbackrest)
        problems = list(state.problems)
        chosen: dict[str, Any] = {}
        if state.info is not None and state.info.exists:
            now = datetime.now(UTC)
            try:
                target, backup = check_target(text, state.info, now)
                chosen = {"target": target.isoformat(), "backup": backup.summary()}
            except RecoveryRefused as exc:
                problems.extend(exc.problems)
            chosen["window"] = recovery_window(state.info, now).describe()
        if problems:
            raise fail(bulleted("recovery refused, nothing changed", problems))
        self.log.info(
            "Recover to %s from backup %s; window %s",
            chosen["target"],
            chosen["backup"]["label"],
            chosen["window"],
        )
        return {"mode": "apply", **chosen}


class PointInTimeRestoreOperator(BackupOperator):
    """Restore production as of the checked target into a NEW cluster (a directory of this run's own,
    a free port), wait on the triggerer until replay paused exactly at the target, then promote it.
    A retry of the same run resumes its own cluster; it never restores over another."""

    check_task_id: str
    poll_seconds: float = 1.0

    def execute(self, context: Context) -> dict[str, Any]:
        settings = self.settings
        if self.planned(
            context,
            f"restore stanza {settings.stanza} to the target time into a new cluster under "
            f"{settings.recovery_dir} on a free port, wait until it reached the target, promote it",
        ):
            return {"mode": "plan"}
        checked = context["ti"].xcom_pull(task_ids=self.check_task_id)
        if not checked or "target" not in checked:
            raise fail(f"restore: no checked target from {self.check_task_id}")
        data_path = recovery_directory(settings.recovery_dir, settings.stanza, str(context["run_id"]))
        cluster = RestoredCluster(settings, data_path, free_port())
        if cluster.running:
            cluster.port = self._port_of(data_path)
            self.log.info(
                "This run's cluster %s runs already on port %d: waiting for it", data_path, cluster.port
            )
        else:
            cluster.remove()  # this run's own directory, left by a failed try (the name holds the run id)
            pgbackrest = self.pgbackrest()
            target = parse_target(checked["target"])
            info = pgbackrest.info()
            backup = next((b for b in info.backups if b.label == checked["backup"]["label"]), None)
            if backup is None:
                raise fail(f"restore: backup {checked['backup']['label']} is no longer in the repository")
            try:
                start_recovery(pgbackrest, cluster, target, backup)
            except (PgBackRestError, RestoreError) as exc:
                raise fail(f"restore: {exc}") from None
            self.log.info(
                "Restored backup %s into %s; replaying to %s on %s:%d",
                backup.label,
                data_path,
                checked["target"],
                LISTEN_HOST,
                cluster.port,
            )
        self.defer_to(
            RecoveryTargetTrigger(
                conn_id=settings.target_conn_id,
                host=LISTEN_HOST,
                port=cluster.port,
                data_path=str(data_path),
                timeout_seconds=settings.recovery_timeout_seconds,
                poll_seconds=self.poll_seconds,
            ),
            settings.recovery_timeout_seconds,
            kwargs={"data_path": str(data_path), "port": cluster.port, "checked": checked},
        )

    @staticmethod
    def _port_of(data_path: Path) -> int:
        """The port in a running cluster's pid file (its fourth line)."""
        return int((data_path / "postmaster.pid").read_text().splitlines()[3])

    def execute_complete(
        self, context: Context, event: dict[str, Any], data_path: str, port: int, checked: dict[str, Any]
    ) -> dict[str, Any]:
        self.raise_on_failure(event, "restore")
        cluster = RestoredCluster(self.settings, Path(data_path), port)
        try:
            state = promote(cluster)
        except RestoreError as exc:
            raise fail(f"restore: {exc}") from None
        summary = {
            "mode": "apply",
            "target": checked["target"],
            "backup": checked["backup"]["label"],
            "data_path": data_path,
            "host": LISTEN_HOST,
            "port": port,
            "last_replayed_commit": event["last_replayed_commit"],
            "replay_lsn": event["replay_lsn"],
            "in_recovery": state["in_recovery"],
        }
        self.log.info(
            "Recovery reached %s (last transaction replayed committed at %s, WAL %s); promoted: %s:%d, "
            "data %s",
            checked["target"],
            event["last_replayed_commit"],
            event["replay_lsn"],
            LISTEN_HOST,
            port,
            data_path,
        )
        return summary


class RecoveryReportOperator(BackupOperator):
    """What the recovery restored: where the new cluster runs, to which moment, and every table's
    row count there; logged, returned, and written as JSON beside the cluster."""

    restore_task_id: str

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(context, "report the restored cluster: address, target reached, row count per table"):
            return {"mode": "plan"}
        restored = context["ti"].xcom_pull(task_ids=self.restore_task_id)
        if not restored or "data_path" not in restored:
            raise fail(f"report: no restored cluster from {self.restore_task_id}")
        cluster = RestoredCluster(self.settings, Path(restored["data_path"]), int(restored["port"]))
        counts = table_counts(cluster)
        report = {**restored, "tables": counts, "rows": sum(counts.values())}
        path = Path(restored["data_path"] + ".json")
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        self.log.info(
            "Production as of %s is at %s:%d (connect with production's roles; data %s): %d tables, %d rows; "
            "report %s",
            restored["target"],
            restored["host"],
            restored["port"],
            restored["data_path"],
            len(counts),
            report["rows"],
            path,
        )
        for table, count in counts.items():
            self.log.info("  %s: %d rows", table, count)
        return {**report, "report": str(path)}


class RdsBackupOperator(BackupOperator):
    """Base of the steps for a managed production (`method: rds`): the cluster's RDS client."""

    def rds_client(self) -> Any:
        from airflow.providers.amazon.aws.hooks.rds import RdsHook

        return RdsHook(aws_conn_id=self.rds_settings().aws_conn_id).conn

    def rds_settings(self) -> RdsBackupSettings:
        rds = self.settings.managed
        if rds is None:
            raise fail(f"{self.task_id}: backup.method is not rds (these steps are for a managed production)")
        return rds


class CheckRdsBackupsOperator(RdsBackupOperator):
    """Preflight for a managed production: the cluster is available, runs PostgreSQL and keeps
    automated backups long enough for the point-in-time window. Changes nothing."""

    def execute(self, context: Context) -> dict[str, Any]:
        rds = self.rds_settings()
        if self.planned(
            context,
            f"check RDS cluster {rds.db_cluster_identifier}: available, PostgreSQL, automated backups kept "
            f">= {rds.min_retention_days} days (connection {rds.aws_conn_id})",
        ):
            return {"mode": "plan"}
        try:
            facts = cluster_facts(self.rds_client(), rds.db_cluster_identifier)
        except RdsBackupError as exc:
            raise fail(f"check_archiving: {exc}") from None
        problems = backup_problems(facts, rds)
        if problems:
            raise fail(bulleted("check_archiving: refused, nothing changed", problems))
        self.log.info("RDS cluster %s backs itself up: %s", facts.identifier, json.dumps(facts.summary()))
        return {"mode": "apply", "method": "rds", **facts.summary()}


class RdsSnapshotOperator(RdsBackupOperator):
    """A manual snapshot of the managed production, taken once writers are on it, named and tagged
    after the run so a clear or retry finds it. Like FullBackupOperator, it records the run's clear
    number, which `switchover.undo` reads."""

    def execute(self, context: Context) -> dict[str, Any]:
        rds = self.rds_settings()
        cleared = run_clear_number(context)
        if self.planned(
            context,
            f"take a manual snapshot of RDS cluster {rds.db_cluster_identifier} (named {rds.snapshot_prefix}-"
            "<run>, tagged with the run id)",
        ):
            return {"mode": "plan", "clear_number": cleared}
        started = datetime.now(UTC)
        try:
            snapshot, taken = ensure_run_snapshot(self.rds_client(), rds, str(context["run_id"]))
        except RdsBackupError as exc:
            raise fail(f"full_backup: {exc}") from None
        seconds = (datetime.now(UTC) - started).total_seconds()
        self.log.info(
            "Snapshot %s %s (%s) in %.1f s",
            snapshot.identifier,
            "taken" if taken else "of this run exists already",
            snapshot.status,
            seconds,
        )
        return {
            "mode": "apply",
            "taken": taken,
            "seconds": round(seconds, 2),
            "backup": snapshot.summary(),
            "clear_number": cleared,
        }


class VerifyRdsSnapshotOperator(RdsBackupOperator):
    """The migration's snapshot available, of the engine production runs, inside the cluster's
    point-in-time window. A restore to compare rows would create a new managed cluster (cost, tens
    of minutes): this step reads the service's facts instead, and says so."""

    def execute(self, context: Context) -> dict[str, Any]:
        rds = self.rds_settings()
        if self.planned(
            context,
            f"check the newest {rds.snapshot_prefix}-* snapshot of RDS cluster {rds.db_cluster_identifier}: "
            "available, the cluster's engine version, inside its point-in-time window (no restore)",
        ):
            return {"mode": "plan"}
        try:
            summary = verify(self.rds_client(), rds)
        except RdsBackupError as exc:
            raise fail(f"backup: {exc}") from None
        if not summary["passed"]:
            raise fail(
                bulleted("backup: the managed backups do not stand for production", summary["problems"])
            )
        self.log.info("Managed backups of %s: %s", rds.db_cluster_identifier, json.dumps(summary))
        return {"mode": "apply", "method": "rds", **summary}


class CheckRdsRecoveryTargetOperator(RdsBackupOperator):
    """The managed recovery's first step: the trigger form's timestamp inside the cluster's
    restorable window (named when it is not). Changes nothing."""

    def execute(self, context: Context) -> dict[str, Any]:
        rds = self.rds_settings()
        text = str((context.get("params") or {}).get(TARGET_PARAM) or "")
        if self.planned(
            context, f"check target time {text!r} against RDS cluster {rds.db_cluster_identifier}"
        ):
            return {"mode": "plan"}
        try:
            target = parse_target(text)
            facts = cluster_facts(self.rds_client(), rds.db_cluster_identifier)
        except (ValueError, RdsBackupError) as exc:
            raise fail(f"recovery refused, nothing changed: {exc}") from None
        problems = recovery_problems(facts, target, datetime.now(UTC))
        if problems:
            raise fail(bulleted("recovery refused, nothing changed", problems))
        self.log.info("Recover RDS cluster %s to %s", facts.identifier, target.isoformat())
        return {"mode": "apply", "target": target.isoformat(), "cluster": facts.summary()}


class RdsPointInTimeRestoreOperator(RdsBackupOperator):
    """Restore the managed production as of the checked target into a NEW cluster named after the
    run (a retry finds it), then wait on the triggerer until it is available. Production is only
    read."""

    check_task_id: str

    def execute(self, context: Context) -> dict[str, Any]:
        rds = self.rds_settings()
        if self.planned(
            context,
            f"restore RDS cluster {rds.db_cluster_identifier} to the target time into a new cluster "
            f"{rds.db_cluster_identifier}-pitr-<run>, wait until it is available",
        ):
            return {"mode": "plan"}
        checked = context["ti"].xcom_pull(task_ids=self.check_task_id)
        if not checked or "target" not in checked:
            raise fail(f"restore: no checked target from {self.check_task_id}")
        try:
            identifier, started = restore_to_time(
                self.rds_client(), rds, parse_target(checked["target"]), str(context["run_id"])
            )
        except RdsBackupError as exc:
            raise fail(f"restore: {exc}") from None
        self.log.info(
            "%s %s as of %s",
            "Restoring into" if started else "This run restores into",
            identifier,
            checked["target"],
        )
        timeout = self.settings.recovery_timeout_seconds
        self.defer_to(
            RdsClusterAvailableTrigger(
                aws_conn_id=rds.aws_conn_id,
                cluster=identifier,
                timeout_seconds=timeout,
                poll_seconds=rds.poll_seconds,
            ),
            timeout,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        # Everything it needs is in the event and the check's XCom (dag.test() resumes with the event only).
        self.raise_on_failure(event, "restore")
        checked = context["ti"].xcom_pull(task_ids=self.check_task_id)
        return {"mode": "apply", "target": checked["target"], "cluster": event["cluster"]}


class RdsRecoveryReportOperator(RdsBackupOperator):
    """Where the restored managed cluster answers (endpoint, port, engine), logged and returned."""

    restore_task_id: str

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(context, "report the restored RDS cluster: endpoint, port, engine, target"):
            return {"mode": "plan"}
        restored = context["ti"].xcom_pull(task_ids=self.restore_task_id)
        if not restored or "cluster" not in restored:
            raise fail(f"report: no restored cluster from {self.restore_task_id}")
        try:
            found = restored_cluster(self.rds_client(), restored["cluster"])
        except RdsBackupError as exc:
            raise fail(f"report: {exc}") from None
        self.log.info(
            "Production as of %s is RDS cluster %s at %s:%s (connect with production's roles)",
            restored["target"],
            found["cluster"],
            found["endpoint"],
            found["port"],
        )
        return {"mode": "apply", "target": restored["target"], **found}
