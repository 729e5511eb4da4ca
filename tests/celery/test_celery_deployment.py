"""A whole migration on the Celery deployment (lab/airflow_celery.py) with a worker SIGKILLed mid-run.

Airflow as docker-compose.yaml deploys it, without Docker: CeleryExecutor, a Redis broker, a
PostgreSQL metadata database, api-server, scheduler, dag-processor, triggerer and two workers (and a
worker beside each pooler the config gives a queue), each a process of its own. One migration of a
fresh lab under load. When `database.copy_schema` runs, its worker is SIGKILLed together with the
task: nobody clears anything. The scheduler fails the attempt once its heartbeat stops, the retry
runs on the surviving worker, and the run succeeds with every acknowledged write on the target.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.airflow_celery import DEFAULT_WORKERS, CeleryAirflow, pooler_queues, pooler_workers
from lab.loadgen import app_dsn
from lab.migration_config import lab_config_path
from lab.settings import LabSettings
from tests.airflow_lab import FAST_RUN, MIGRATION_DAG, AirflowLab, airflow_lab
from tests.drills.test_kill_and_clear import kill_attempt, pooler_paused

pytestmark = [pytest.mark.lab, pytest.mark.real_airflow]

KILLED_TASK = "database.copy_schema"
SWITCH_TASK = "switchover.switch_database"
FILE_CHECK_TASK = "preflight.check_pooler_files"


def celery_airflow(settings: LabSettings, home: Path, port: int) -> CeleryAirflow:
    workers = [*DEFAULT_WORKERS, *pooler_workers(lab_config_path(settings))]
    return CeleryAirflow(settings, home, port, workers)


@pytest.fixture(scope="module")
def celery_lab() -> Iterator[AirflowLab]:
    started = time.monotonic()
    with airflow_lab("pyairtable-celery-", celery_airflow) as lab:
        print(f"\nlab and Celery deployment up in {time.monotonic() - started:.0f} s")
        yield lab


def attempts(lab: AirflowLab, run_id: str, task_id: str) -> dict[int, dict[str, Any]]:
    """Each attempt of a task: its state, queue and the worker (hostname) that ran it."""
    path = f"dags/{MIGRATION_DAG}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
    return {int(t["try_number"]): t for t in lab.server.api("GET", path)["task_instances"]}


@pytest.mark.timeout(900)
def test_worker_killed_mid_run_retry_finishes_the_migration_losing_nothing(celery_lab: AirflowLab) -> None:
    lab, server = celery_lab, celery_lab.server
    assert isinstance(server, CeleryAirflow)
    lab.fresh()
    started = time.monotonic()
    run_id = server.trigger(MIGRATION_DAG, FAST_RUN)
    victims: list[str] = []

    def kill_its_worker(pid: int) -> None:
        victim = server.worker_running(pid)
        assert victim is not None, f"no worker of this deployment runs task process {pid}"
        victims.append(victim)
        server.kill(victim)

    kill = kill_attempt(lab, run_id, KILLED_TASK, 1, kill=kill_its_worker)
    killed_at = time.monotonic() - started
    state = server.wait_for_run(MIGRATION_DAG, run_id, timeout=720)
    took = time.monotonic() - started
    figures = lab.stop_load()
    tasks = server.task_instances(MIGRATION_DAG, run_id)
    not_done = {t: ti["state"] for t, ti in tasks.items() if ti["state"] not in ("success", "skipped")}
    assert state == "success", (not_done, kill, server.log_tail(name="scheduler"))

    # The killed attempt failed on the victim (no heartbeat); the retry succeeded on another worker.
    tries = attempts(lab, run_id, KILLED_TASK)
    assert tries[1]["hostname"] == victims[0], tries
    assert tries[1]["state"] in ("failed", "up_for_retry"), tries
    last = tries[max(tries)]
    assert last["state"] == "success" and last["hostname"] != victims[0], tries
    ran_on = {ti["hostname"] for ti in tasks.values() if ti["hostname"]}
    assert ran_on <= {worker.name for worker in server.workers}, ran_on
    assert len(ran_on | set(victims)) >= 2, f"every task ran on one worker: {ran_on}"

    # The file check and the switch ran in their pooler's queue, on the worker beside the pooler.
    (queue,) = set(pooler_queues(lab_config_path(lab.settings)).values())
    (beside,) = [worker.name for worker in server.workers if worker.queues == (queue,)]
    for task_id in (FILE_CHECK_TASK, SWITCH_TASK):
        assert (tasks[task_id]["queue"], tasks[task_id]["hostname"]) == (queue, beside), tasks[task_id]
    switch = tasks[SWITCH_TASK]

    ledger = lab.ledger(app_dsn(lab.settings))  # through the pooler, which points at the target now
    assert not pooler_paused(lab)()
    assert ledger.checked > 0
    assert ledger.lost == 0, ledger
    assert figures["db_failures"] == 0, figures
    print(
        f"\nmigration on Celery: {state} in {took:.0f} s; worker {victims[0]} SIGKILLed at {killed_at:.0f} s "
        f"running {KILLED_TASK}; retried on {last['hostname']} (attempt {max(tries)})\n"
        f"switch: queue {switch['queue']!r} on {switch['hostname']}; tasks ran on {sorted(ran_on)}\n"
        f"load: {figures}\nledger: {ledger}"
    )
