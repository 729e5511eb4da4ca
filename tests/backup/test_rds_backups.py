"""`backup.method: rds` (a managed production: Aurora, RDS) against the RDS API as moto serves it.

moto stands in for the RDS control plane (no real managed cluster is reachable here): its clusters
and snapshots are records, with no data behind them. What is proven is this project's side: which
facts preflight refuses (each named with its fix), one snapshot per run however often the task
runs, and the verification's verdicts.
"""

from __future__ import annotations

import datetime as dt
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
from pyairtable_migration.recovery import build_recovery_dag
from tests.aws import moto_aws_connection
from tests.dagrun import clear_alone_and_run, registered, task_states, xcom

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
    monkeypatch.setenv(f"AIRFLOW_CONN_{AWS_CONN.upper()}", moto_aws_connection(moto_endpoint))
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


@pytest.mark.usefixtures("airflow_db")
def test_recovery_dag_restores_a_managed_production_into_a_new_cluster_once(rds: Any) -> None:
    """The recovery DAG built for `method: rds`, run by Airflow (`dag.test()`, its trigger inline):
    a time outside the cluster's window is refused naming it; a time inside is restored into
    `<cluster>-pitr-<run>`, waited for until available, reported with its endpoint; the restore
    task run again (a clear) finds its cluster and starts no other."""
    dag = registered(build_recovery_dag(parse_backup_settings(backup()), dag_id="rds_recovery_test"))
    facts = rds.describe_db_clusters(DBClusterIdentifier=CLUSTER)["DBClusters"][0]
    before = (facts["EarliestRestorableTime"] - dt.timedelta(hours=1)).isoformat()
    refused = dag.test(run_conf={"target_time": before})
    assert task_states(refused)["check_target"] == "failed"
    assert not [c for c in rds.describe_db_clusters()["DBClusters"] if "-pitr-" in c["DBClusterIdentifier"]]

    target = facts["EarliestRestorableTime"].isoformat()
    run = dag.test(run_conf={"target_time": target})
    assert task_states(run) == dict.fromkeys(("check_target", "restore", "report"), "success")
    found = xcom(run, "report")
    assert found["status"] == "available" and found["endpoint"] and found["target"] == target
    again = clear_alone_and_run(dag, run, "restore")
    assert task_states(again)["restore"] == "success"
    restored = [
        c["DBClusterIdentifier"]
        for c in rds.describe_db_clusters()["DBClusters"]
        if "-pitr-" in c["DBClusterIdentifier"]
    ]
    assert restored == [found["cluster"]]
