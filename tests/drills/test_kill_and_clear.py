"""Fault drill: SIGKILL a worker and task processes mid-run, clear as an on-call engineer would, finish.

The session's Airflow deployment (tests/airflow_lab.py: CeleryExecutor, two workers and one beside
the pooler, as docker-compose.yaml deploys it) drives one migration of a fresh lab under load:
- when `database.copy_schema` runs, its whole worker is SIGKILLed with it, and nobody clears
  anything: the scheduler fails the attempt once its heartbeat stops and the retry runs on a
  surviving worker;
- for three tasks — during replication, the write switchover and a traffic step — only the task's
  own process is killed while it works. The task shows up for retry, and the engineer does not wait
  for the retry: a clear (with downstream, as the UI's Clear does) runs it again at once.
The run must then succeed, with every acknowledged write on the target and no failed commit; the
tasks that touch the pooler's files ran on the worker beside it.

The same Airflow and lab then serve the command line (`pyairtable_migration.cli`) against the real
api-server: `validate` before the drill's migration (which `migrate` triggers), and after it `status`,
bad input that triggers nothing, and `rollback --scope all --wait`: the rollback DAG under the real
scheduler, everything back on staging, losing no write.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest

from lab.airflow_celery import pooler_queues
from lab.airflow_server import ADMIN, task_process
from lab.connections import connections_in_environment
from lab.credentials import PGBOUNCER_ADMIN, secrets
from lab.ledger import check_ledger
from lab.loadgen import LoadProcess, app_dsn
from lab.migration_config import CONFIG_ENV, lab_config_path
from lab.pgbouncer import ADMIN_DATABASE
from lab.postgres import DATABASE
from lab.settings import REPO_ROOT
from pyairtable_migration.airflow_rest import AirflowError
from pyairtable_migration.config import load_config
from pyairtable_migration.status import collect
from tests.airflow_lab import FAST_RUN, MIGRATION_DAG, ROLLBACK_DAG, AirflowLab

pytestmark = [pytest.mark.lab, pytest.mark.real_airflow]

KILLED_WITH_ITS_WORKER = "database.copy_schema"
REPLICATION_TASK = "database.create_subscription"
SWITCHOVER_TASK = "switchover.switch_database"
TRAFFIC_TASK = "traffic.shift_to_25"
FILE_CHECK_TASK = "preflight.check_pooler_files"
FINISHED = ("success", "skipped", "failed", "upstream_failed")


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
        ti = server.task_instance(MIGRATION_DAG, run_id, task_id)
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


def cli(lab: AirflowLab, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m pyairtable_migration.cli ARGS` as an engineer runs it: Airflow's URL, user and
    password in the environment, the lab's settings and config."""
    environment = {
        **os.environ,
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


def dags_parsed(lab: AirflowLab) -> bool:
    try:
        return not lab.server.import_errors() and all(
            lab.server.dag_details(dag_id) for dag_id in (MIGRATION_DAG, ROLLBACK_DAG)
        )
    except AirflowError:
        return False


def awaits_retry(lab: AirflowLab, run_id: str, task_id: str) -> bool:
    return bool(lab.server.task_instance(MIGRATION_DAG, run_id, task_id)["state"] == "up_for_retry")


def attempts(lab: AirflowLab, run_id: str, task_id: str) -> dict[int, dict[str, Any]]:
    """Each attempt of a task: its state, queue and the worker (hostname) that ran it."""
    path = f"dags/{MIGRATION_DAG}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
    return {int(t["try_number"]): t for t in lab.server.api("GET", path)["task_instances"]}


@pytest.mark.timeout(1500)
def test_a_killed_worker_and_killed_tasks_cleared_finish_the_migration_losing_nothing(
    airflow_deployment: AirflowLab,
) -> None:
    lab, server = airflow_deployment, airflow_deployment.server
    lab.fresh()
    # The purge took the lab's config away for a while: the DAG files failed to import meanwhile.
    server.wait("both DAGs parsed again after the purge", functools.partial(dags_parsed, lab), timeout=180)
    # The command line's preflight-only run: every check against the fresh lab, nothing after them.
    checked = cli(lab, "validate", "--timeout", "600", timeout=660)
    assert checked.returncode == 0, printed(checked)
    assert re.search(r"^  PASS +preflight\.check_database$", checked.stdout, re.MULTILINE), printed(checked)
    assert "preflight passed" in checked.stdout and "FAIL" not in checked.stdout, printed(checked)
    bake = str(FAST_RUN["bake_seconds"])
    started = time.monotonic()
    run_id = triggered_run(cli(lab, "migrate", "--no-approvals", "--bake-seconds", bake))
    assert server.run(MIGRATION_DAG, run_id)["conf"] == {**FAST_RUN, "bake_seconds": float(bake)}

    victims: list[str] = []

    def kill_its_worker(pid: int) -> None:
        victim = server.worker_running(pid)
        assert victim is not None, f"no worker of this deployment runs task process {pid}"
        victims.append(victim)
        server.kill(victim)

    try:
        kills = [kill_attempt(lab, run_id, KILLED_WITH_ITS_WORKER, 1, kill=kill_its_worker)]
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
    finally:
        for victim in victims:  # back for the tests after this one, as a restart policy would
            server.restart(victim)
    took = time.monotonic() - started
    figures = lab.stop_load()
    tasks = server.task_instances(MIGRATION_DAG, run_id)
    not_done = {t: ti["state"] for t, ti in tasks.items() if ti["state"] not in ("success", "skipped")}
    assert state == "success", (not_done, kills, server.failures(MIGRATION_DAG, run_id), server.log_tail())

    # The attempt killed with its worker failed there (no heartbeat); the retry, which nobody
    # asked for, succeeded on another worker.
    tries = attempts(lab, run_id, KILLED_WITH_ITS_WORKER)
    assert tries[1]["hostname"] == victims[0], tries
    assert tries[1]["state"] in ("failed", "up_for_retry"), tries
    last = tries[max(tries)]
    assert last["state"] == "success" and last["hostname"] != victims[0], tries
    # The killed task processes: attempt recorded as failed; the last one, after the clear, succeeded.
    for task_id in (REPLICATION_TASK, SWITCHOVER_TASK, TRAFFIC_TASK):
        cleared = server.tries(MIGRATION_DAG, run_id, task_id)
        assert cleared.get(1) in ("failed", "up_for_retry"), (task_id, cleared)
        assert max(cleared) > 1 and cleared[max(cleared)] == "success", (task_id, cleared)

    ran_on = {ti["hostname"] for ti in tasks.values() if ti["hostname"]}
    assert ran_on <= {worker.name for worker in server.workers}, ran_on
    assert len(ran_on | set(victims)) >= 2, f"every task ran on one worker: {ran_on}"
    # The file check and the switch ran in their pooler's queue, on the worker beside the pooler.
    (queue,) = set(pooler_queues(lab_config_path(lab.settings)).values())
    (beside,) = [worker.name for worker in server.workers if worker.queues == (queue,)]
    for task_id in (FILE_CHECK_TASK, SWITCHOVER_TASK):
        assert (tasks[task_id]["queue"], tasks[task_id]["hostname"]) == (queue, beside), tasks[task_id]

    ledger = lab.ledger(app_dsn(lab.settings))  # through the pooler, which points at the target now
    assert not pooler_paused(lab)(), "the re-run switchover resumed the pooler"
    assert ledger.checked > 0
    assert ledger.lost == 0, ledger
    assert figures["db_failures"] == 0, figures
    print(
        f"\nmigration: {state} in {took:.0f} s; {victims[0]} SIGKILLed running {KILLED_WITH_ITS_WORKER}, "
        f"retried on {last['hostname']}; tasks ran on {sorted(ran_on)}\nkills: {kills}\n"
        f"load: {figures}\nledger: {ledger}"
    )


def rollback_runs(lab: AirflowLab) -> int:
    return lab.server.runs(ROLLBACK_DAG, limit=1)[1]


@pytest.mark.timeout(900)
def test_the_command_line_shows_status_and_rolls_the_migration_back_under_the_scheduler(
    airflow_deployment: AirflowLab,
) -> None:
    """After the drill's migration: `cli status` shows the writers on the target; bad rollback input
    triggers nothing; `cli rollback --scope all --wait` runs the rollback DAG under the real scheduler
    and puts every writer and user back on staging, with load running and no write lost."""
    lab, server = airflow_deployment, airflow_deployment.server
    shown = cli(lab, "status", timeout=180)
    if not re.search(r"^  pooler \S+ -> target$", shown.stdout, re.MULTILINE):
        pytest.skip(f"needs the lab the drill above leaves migrated; status shows:\n{shown.stdout}")
    assert shown.returncode == 0, printed(shown)
    assert f"{MIGRATION_DAG}: " in shown.stdout and "success" in shown.stdout, printed(shown)

    before = rollback_runs(lab)
    for bad, named in (
        (("--services", "web-bff,no-such-service"), "no-such-service"),
        (("--scope", "everything"), "unknown scope 'everything'"),
    ):
        refused = cli(lab, "rollback", *bad)
        assert refused.returncode == 2 and named in refused.stderr, (bad, printed(refused))
    assert rollback_runs(lab) == before, "bad input triggered a rollback"

    ledger_path = lab.settings.data_dir / "rollback-ledger.log"
    lab.load = LoadProcess(
        lab.settings, http_rate=lab.http_rate, db_rate=lab.db_rate, ledger_path=ledger_path
    )
    lab.load.start()
    started = time.monotonic()
    rolled = cli(lab, "rollback", "--scope", "all", "--wait", "--timeout", "600", timeout=700)
    took = time.monotonic() - started
    figures = lab.stop_load()
    output = rolled.stdout + rolled.stderr
    assert rolled.returncode == 0, printed(rolled)
    assert server.password not in output
    run_id = triggered_run(rolled)
    run = server.run(ROLLBACK_DAG, run_id)
    assert run["state"] == "success" and run["conf"] == {"mode": "apply", "scope": "all"}, run
    lines = set(rolled.stdout.splitlines())
    for task_id in ("check_run", "traffic.revert_weights", "database.repoint_poolers", "redis.rollback"):
        assert f"{task_id} -> success" in lines, (task_id, printed(rolled))
    assert figures["db_failures"] == 0, figures

    config_path = lab_config_path(lab.settings)
    with connections_in_environment(lab.settings, **{CONFIG_ENV: str(config_path)}):
        status = collect(load_config(config_path))
    for record, sets in status["dns"].items():
        assert {sid: v["weight"] for sid, v in sets.items()} == {"staging": 100, "production": 0}, record
    assert status["database"]["poolers"], status["database"]
    for name, pooler in status["database"]["poolers"].items():
        assert pooler == {"points_at": "source", "paused": False}, name
    migrated = lab.ledger(app_dsn(lab.settings))  # through the pooler, which points at the source again
    with psycopg2.connect(app_dsn(lab.settings)) as connection:
        during = check_ledger(ledger_path, connection)
    connection.close()
    assert migrated.checked > 0 and migrated.lost == 0, migrated
    assert during.checked > 0 and during.lost == 0, during
    print(
        f"\nrollback {run_id}: {run.get('duration')} s in Airflow, {took:.0f} s for the command"
        f"\nload: {figures}\nledger of the migration: {migrated}\nledger of the rollback: {during}"
    )
