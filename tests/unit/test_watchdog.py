"""The suite's bounds fire with Airflow in the process: a helper thread that fails, fails its test at
once with its own exception, and a dag.test() waiting for an answer nobody gives ends at the test's
bound (pytest-timeout's SIGALRM could be taken over by Airflow's own timeouts and never fire).

Each case runs a small pytest session in a subprocess around a real dag.test() of a DAG with one
approval task, on this session's metadata database.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

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
"""


@pytest.fixture
def drills(pytester: pytest.Pytester, airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makepyfile(test_drills=DRILLS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT)]))
    return pytester


def run(drills: pytest.Pytester, name: str) -> pytest.RunResult:
    return drills.runpytest_subprocess(
        "-p", "tests.watchdog", "-p", "no:timeout", "-p", "no:cacheprovider", "-k", name, timeout=400
    )


def test_a_helper_thread_that_fails_fails_its_test_at_once_with_its_exception(
    drills: pytest.Pytester,
) -> None:
    result = run(drills, "test_responder_breaks")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*HelperFailed: helper thread 'responder' failed: RuntimeError*broke on purpose"]
    )
    # Failed by the helper's exception, long before the test's 300 s bound.
    assert "TestTimedOut" not in result.stdout.str()


def test_an_unanswered_approval_ends_at_the_bound_instead_of_waiting_forever(drills: pytest.Pytester) -> None:
    result = run(drills, "test_nobody_answers")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*TestTimedOut: *test_nobody_answers ran past its 20 s bound"])


def test_the_responder_answers_its_own_run(drills: pytest.Pytester) -> None:
    run(drills, "test_answered").assert_outcomes(passed=1)
