"""`backup.method: rds` (a managed production: Aurora, RDS) against the RDS API as moto serves it.

moto stands in for the RDS control plane (no real managed cluster is reachable here): its clusters
and snapshots are records, with no data behind them. What is proven is this project's side: which
facts preflight refuses (each named with its fix), one snapshot per run however often the task
runs, and the verification's verdicts.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from airflow.sdk.exceptions import AirflowException

from pyairtable_migration.operators.backup import (
    CheckRdsBackupsOperator,
    RdsSnapshotOperator,
    VerifyRdsSnapshotOperator,
)
from pyairtable_migration.pgbackrest.settings import BackupConfigError, parse_backup_settings
from pyairtable_migration.rds.snapshots import RUN_TAG, snapshot_id

pytestmark = pytest.mark.timeout(120)

AWS_CONN = "rds_test_aws"
CLUSTER = "pyairtable-production"


class Run:
    clear_number = 0


def context(run_id: str = "manual__2026-12-05T03:00:00+00:00") -> Any:
    return {"params": {"mode": "apply"}, "run_id": run_id, "dag_run": Run()}


def backup(**rds: Any) -> dict[str, Any]:
    return {
        "method": "rds",
        "rds": {"aws_conn_id": AWS_CONN, "db_cluster_identifier": CLUSTER, "poll_seconds": 0.1, **rds},
    }


@pytest.fixture
def rds(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The RDS API of the session's moto, reset, with production's cluster keeping 1 day of backups."""
    aws = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{AWS_CONN.upper()}", json.dumps(aws))
    client = boto3.client(
        "rds",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for snapshot in client.describe_db_cluster_snapshots()["DBClusterSnapshots"]:
        client.delete_db_cluster_snapshot(DBClusterSnapshotIdentifier=snapshot["DBClusterSnapshotIdentifier"])
    for cluster in client.describe_db_clusters()["DBClusters"]:
        client.delete_db_cluster(DBClusterIdentifier=cluster["DBClusterIdentifier"], SkipFinalSnapshot=True)
    client.create_db_cluster(
        DBClusterIdentifier=CLUSTER,
        Engine="aurora-postgresql",
        EngineVersion="17.4",
        MasterUsername="migrator",
        MasterUserPassword="not-a-real-secret-1",
        BackupRetentionPeriod=1,
    )
    return client


def test_preflight_names_a_short_backup_window_and_a_missing_cluster_then_passes(rds: Any) -> None:
    check = CheckRdsBackupsOperator(task_id="check_archiving", backup=backup())
    with pytest.raises(AirflowException) as refused:
        check.execute(context())
    message = str(refused.value)
    assert "refused, nothing changed" in message
    assert f"RDS cluster {CLUSTER} keeps automated backups 1 day(s), fewer than" in message
    assert f"--db-cluster-identifier {CLUSTER} --backup-retention-period 7" in message

    missing = CheckRdsBackupsOperator(task_id="check_archiving", backup=backup(db_cluster_identifier="gone"))
    with pytest.raises(AirflowException, match="RDS cluster gone not found"):
        missing.execute(context())

    rds.modify_db_cluster(DBClusterIdentifier=CLUSTER, BackupRetentionPeriod=7, ApplyImmediately=True)
    facts = check.execute(context())
    assert facts["cluster"] == CLUSTER and facts["retention_days"] == 7 and facts["restorable_to"]


def test_one_snapshot_per_run_however_often_it_runs_then_verified(rds: Any) -> None:
    rds.modify_db_cluster(DBClusterIdentifier=CLUSTER, BackupRetentionPeriod=7, ApplyImmediately=True)
    verify = VerifyRdsSnapshotOperator(task_id="backup", backup=backup())
    with pytest.raises(AirflowException, match="no snapshot pyairtable-migration-\\* of RDS cluster"):
        verify.execute(context())

    take = RdsSnapshotOperator(task_id="full_backup", backup=backup())
    first = take.execute(context())
    again = take.execute(context())  # a clear or retry of the same run
    assert first["taken"] and not again["taken"] and again["clear_number"] == 0
    assert first["backup"]["snapshot"] == again["backup"]["snapshot"]
    listed = rds.describe_db_cluster_snapshots(DBClusterIdentifier=CLUSTER, SnapshotType="manual")[
        "DBClusterSnapshots"
    ]
    assert [s["DBClusterSnapshotIdentifier"] for s in listed] == [first["backup"]["snapshot"]]
    tags = rds.list_tags_for_resource(ResourceName=listed[0]["DBClusterSnapshotArn"])["TagList"]
    assert {"Key": RUN_TAG, "Value": "manual__2026-12-05T03:00:00+00:00"} in tags

    verified = verify.execute(context())
    assert verified["passed"] and verified["snapshot"]["snapshot"] == first["backup"]["snapshot"]

    # The engine upgraded after the snapshot: it no longer stands for production.
    rds.modify_db_cluster(DBClusterIdentifier=CLUSTER, EngineVersion="17.5", ApplyImmediately=True)
    with pytest.raises(AirflowException) as stale:
        verify.execute(context())
    assert f"snapshot {first['backup']['snapshot']} is of engine 17.4, the cluster runs 17.5" in str(
        stale.value
    )


def test_method_rds_without_its_cluster_is_refused_by_name() -> None:
    with pytest.raises(BackupConfigError, match="rds: required with method rds"):
        parse_backup_settings({"method": "rds"})
    settings = parse_backup_settings(backup())
    assert settings.rds is not None
    assert snapshot_id(settings.rds, "manual__2026-12-05T03:00:00+00:00").startswith("pyairtable-migration-")
