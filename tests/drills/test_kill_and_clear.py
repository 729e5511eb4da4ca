"""Fault drill: SIGKILL a task's process mid-run, clear it as an on-call engineer would, and finish.

Real Airflow (scheduler, LocalExecutor workers, triggerer) drives one migration of a fresh lab
under load. For three tasks of that run — during replication, the write switchover and a traffic
step — the test kills the task's own process (titled `airflow worker -- <ti id>`) while it works.
The task shows up for retry, and the engineer does not wait for the retry: a clear (with
downstream, as the UI's Clear does) runs it again at once. The run must then succeed, with
every acknowledged write on the target and no failed commit.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
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

pytestmark = [pytest.mark.lab, pytest.mark.real_airflow]

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


def hold_a_transaction(lab: AirflowLab, seconds: float) -> None:
    """An application transaction open through the pooler for `seconds` (on a thread): PAUSE waits for
    it, so the switchover's freeze lasts that long and a kill lands inside it."""

    def hold() -> None:
        with psycopg2.connect(app_dsn(lab.settings)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM records")
            time.sleep(seconds)
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
) -> dict[str, Any]:
    """SIGKILL the task's process in `attempt` once it runs (`when_running` called then) and
    `moment()` holds (else after 5 s); `kill(pid)` may take more with it (its whole worker)."""
    server = lab.server

    def running_process() -> tuple[str, int] | None:
        ti = server.task_instances(MIGRATION_DAG, run_id)[task_id]
        if ti["state"] in FINISHED:
            failed = server.failures(MIGRATION_DAG, run_id)
            state = ti["state"]
            raise AssertionError(f"{task_id} is {state} before attempt {attempt} could be killed: {failed}")
        if ti["state"] != "running" or ti["try_number"] != attempt:
            return None
        pid = task_process(str(ti["id"]))
        return None if pid is None else (str(ti["id"]), pid)

    ti_id, pid = server.wait(f"{task_id} attempt {attempt} to run", running_process, timeout=600, poll=0.1)
    if when_running is not None:
        when_running()
    caught = False
    deadline = time.monotonic() + 5
    while moment is not None and time.monotonic() < deadline and task_process(ti_id) == pid:
        if moment():
            caught = True
            break
        time.sleep(0.002)
    kill(pid)
    return {"task": task_id, "attempt": attempt, "moment_caught": caught}


def awaits_retry(lab: AirflowLab, run_id: str, task_id: str) -> bool:
    return bool(lab.server.task_instances(MIGRATION_DAG, run_id)[task_id]["state"] == "up_for_retry")


@pytest.mark.timeout(1500)
def test_killed_tasks_cleared_and_rerun_finish_the_migration_losing_nothing(drill_lab: AirflowLab) -> None:
    lab, server = drill_lab, drill_lab.server
    lab.fresh()
    run_id = server.trigger(MIGRATION_DAG, FAST_RUN)
    kills = []
    for task_id, moment, when_running in (
        (REPLICATION_TASK, None, None),
        (SWITCHOVER_TASK, pooler_paused(lab), functools.partial(hold_a_transaction, lab, 3.0)),
        (TRAFFIC_TASK, None, None),
    ):
        kills.append(kill_attempt(lab, run_id, task_id, 1, moment, when_running))
        if moment is not None:  # killed inside the freeze: nobody resumes the pooler but a re-run
            assert kills[-1]["moment_caught"], kills
            assert moment(), "the pooler should still be paused after the switchover's process died"
        retrying = functools.partial(awaits_retry, lab, run_id, task_id)
        server.wait(f"{task_id} to be up for retry", retrying, timeout=120)
        assert task_id in server.clear(MIGRATION_DAG, run_id, [task_id])
    state = server.wait_for_run(MIGRATION_DAG, run_id)
    figures = lab.stop_load()
    tasks = server.task_instances(MIGRATION_DAG, run_id)
    not_done = {t: ti["state"] for t, ti in tasks.items() if ti["state"] not in ("success", "skipped")}
    assert state == "success", (not_done, kills, server.failures(MIGRATION_DAG, run_id), server.log_tail())
    for task_id in (REPLICATION_TASK, SWITCHOVER_TASK, TRAFFIC_TASK):
        tries = server.tries(MIGRATION_DAG, run_id, task_id)
        # The killed attempt is recorded as failed; the last attempt, after the clear, succeeded.
        assert tries.get(1) in ("failed", "up_for_retry"), (task_id, tries)
        assert max(tries) > 1 and tries[max(tries)] == "success", (task_id, tries)
    ledger = lab.ledger(app_dsn(lab.settings))  # through the pooler, which points at the target now
    assert not pooler_paused(lab)(), "the re-run switchover resumed the pooler"
    assert ledger.checked > 0
    assert ledger.lost == 0, ledger
    assert figures["db_failures"] == 0, figures
    print(f"\nkills: {kills}\nload: {figures}\nledger: {ledger}")
