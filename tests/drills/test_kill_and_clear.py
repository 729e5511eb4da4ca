"""Fault drill: SIGKILL a task's process mid-run, clear it as an on-call engineer would, and finish.

Real Airflow (scheduler, LocalExecutor workers, triggerer) drives one migration of a fresh lab
under load. For three tasks of that run — during replication, the write switchover and a traffic
step — the test kills the task's own process (titled `airflow worker -- <ti id>`) while it works,
twice: the first kill is absorbed by the DAG's one automatic retry, the second leaves the task
failed, and the clear (with downstream, as the UI's Clear does) runs it a third time. The run
must then succeed with every acknowledged write on the target and no failed commit.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest

from lab.airflow_server import task_process
from lab.credentials import PGBOUNCER_ADMIN, secrets
from lab.loadgen import app_dsn
from lab.pgbouncer import ADMIN_DATABASE
from lab.postgres import DATABASE
from tests.airflow_lab import FAST_RUN, MIGRATION_DAG, AirflowLab, airflow_lab

pytestmark = pytest.mark.lab

REPLICATION_TASK = "database.create_subscription"
SWITCHOVER_TASK = "switchover.switch_database"
TRAFFIC_TASK = "traffic.shift_to_25"
FINISHED = ("success", "skipped", "failed", "upstream_failed")


@pytest.fixture(scope="module")
def drill_lab() -> Iterator[AirflowLab]:
    with airflow_lab("pyairtable-drill-") as lab:
        yield lab


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


def kill_attempt(
    lab: AirflowLab, run_id: str, task_id: str, attempt: int, moment: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """SIGKILL the task's process in `attempt` once it runs and `moment()` holds (else after 5 s)."""
    server = lab.server

    def running_process() -> tuple[str, int] | None:
        ti = server.task_instances(MIGRATION_DAG, run_id)[task_id]
        if ti["state"] in FINISHED:
            raise AssertionError(f"{task_id} is {ti['state']} before attempt {attempt} could be killed")
        if ti["state"] != "running" or ti["try_number"] != attempt:
            return None
        pid = task_process(str(ti["id"]))
        return None if pid is None else (str(ti["id"]), pid)

    ti_id, pid = server.wait(f"{task_id} attempt {attempt} to run", running_process, timeout=600, poll=0.1)
    caught = False
    deadline = time.monotonic() + 5
    while moment is not None and time.monotonic() < deadline and task_process(ti_id) == pid:
        if moment():
            caught = True
            break
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    return {"task": task_id, "attempt": attempt, "moment_caught": caught}


def has_failed(lab: AirflowLab, run_id: str, task_id: str) -> bool:
    return bool(lab.server.task_instances(MIGRATION_DAG, run_id)[task_id]["state"] == "failed")


@pytest.mark.timeout(1500)
def test_killed_tasks_retried_then_cleared_finish_the_migration_losing_nothing(drill_lab: AirflowLab) -> None:
    lab, server = drill_lab, drill_lab.server
    lab.fresh()
    run_id = server.trigger(MIGRATION_DAG, FAST_RUN)
    kills = []
    for task_id, moment in (
        (REPLICATION_TASK, None),
        (SWITCHOVER_TASK, pooler_paused(lab)),
        (TRAFFIC_TASK, None),
    ):
        kills.append(kill_attempt(lab, run_id, task_id, 1))  # the automatic retry takes over
        kills.append(kill_attempt(lab, run_id, task_id, 2, moment))  # no retry left: failed
        # Clear once the run has settled as failed, as the engineer sees it in the UI: a clear that
        # races the scheduler's handling of the failure can leave downstream tasks upstream_failed.
        assert server.wait_for_run(MIGRATION_DAG, run_id, timeout=300) == "failed"
        assert has_failed(lab, run_id, task_id)
        assert task_id in server.clear(MIGRATION_DAG, run_id, [task_id])
    state = server.wait_for_run(MIGRATION_DAG, run_id)
    figures = lab.stop_load()
    tasks = server.task_instances(MIGRATION_DAG, run_id)
    not_done = {t: ti["state"] for t, ti in tasks.items() if ti["state"] not in ("success", "skipped")}
    assert state == "success", (not_done, kills, server.log_tail())
    for task_id in (REPLICATION_TASK, SWITCHOVER_TASK, TRAFFIC_TASK):
        tries = server.tries(MIGRATION_DAG, run_id, task_id)
        assert tries[1] in ("failed", "up_for_retry") and tries[2] == "failed", (task_id, tries)
        assert tries[3] == "success", (task_id, tries)
    ledger = lab.ledger(app_dsn(lab.settings))  # through the pooler, which points at the target now
    assert ledger.checked > 0
    assert ledger.lost == 0, ledger
    assert figures["db_failures"] == 0, figures
    print(f"\nkills: {kills}\nload: {figures}\nledger: {ledger}")
