"""The suite's bounds fire with Airflow in the process: a helper thread that fails, fails its test at
once with its own exception, and a dag.test() waiting for an answer nobody gives ends at the test's
bound (pytest-timeout's SIGALRM could be taken over by Airflow's own timeouts and never fire), and
fails even where the code under test caught the interrupt; a teardown that outlasts its test's bound
still finishes, and the next test runs.

The cases run as one small pytest session in a subprocess, each around a real dag.test() of a DAG with one
approval task, on this session's metadata database.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DRILLS = """
import threading
import time
from datetime import UTC, datetime

import pytest
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG

from tests.dagrun import Responder, registered, run_id_at
from tests.watchdog import helper_thread


def approval_dag(dag_id):
    with DAG(dag_id, schedule=None) as dag:
        ApprovalOperator(task_id="approve", subject="watchdog drill")
    return registered(dag)


@pytest.mark.timeout(300)
def test_responder_breaks():
    dag = approval_dag("watchdog_drill_broken_responder")
    when = datetime.now(UTC)
    responder = Responder(dag.dag_id, run_id_at(when), "approve", "Approve")

    def broken():
        time.sleep(3)  # the run is waiting for its answer by now
        raise RuntimeError(f"responder for {responder.run_id} broke on purpose")

    helper_thread(broken, "responder")
    dag.test(logical_date=when, run_after=when)


@pytest.mark.timeout(20)
def test_nobody_answers():
    approval_dag("watchdog_drill_unanswered").test()


@pytest.mark.timeout(300)
def test_answered():
    dag = approval_dag("watchdog_drill_answered")
    when = datetime.now(UTC)
    responder = Responder(dag.dag_id, run_id_at(when), "approve", "Approve")
    stop = threading.Event()
    helper_thread(lambda: responder.answer(stop), "responder")
    run = dag.test(logical_date=when, run_after=when)
    stop.set()
    assert run.state == "success"


@pytest.mark.timeout(3)
def test_swallows_the_interrupt():
    try:
        time.sleep(10)
    except BaseException:  # as a task runner does around a task
        pass


@pytest.fixture
def slow_to_stop():
    yield
    time.sleep(4)  # past the bound of the test it ended with, as a lab's teardown can be
    print("slow teardown finished")


@pytest.mark.timeout(3)
def test_slow_teardown(slow_to_stop):
    time.sleep(2)


def test_after_the_slow_teardown():
    pass
"""


@pytest.fixture(scope="module")
def drills(tmp_path_factory: pytest.TempPathFactory, airflow_db: Path) -> str:
    """The drills' pytest output (one session: Airflow is imported once for them all)."""
    folder = tmp_path_factory.mktemp("watchdog-drills")
    (folder / "test_drills.py").write_text(DRILLS)
    command = [sys.executable, "-m", "pytest", "-p", "tests.watchdog", "-p", "no:timeout"]
    finished = subprocess.run(
        [*command, "-p", "no:cacheprovider", "-rA", "test_drills.py"],
        cwd=folder,
        env={**os.environ, "COLUMNS": "500"},  # the short summary's lines whole, not cut at 80
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return finished.stdout + finished.stderr


def summary_line(output: str, test: str) -> str:
    """`PASSED test_drills.py::test` or `FAILED test_drills.py::test - why` from the short summary."""
    return next(
        line
        for line in output.splitlines()
        if line.split(" ")[0] in ("PASSED", "FAILED") and line.split(" ")[1] == f"test_drills.py::{test}"
    )


def test_a_failing_helper_thread_fails_its_test_at_once_with_its_exception(drills: str) -> None:
    line = summary_line(drills, "test_responder_breaks")
    assert line.startswith("FAILED"), line
    assert "HelperFailed" in line, line
    assert re.search(
        r"HelperFailed: helper thread 'responder' failed: RuntimeError: .* broke on purpose", drills
    )
    # Failed by the helper's exception, not by its test's 300 s bound.
    assert "test_responder_breaks ran past" not in drills


def test_an_unanswered_approval_ends_at_the_bound_instead_of_waiting_forever(drills: str) -> None:
    line = summary_line(drills, "test_nobody_answers")
    assert line.startswith("FAILED") and "TestTimedOut" in line, line
    assert "test_drills.py::test_nobody_answers ran past its 20 s bound" in drills


def test_a_test_that_swallowed_the_interrupt_still_fails_at_its_bound(drills: str) -> None:
    line = summary_line(drills, "test_swallows_the_interrupt")
    assert line.startswith("FAILED") and "TestTimedOut" in line, line


def test_the_responder_answers_its_own_run(drills: str) -> None:
    assert summary_line(drills, "test_answered").startswith("PASSED")


def test_a_teardown_past_the_bound_finishes_and_the_next_test_runs(drills: str) -> None:
    """Teardown has an allowance of its own: one interrupted half-way (a module fixture's, in CI)
    would leave fixtures half torn down, and every later test of the process failing on them."""
    assert summary_line(drills, "test_slow_teardown").startswith("PASSED")
    assert "slow teardown finished" in drills
    assert summary_line(drills, "test_after_the_slow_teardown").startswith("PASSED")
