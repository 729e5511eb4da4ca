"""Real Airflow against a lab of its own, with load running: the `airflow_deployment` fixture.

For the tests that need what `dag.test()` cannot give: task processes and workers to SIGKILL, runs
to clear and resume, the UI in a browser. Airflow is deployed as docker-compose.yaml deploys it
(lab/airflow_celery.py: CeleryExecutor, PostgreSQL metadata database, every component a process
of its own), once per test session: every real_airflow test shares it, as each whole migration
through it takes minutes. The lab is a throwaway one (free ports, records seeded with a 5 s TTL
so the cutover does not wait 300 s); `fresh()` purges and re-seeds it between runs, and Airflow,
which reads the lab's connections file on each lookup, follows without a restart.

Beside it, what an on-call engineer (and a fault) does to such a deployment: SIGKILL a task's process
or its whole worker at a chosen moment, and run the command line (`pyairtable_migration.cli`)
against the api-server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from lab.airflow_celery import DEFAULT_WORKERS, CeleryAirflow, pooler_workers
from lab.airflow_server import ADMIN, task_process
from lab.credentials import PGBOUNCER_ADMIN, secrets
from lab.ledger import LedgerReport, check_ledger
from lab.loadgen import LoadProcess, app_dsn
from lab.migration_config import CONFIG_ENV, lab_config_path
from lab.pgbouncer import ADMIN_DATABASE
from lab.postgres import DATABASE
from lab.settings import REPO_ROOT, LabSettings, free_ports
from lab.supervisor import down, up

MIGRATION_DAG = "pyairtable_production_migration"
ROLLBACK_DAG = "pyairtable_production_rollback"
SCALE = 2000


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
        load = LoadProcess(
            self.settings, http_rate=self.http_rate, db_rate=self.db_rate, ledger_path=self.ledger_path
        )
        load.start()
        self.load = load

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
        # Each stop runs whatever the one before it raised: nothing of the deployment outlives it.
        try:
            lab.stop_load()
        finally:
            try:
                server.stop()
            finally:
                down(settings, purge=True)
                if not os.environ.get("KEEP_AIRFLOW_HOME"):
                    shutil.rmtree(home, ignore_errors=True)


# --- faults and the command line ------------------------------------------------------------------

# A task in one of these has run (or will not): too late to kill its attempt. `upstream_failed` is
# not among them: a run that failed before the task is cleared and goes on.
RAN = ("success", "skipped", "failed")
NOT_UNDER_WAY = (None, "deferred", "awaiting_input", "up_for_retry", "up_for_reschedule")


def pooler_paused(lab: AirflowLab) -> Callable[[], bool]:
    """Polls PgBouncer's admin console: is the application database paused right now?"""
    connection = psycopg2.connect(
        host=lab.settings.host,
        port=lab.settings.pgbouncer_port,
        user=PGBOUNCER_ADMIN,
        password=secrets(lab.settings)[PGBOUNCER_ADMIN],
        dbname=ADMIN_DATABASE,
    )
    connection.autocommit = True

    def paused() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SHOW DATABASES")
            names = [column.name for column in cursor.description or ()]
            for row in cursor.fetchall():
                entry = dict(zip(names, row, strict=True))
                if entry["name"] == DATABASE:
                    return bool(entry["paused"])
        return False

    return paused


def hold_a_transaction(lab: AirflowLab, release: threading.Event, longest: float = 120) -> None:
    """An application transaction open through the pooler (on a thread) until `release` is set (at
    most `longest` s): PAUSE waits for it, so the switchover's freeze lasts until then and a kill
    lands inside it, however long the switchover takes to get there."""

    def hold() -> None:
        with psycopg2.connect(app_dsn(lab.settings)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM records")
            release.wait(longest)
        connection.close()

    threading.Thread(target=hold, daemon=True).start()


def kill_attempt(
    lab: AirflowLab,
    run_id: str,
    task_id: str,
    attempt: int,
    moment: Callable[[], bool] | None = None,
    when_running: Callable[[], None] | None = None,
    kill: Callable[[int], object] = lambda pid: os.kill(pid, signal.SIGKILL),
    timeout: float = 600,
    moment_timeout: float = 5,
) -> dict[str, Any]:
    """SIGKILL the task's process in `attempt` once it runs (`when_running` called then) and
    `moment()` holds (else after `moment_timeout` s); `kill(pid)` may take more with it (its whole
    worker)."""
    server = lab.server

    def task() -> dict[str, Any]:
        ti: dict[str, Any] = server.task_instance(MIGRATION_DAG, run_id, task_id)
        if ti["state"] in RAN:
            failed = server.failures(MIGRATION_DAG, run_id)
            state = ti["state"]
            raise AssertionError(f"{task_id} is {state} before attempt {attempt} could be killed: {failed}")
        return ti

    def running_process() -> tuple[str, int] | None:
        ti = task()
        if ti["state"] != "running" or ti["try_number"] != attempt:
            return None
        pid = task_process(str(ti["id"]))
        return None if pid is None else (str(ti["id"]), pid)

    # Once a second until the task has a state or one it waits for is under way (each look is a
    # request the api-server answers: ten a second through a whole migration cost more CPU than the
    # migration's own tasks), ten a second from then on: a quick task can be scheduled, run and done
    # within one of the slow looks (create_subscription was, once, within the second after
    # create_publication was seen done), so the fast looks begin while the one it waits for is
    # scheduled, queued or running. Waiting for an approval (deferred, awaiting input) or a retry is
    # not under way: looked at once a second, as before.
    upstream = [
        t["task_id"]
        for t in server.api("GET", f"dags/{MIGRATION_DAG}/tasks")["tasks"]
        if task_id in t["downstream_task_ids"]
    ]

    def next_up() -> bool:
        return task()["state"] is not None or any(
            server.task_instance(MIGRATION_DAG, run_id, u)["state"] not in NOT_UNDER_WAY for u in upstream
        )

    server.wait(f"{task_id} to be scheduled or {upstream} to run", next_up, timeout, poll=1.0)
    ti_id, pid = server.wait(f"{task_id} attempt {attempt} to run", running_process, timeout, poll=0.1)
    if when_running is not None:
        when_running()
    caught = False
    deadline = time.monotonic() + moment_timeout
    while moment is not None and time.monotonic() < deadline and task_process(ti_id) == pid:
        if moment():
            caught = True
            break
        time.sleep(0.002)
    kill(pid)
    return {"task": task_id, "attempt": attempt, "moment_caught": caught}


def awaits_retry(lab: AirflowLab, run_id: str, task_id: str) -> bool:
    return bool(lab.server.task_instance(MIGRATION_DAG, run_id, task_id)["state"] == "up_for_retry")


def attempts(lab: AirflowLab, run_id: str, task_id: str) -> dict[int, dict[str, Any]]:
    """Each attempt of a task: its state, queue and the worker (hostname) that ran it."""
    path = f"dags/{MIGRATION_DAG}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
    return {int(t["try_number"]): t for t in lab.server.api("GET", path)["task_instances"]}


def cli(
    lab: AirflowLab, *args: str, timeout: float = 120, extra_environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m pyairtable_migration.cli ARGS` as an engineer runs it: Airflow's URL, user and
    password in the environment, the lab's settings and config (and `extra_environment`)."""
    environment = {
        **os.environ,
        **(extra_environment or {}),
        **lab.settings.to_environment(),
        CONFIG_ENV: str(lab_config_path(lab.settings)),
        "PYTHONPATH": f"{REPO_ROOT / 'plugins'}{os.pathsep}{REPO_ROOT}",
        "AIRFLOW_URL": lab.server.url,
        "AIRFLOW_USERNAME": ADMIN,
        "AIRFLOW_PASSWORD": lab.server.password,
    }
    return subprocess.run(
        [sys.executable, "-m", "pyairtable_migration.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def printed(done: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, whole, for an assertion's message."""
    return f"exit {done.returncode}\n--- stdout:\n{done.stdout}\n--- stderr:\n{done.stderr}"


def triggered_run(done: subprocess.CompletedProcess[str]) -> str:
    found = re.search(r"^triggered \S+: run (\S+)$", done.stdout, re.MULTILINE)
    assert done.returncode == 0 and found, printed(done)
    return found.group(1)
