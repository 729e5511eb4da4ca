"""Real Airflow against a lab of its own, with load running: the `airflow_deployment` fixture.

For the tests that need what `dag.test()` cannot give: task processes and workers to SIGKILL, runs
to clear and resume, the UI in a browser. Airflow is deployed as docker-compose.yaml deploys it
(lab/airflow_celery.py: CeleryExecutor, PostgreSQL metadata database, every component a process
of its own), once per test session: every real_airflow test shares it, as each whole migration
through it takes minutes. The lab is a throwaway one (free ports, records seeded with a 5 s TTL
so the cutover does not wait 300 s); `fresh()` purges and re-seeds it between runs, and Airflow,
which reads the lab's connections file on each lookup, follows without a restart.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from lab.airflow_celery import DEFAULT_WORKERS, CeleryAirflow, pooler_workers
from lab.ledger import LedgerReport, check_ledger
from lab.loadgen import LoadProcess
from lab.migration_config import lab_config_path
from lab.settings import LabSettings, free_ports
from lab.supervisor import down, up

MIGRATION_DAG = "pyairtable_production_migration"
ROLLBACK_DAG = "pyairtable_production_rollback"
SCALE = 2000
# A run through the scheduler: approvals as the test says, short bakes (the lab's config is short).
FAST_RUN = {"mode": "apply", "require_approvals": False, "bake_seconds": 3}


@dataclass
class AirflowLab:
    settings: LabSettings
    server: CeleryAirflow
    http_rate: float = 30.0
    db_rate: float = 50.0
    load: LoadProcess | None = None

    @property
    def ledger_path(self) -> Path:
        return self.settings.data_dir / "ledger.log"

    def fresh(self) -> None:
        """A clean staging lab with load running: the state a migration starts from."""
        self.stop_load()
        down(self.settings, purge=True)
        up(self.settings, SCALE)
        self.load = LoadProcess(
            self.settings, http_rate=self.http_rate, db_rate=self.db_rate, ledger_path=self.ledger_path
        )
        self.load.start()

    def stop_load(self) -> dict[str, Any]:
        figures = self.load.stop() if self.load else {}
        self.load = None
        return figures

    def ledger(self, dsn: str) -> LedgerReport:
        """Every acknowledged write looked up through `dsn`."""
        with psycopg2.connect(dsn) as connection:
            report = check_ledger(self.ledger_path, connection)
        connection.close()
        return report


@pytest.fixture(scope="session")
def airflow_deployment() -> Iterator[AirflowLab]:
    """The Celery deployment (two workers, and one beside each pooler with a queue) and its lab."""
    settings = LabSettings.throwaway("pyairtable-airflow-", dns_initial_ttl=5)
    home = Path(tempfile.mkdtemp(prefix="pyairtable-airflow-home-"))
    up(settings, SCALE)  # Airflow starts with the lab's connections file and config in place
    (port,) = free_ports(1)
    workers = [*DEFAULT_WORKERS, *pooler_workers(lab_config_path(settings))]
    server = CeleryAirflow(settings, home, port, workers)
    lab = AirflowLab(settings, server)
    try:
        server.start()
        yield lab
    finally:
        lab.stop_load()
        server.stop()
        down(settings, purge=True)
        if not os.environ.get("KEEP_AIRFLOW_HOME"):
            shutil.rmtree(home, ignore_errors=True)
