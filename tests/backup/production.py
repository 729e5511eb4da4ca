"""A lab of its own for the backup tests: source and target clusters and PgBouncer on free ports,
with production (the target) holding staging's data and the pooler pointing every writer at it,
as after the switchover. The target archives through pgBackRest from its first start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2
from airflow.sdk import DAG, BaseOperator
from airflow.sdk.exceptions import TaskDeferred

from lab.credentials import APP_ROLE, MIGRATOR_ROLE, secrets
from lab.pgbackrest import backup_settings
from lab.postgres import DATABASE, dump_and_restore
from lab.settings import LabSettings
from pyairtable_migration.pgbackrest.cluster import RestoredCluster
from pyairtable_migration.pgbackrest.settings import BackupSettings
from tests.own_lab import point_pooler, running_lab

COMPONENTS = ("postgres-source", "postgres-target", "pgbouncer")


@dataclass
class Production:
    settings: LabSettings
    backup: BackupSettings

    def connect(self, port: int | None = None) -> Any:
        """The migrator on production (or, with `port`, on a restored copy of it)."""
        connection = psycopg2.connect(
            host=self.settings.host,
            port=port or self.settings.postgres_target_port,
            user=MIGRATOR_ROLE,
            password=secrets(self.settings)[MIGRATOR_ROLE],
            dbname=DATABASE,
            connect_timeout=5,
        )
        connection.autocommit = True
        return connection

    def app_dsn(self) -> str:
        password = secrets(self.settings)[APP_ROLE]
        return f"postgresql://{APP_ROLE}:{password}@{self.settings.host}:{self.settings.pgbouncer_port}/{DATABASE}"

    def remove_restored(self) -> None:
        """Every cluster the tests restored: stopped and deleted, whatever the test did."""
        for parent in (Path(self.backup.scratch_dir).parent, Path(self.backup.recovery_dir)):
            if not parent.is_dir():
                continue
            for path in parent.iterdir():
                if path.is_dir():
                    RestoredCluster(self.backup, path, 0).remove()
            for path in parent.glob("*.json"):
                path.unlink()


def _copy_staging_to_production(settings: LabSettings) -> None:
    """pg_dump | pg_restore of the seeded source into the target: production's data after the move."""
    source, target = settings.postgres_source_port, settings.postgres_target_port
    dump_and_restore(settings, source, target, DATABASE, "--no-owner")


@contextlib.contextmanager
def running_production(records: int) -> Iterator[Production]:
    with running_lab("pyairtable-backup-test-", COMPONENTS, records=records) as settings:
        production = Production(settings, backup_settings(settings))
        try:
            _copy_staging_to_production(settings)
            point_pooler(settings, settings.postgres_target_port)
            yield production
        finally:
            production.remove_restored()


class FakeTaskInstance:
    """XComs of the tasks run before, by task id."""

    def __init__(self, xcoms: dict[str, Any]) -> None:
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str) -> Any:
        return self.xcoms.get(task_ids)


async def _first_event(trigger: Any) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


def run(
    operator_class: type[BaseOperator],
    backup: BackupSettings | dict[str, Any],
    *,
    run_id: str = "test-run",
    params: dict[str, Any] | None = None,
    xcoms: dict[str, Any] | None = None,
    **arguments: Any,
) -> Any:
    """One operator as Airflow runs it: templates rendered, a deferral's trigger run to its event."""
    settings = backup.model_dump() if isinstance(backup, BackupSettings) else backup
    operator = operator_class(
        task_id=f"t{time.monotonic_ns()}", dag=DAG("backup_test", schedule=None), backup=settings, **arguments
    )
    context: dict[str, Any] = {
        "params": {"mode": "apply", **(params or {})},
        "run_id": run_id,
        "ti": FakeTaskInstance(xcoms or {}),
        "dag_run": SimpleNamespace(clear_number=0),  # a run never cleared
    }
    operator.render_template_fields(context)  # type: ignore[arg-type]
    try:
        return operator.execute(context)  # type: ignore[arg-type]
    except TaskDeferred as deferred:
        event = asyncio.run(_first_event(deferred.trigger))
        return getattr(operator, deferred.method_name)(context, event=event, **(deferred.kwargs or {}))
