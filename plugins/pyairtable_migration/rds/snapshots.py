"""Backups of a managed production (Aurora, RDS): the service's automated backups give the
point-in-time window; the migration takes one manual cluster snapshot once writers are on
production, named after the run and tagged with it, so a clear or retry finds it instead of taking
another. No filesystem access is needed (none exists on a managed server): every fact comes from
the RDS API through a boto3 client the caller owns (the amazon provider's RdsHook).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from pyairtable_migration.pgbackrest.settings import RdsBackupSettings

RUN_TAG = "pyairtable-run"
POSTGRES_ENGINES = ("aurora-postgresql", "postgres")


class RdsBackupError(Exception):
    """A backup fact or action that failed, with the cluster or snapshot named."""


@dataclass(frozen=True)
class ClusterFacts:
    identifier: str
    status: str
    engine: str
    engine_version: str
    retention_days: int
    earliest_restorable: datetime | None
    latest_restorable: datetime | None

    def summary(self) -> dict[str, Any]:
        return {
            "cluster": self.identifier,
            "status": self.status,
            "engine": f"{self.engine} {self.engine_version}",
            "retention_days": self.retention_days,
            "restorable_from": _iso(self.earliest_restorable),
            "restorable_to": _iso(self.latest_restorable),
        }


@dataclass(frozen=True)
class Snapshot:
    identifier: str
    status: str
    created: datetime | None
    engine_version: str
    run_id: str | None

    def summary(self) -> dict[str, Any]:
        return {
            "snapshot": self.identifier,
            "status": self.status,
            "created": _iso(self.created),
            "engine_version": self.engine_version,
            "run_id": self.run_id,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def cluster_facts(client: Any, identifier: str) -> ClusterFacts:
    try:
        clusters = client.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"]
    except ClientError as exc:
        if _code(exc) == "DBClusterNotFoundFault":
            raise RdsBackupError(f"RDS cluster {identifier} not found") from None
        raise RdsBackupError(f"describing RDS cluster {identifier}: {exc}") from None
    cluster = clusters[0]
    return ClusterFacts(
        identifier=identifier,
        status=str(cluster.get("Status", "")),
        engine=str(cluster.get("Engine", "")),
        engine_version=str(cluster.get("EngineVersion", "")),
        retention_days=int(cluster.get("BackupRetentionPeriod") or 0),
        earliest_restorable=cluster.get("EarliestRestorableTime"),
        latest_restorable=cluster.get("LatestRestorableTime"),
    )


def backup_problems(facts: ClusterFacts, settings: RdsBackupSettings) -> list[str]:
    """What keeps the cluster's backups from standing for production's: each with its fix."""
    name = facts.identifier
    problems = []
    if facts.status != "available":
        problems.append(f"RDS cluster {name} is {facts.status or 'in no state'}, not available")
    if facts.engine not in POSTGRES_ENGINES:
        problems.append(f"RDS cluster {name} runs {facts.engine or 'no engine'}, not PostgreSQL")
    if facts.retention_days < settings.min_retention_days:
        problems.append(
            f"RDS cluster {name} keeps automated backups {facts.retention_days} day(s), fewer than "
            f"backup.rds.min_retention_days ({settings.min_retention_days}): `aws rds modify-db-cluster "
            f"--db-cluster-identifier {name} --backup-retention-period {settings.min_retention_days} "
            "--apply-immediately`"
        )
    if facts.latest_restorable is None:
        problems.append(f"RDS cluster {name} reports no latest restorable time: no point-in-time window")
    return problems


def snapshot_id(settings: RdsBackupSettings, run_id: str) -> str:
    """The run's snapshot name: RDS allows letters, digits and single hyphens, so the run id is hashed."""
    return f"{settings.snapshot_prefix}-{hashlib.sha256(run_id.encode()).hexdigest()[:16]}"


def _snapshot(raw: dict[str, Any]) -> Snapshot:
    tags = {t["Key"]: t["Value"] for t in raw.get("TagList") or ()}
    return Snapshot(
        identifier=str(raw["DBClusterSnapshotIdentifier"]),
        status=str(raw.get("Status", "")),
        created=raw.get("SnapshotCreateTime"),
        engine_version=str(raw.get("EngineVersion", "")),
        run_id=tags.get(RUN_TAG),
    )


def find_snapshot(client: Any, identifier: str) -> Snapshot | None:
    try:
        found = client.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=identifier)
    except ClientError as exc:
        if _code(exc) == "DBClusterSnapshotNotFoundFault":
            return None
        raise RdsBackupError(f"describing snapshot {identifier}: {exc}") from None
    snapshots = found["DBClusterSnapshots"]
    return _snapshot(snapshots[0]) if snapshots else None


def ensure_run_snapshot(
    client: Any, settings: RdsBackupSettings, run_id: str, sleep: Callable[[float], None] = time.sleep
) -> tuple[Snapshot, bool]:
    """The run's snapshot, taken unless it exists, once available; whether it was taken now."""
    identifier = snapshot_id(settings, run_id)
    snapshot = find_snapshot(client, identifier)
    taken = snapshot is None
    if taken:
        try:
            client.create_db_cluster_snapshot(
                DBClusterSnapshotIdentifier=identifier,
                DBClusterIdentifier=settings.db_cluster_identifier,
                Tags=[{"Key": RUN_TAG, "Value": run_id}],
            )
        except ClientError as exc:
            raise RdsBackupError(
                f"snapshot {identifier} of RDS cluster {settings.db_cluster_identifier}: {exc}"
            ) from None
    deadline = time.monotonic() + settings.snapshot_timeout_seconds
    while True:
        snapshot = find_snapshot(client, identifier)
        if snapshot is not None and snapshot.status == "available":
            return snapshot, taken
        if snapshot is not None and snapshot.status in ("failed", "deleted", "deleting"):
            raise RdsBackupError(f"snapshot {identifier} is {snapshot.status}")
        if time.monotonic() > deadline:
            state = snapshot.status if snapshot else "not listed"
            raise RdsBackupError(
                f"snapshot {identifier} still {state} after {settings.snapshot_timeout_seconds} s "
                "(backup.rds.snapshot_timeout_seconds)"
            )
        sleep(settings.poll_seconds)


def latest_run_snapshot(client: Any, settings: RdsBackupSettings) -> Snapshot | None:
    """The newest manual snapshot of the cluster this project took (named with its prefix)."""
    try:
        found = client.describe_db_cluster_snapshots(
            DBClusterIdentifier=settings.db_cluster_identifier, SnapshotType="manual"
        )["DBClusterSnapshots"]
    except ClientError as exc:
        raise RdsBackupError(
            f"listing snapshots of RDS cluster {settings.db_cluster_identifier}: {exc}"
        ) from None
    ours = [
        _snapshot(raw)
        for raw in found
        if str(raw["DBClusterSnapshotIdentifier"]).startswith(f"{settings.snapshot_prefix}-")
    ]
    return max(ours, key=lambda s: s.created or datetime.min.replace(tzinfo=UTC), default=None)


def verify(client: Any, settings: RdsBackupSettings) -> dict[str, Any]:
    """The migration's snapshot available with the cluster's engine version, and the cluster's
    point-in-time window reaching up to that snapshot; problems named, nothing changed."""
    facts = cluster_facts(client, settings.db_cluster_identifier)
    problems = backup_problems(facts, settings)
    snapshot = latest_run_snapshot(client, settings)
    if snapshot is None:
        problems.append(
            f"no snapshot {settings.snapshot_prefix}-* of RDS cluster {facts.identifier}: "
            "switchover.full_backup takes it"
        )
    else:
        if snapshot.status != "available":
            problems.append(f"snapshot {snapshot.identifier} is {snapshot.status}, not available")
        if snapshot.engine_version != facts.engine_version:
            problems.append(
                f"snapshot {snapshot.identifier} is of engine {snapshot.engine_version}, the cluster runs "
                f"{facts.engine_version}: take a new one (clear switchover.full_backup)"
            )
        if snapshot.created and facts.latest_restorable and facts.latest_restorable < snapshot.created:
            problems.append(
                f"RDS cluster {facts.identifier} restores only up to {_iso(facts.latest_restorable)}, "
                f"before its snapshot {snapshot.identifier} ({_iso(snapshot.created)})"
            )
    return {
        "passed": not problems,
        "problems": problems,
        "cluster": facts.summary(),
        "snapshot": snapshot.summary() if snapshot else None,
    }


# --- point-in-time recovery into a new cluster ----------------------------------------------------------


def recovery_problems(facts: ClusterFacts, target: datetime, now: datetime) -> list[str]:
    """Why the cluster cannot be restored to `target`, the window named; empty when it can."""
    window = f"{_iso(facts.earliest_restorable) or '?'} .. {_iso(facts.latest_restorable) or '?'}"
    if target > now:
        return [f"target time {target.isoformat()} is in the future (window {window})"]
    if facts.earliest_restorable is None or facts.latest_restorable is None:
        return [f"RDS cluster {facts.identifier} reports no restorable window"]
    if not facts.earliest_restorable <= target <= facts.latest_restorable:
        return [
            f"target time {target.isoformat()} is outside RDS cluster {facts.identifier}'s window {window}"
        ]
    return []


def recovery_cluster_id(settings: RdsBackupSettings, run_id: str) -> str:
    """The new cluster a run restores into: production's name, `-pitr-` and the run's hash."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:12]
    return f"{settings.db_cluster_identifier[:44]}-pitr-{digest}"


def restore_to_time(
    client: Any, settings: RdsBackupSettings, target: datetime, run_id: str
) -> tuple[str, bool]:
    """Start restoring production as of `target` into the run's new cluster, unless it exists
    (a retry of the run); its identifier and whether the restore started now. Production is
    only read."""
    identifier = recovery_cluster_id(settings, run_id)
    try:
        client.describe_db_clusters(DBClusterIdentifier=identifier)
        return identifier, False
    except ClientError as exc:
        if _code(exc) != "DBClusterNotFoundFault":
            raise RdsBackupError(f"describing RDS cluster {identifier}: {exc}") from None
    try:
        client.restore_db_cluster_to_point_in_time(
            DBClusterIdentifier=identifier,
            SourceDBClusterIdentifier=settings.db_cluster_identifier,
            RestoreToTime=target,
            Tags=[{"Key": RUN_TAG, "Value": run_id}],
        )
    except ClientError as exc:
        raise RdsBackupError(
            f"restoring RDS cluster {settings.db_cluster_identifier} to {target.isoformat()} as "
            f"{identifier}: {exc}"
        ) from None
    return identifier, True


def restored_cluster(client: Any, identifier: str) -> dict[str, Any]:
    """Where the restored cluster answers, for the report."""
    try:
        cluster = client.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"][0]
    except ClientError as exc:
        raise RdsBackupError(f"describing RDS cluster {identifier}: {exc}") from None
    return {
        "cluster": identifier,
        "status": cluster.get("Status"),
        "endpoint": cluster.get("Endpoint"),
        "port": cluster.get("Port"),
        "engine": f"{cluster.get('Engine')} {cluster.get('EngineVersion')}",
    }
