"""The point-in-time recovery DAG `pyairtable_production_recovery`: production as it was at a given
second, restored into a new cluster beside it.

    check_target -> restore -> report

The trigger form takes the target time; `check_target` refuses one outside the recoverable window
(naming it), a stanza the repository lacks, or production not archiving, before anything is
restored. `restore` never writes over a running cluster: each run restores into a directory of its
own under the backup settings' `recovery_dir`, on a free port.

    python -m pyairtable_migration.recovery --target 2026-12-03T09:29:34Z    the same, without Airflow
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param

from pyairtable_migration.pgbackrest.settings import BackupSettings

RECOVERY_DAG_ID = "pyairtable_production_recovery"
OPERATORS = "pyairtable_migration.operators.backup"

DOC_MD = """
### PyAirtable: restore production to a point in time

Give the **target time** (ISO 8601 with a zone, e.g. `2026-12-03T09:29:34Z`). The run checks it lies
between the end of the first backup and now (a refusal names the window), restores the backup before
it into a **new cluster** under `{recovery_dir}` on a free port on 127.0.0.1, replays archived WAL up
to the target, waits until the cluster paused exactly there, promotes it, and reports its address
and every table's row count. Production is never written to; log in to the restored cluster with
production's roles. Stanza `{stanza}`; backup settings: `{config_path}`.
"""

RDS_DOC_MD = """
### PyAirtable: restore production to a point in time

Give the **target time** (ISO 8601 with a zone, e.g. `2026-12-03T09:29:34Z`). Production is the
managed cluster `{cluster}`: the run checks the time lies inside its restorable window (a refusal
names the window), restores it as of that time into a **new cluster** named
`{cluster}-pitr-<run>` through the RDS API, waits until it is available and reports its endpoint.
Production is never written to; add an instance to the new cluster to connect. Backup settings:
`{config_path}`.
"""


def recovery_params() -> dict[str, Param]:
    return {
        "target_time": Param(
            type="string",
            format="date-time",
            title="Target time",
            description="Restore production as it was at this moment (ISO 8601 with a time zone). It must "
            "lie after the end of the first backup and not in the future.",
        ),
        "mode": Param(
            "apply",
            type="string",
            enum=["plan", "apply"],
            title="Mode",
            description="apply: restore into a new cluster (production is never touched). plan: log what "
            "would be done.",
        ),
    }


def build_recovery_dag(
    settings: BackupSettings, config_path: str | Path = "", dag_id: str = RECOVERY_DAG_ID
) -> DAG:
    """Three tasks; no I/O here, so parsing stays fast."""
    from airflow.sdk import BaseOperator

    from pyairtable_migration.operators import backup as operators

    check_class, restore_class, report_class = (
        (
            operators.CheckRdsRecoveryTargetOperator,
            operators.RdsPointInTimeRestoreOperator,
            operators.RdsRecoveryReportOperator,
        )
        if settings.managed is not None
        else (
            operators.CheckRecoveryTargetOperator,
            operators.PointInTimeRestoreOperator,
            operators.RecoveryReportOperator,
        )
    )

    backup = settings.model_dump()
    dag = DAG(
        dag_id,
        schedule=None,
        max_active_runs=1,
        catchup=False,
        params=recovery_params(),
        doc_md=(
            RDS_DOC_MD.format(cluster=settings.managed.db_cluster_identifier, config_path=config_path)
            if settings.managed is not None
            else DOC_MD.format(
                recovery_dir=settings.recovery_dir, stanza=settings.stanza, config_path=config_path
            )
        ),
        description="Restore PyAirtable production to a point in time, into a new cluster",
        tags=["pyairtable", "recovery"],
        default_args={"retries": 1, "retry_delay": timedelta(seconds=5)},
    )
    check: BaseOperator = check_class(task_id="check_target", backup=backup, dag=dag)
    restore: BaseOperator = restore_class(
        task_id="restore", backup=backup, check_task_id="check_target", dag=dag
    )
    report: BaseOperator = report_class(task_id="report", backup=backup, restore_task_id="restore", dag=dag)
    check >> restore >> report
    return dag


def recover(settings: BackupSettings, text: str, name: str) -> dict[str, Any]:
    """The DAG's three steps without Airflow (the CLI): check, restore, wait, promote, count."""
    if settings.managed is not None:
        return recover_rds(settings, text, name)
    from pyairtable_migration.hooks.database import MigrationPostgresHook
    from pyairtable_migration.pgbackrest.archiving import archiving_state
    from pyairtable_migration.pgbackrest.cluster import RestoredCluster, free_port
    from pyairtable_migration.pgbackrest.recovery import (
        RecoveryRefused,
        check_target,
        promote,
        recovery_directory,
        recovery_reached,
        start_recovery,
        table_counts,
    )
    from pyairtable_migration.pgbackrest.repository import PgBackRest, repository_environment

    pgbackrest = PgBackRest(settings, repository_environment(settings))
    state = archiving_state(MigrationPostgresHook(settings.target_conn_id), pgbackrest)
    problems = list(state.problems)
    if state.info is not None and state.info.exists:
        try:
            target, backup = check_target(text, state.info, datetime.now(UTC))
        except RecoveryRefused as exc:
            problems += exc.problems
    if problems:
        raise RecoveryRefused(problems)
    cluster = RestoredCluster(
        settings, recovery_directory(settings.recovery_dir, settings.stanza, name), free_port()
    )
    start_recovery(pgbackrest, cluster, target, backup)
    deadline = time.monotonic() + settings.recovery_timeout_seconds
    while not recovery_reached(cluster.wait_accepting(settings.recovery_timeout_seconds)):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"recovery did not reach {target.isoformat()} in {settings.recovery_timeout_seconds} s"
            )
        time.sleep(1)
    reached = cluster.state()
    promote(cluster)
    counts = table_counts(cluster)
    return {
        "target": target.isoformat(),
        "backup": backup.label,
        "data_path": str(cluster.data_path),
        "port": cluster.port,
        "last_replayed_commit": str(reached["last_replayed_commit"]),
        "replay_lsn": reached["replay_lsn"],
        "tables": counts,
        "rows": sum(counts.values()),
    }


def recover_rds(settings: BackupSettings, text: str, name: str) -> dict[str, Any]:
    """The managed recovery without Airflow: check the window, restore into a new cluster, wait."""
    from airflow.providers.amazon.aws.hooks.rds import RdsHook

    from pyairtable_migration.pgbackrest.recovery import RecoveryRefused, parse_target
    from pyairtable_migration.rds.snapshots import (
        cluster_facts,
        recovery_problems,
        restore_to_time,
        restored_cluster,
    )

    rds = settings.managed
    assert rds is not None
    client = RdsHook(aws_conn_id=rds.aws_conn_id).conn
    try:
        target = parse_target(text)
    except ValueError as exc:
        raise RecoveryRefused([str(exc)]) from None
    problems = recovery_problems(cluster_facts(client, rds.db_cluster_identifier), target, datetime.now(UTC))
    if problems:
        raise RecoveryRefused(problems)
    identifier, _ = restore_to_time(client, rds, target, name)
    client.get_waiter("db_cluster_available").wait(
        DBClusterIdentifier=identifier,
        WaiterConfig={
            "Delay": max(1, int(rds.poll_seconds)),
            "MaxAttempts": settings.recovery_timeout_seconds,
        },
    )
    return {"target": target.isoformat(), **restored_cluster(client, identifier)}


def main(argv: list[str]) -> int:
    from pyairtable_migration.pgbackrest.recovery import RecoveryRefused
    from pyairtable_migration.pgbackrest.settings import BackupConfigError, load_backup_settings
    from pyairtable_migration.rds.snapshots import RdsBackupError

    parser = argparse.ArgumentParser(
        prog="python -m pyairtable_migration.recovery", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--target", required=True, help="ISO 8601 timestamp with a zone")
    parser.add_argument(
        "--config", help="migration config with the backup section (default include/migration.yaml)"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_backup_settings(args.config)
        result = recover(settings, args.target, f"cli-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    except BackupConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except RecoveryRefused as exc:
        print("recovery refused, nothing changed:\n  - " + "\n  - ".join(exc.problems), file=sys.stderr)
        return 1
    except RdsBackupError as exc:
        print(f"recovery failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
