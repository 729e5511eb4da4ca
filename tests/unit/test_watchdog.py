"""The suite's bounds fire with Airflow in the process: a helper thread that fails, fails its test at
once with its own exception, and a dag.test() waiting for an answer nobody gives ends at the test's
bound (pytest-timeout's SIGALRM could be taken over by Airflow's own timeouts and never fire), and
fails even where the code under test caught the interrupt or where it landed between two lines; a
teardown that outlasts its test's bound still finishes, and the next test runs.

The cases run as one small pytest session in a subprocess, each around a real dag.test() of a DAG with one
approval task.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DRILLS = """
import sys
import threading
import time
import types
from datetime import UTC, datetime

import pytest
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG

from tests.dagrun import Responder, registered, run_id_at
from tests.watchdog import HelperFailed, helper_thread


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


@pytest.mark.timeout(30)
def test_interrupted_between_two_lines():
    here = sys._getframe()
    try:  # the handler's cleanup instructions belong to no line
        pass
    except ValueError:
        pass
    between = next(start for start, _, line in here.f_code.co_lines() if line is None)
    failure = HelperFailed("helper thread 'drill' failed: RuntimeError: between two lines")
    raise failure.with_traceback(types.TracebackType(None, here, between, -1))


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
def drills(tmp_path_factory: pytest.TempPathFactory, pristine_airflow_db: Path) -> str:
    """The drills' pytest output (one session: Airflow is imported once for them all), on a metadata
    database (the session's, as migrated, before any test wrote to it) and an (empty) DAGs folder of
    their own: nothing the session's other tests left there, and no project DAG parsed at each
    dag.test(), plays a part in how a drill ends."""
    folder = tmp_path_factory.mktemp("watchdog-drills")
    (folder / "test_drills.py").write_text(DRILLS)
    (folder / "dags").mkdir()
    (folder / "airflow").mkdir()
    shutil.copyfile(pristine_airflow_db, folder / "airflow" / "airflow.db")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(folder / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(folder / "dags"),
        "COLUMNS": "500",  # the short summary's lines whole, not cut at 80
    }
    command = [sys.executable, "-m", "pytest", "-p", "tests.watchdog", "-p", "no:timeout"]
    finished = subprocess.run(
        [*command, "-p", "no:cacheprovider", "-rA", "test_drills.py"],
        cwd=folder,
        env=env,
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


def section(output: str, test: str, tail: int = 4000) -> str:
    """The end of what the drills' session printed for `test` (its failure, or its captured output
    with -rA): put in an assertion's message, it says why a drill ended otherwise than expected."""
    header = re.compile(rf"^_+ {re.escape(test)} _+$", re.MULTILINE)
    found = header.search(output)
    if found is None:
        return output[-tail:]
    following = re.compile(r"^(_+ \w+ _+|=+ .* =+)$", re.MULTILINE).search(output, found.end())
    return output[found.start() : following.start() if following else len(output)][-tail:]


def test_a_failing_helper_thread_fails_its_test_at_once_with_its_exception(drills: str) -> None:
    line = summary_line(drills, "test_responder_breaks")
    assert line.startswith("FAILED") and "HelperFailed" in line, section(drills, "test_responder_breaks")
    assert re.search(
        r"HelperFailed: helper thread 'responder' failed: RuntimeError: .* broke on purpose", drills
    )
    # Failed by the helper's exception, not by its test's 300 s bound.
    assert "test_responder_breaks ran past" not in drills


def test_an_unanswered_approval_ends_at_the_bound_instead_of_waiting_forever(drills: str) -> None:
    line = summary_line(drills, "test_nobody_answers")
    assert line.startswith("FAILED") and "TestTimedOut" in line, section(drills, "test_nobody_answers")
    assert "test_drills.py::test_nobody_answers ran past its 20 s bound" in drills


def test_a_test_that_swallowed_the_interrupt_still_fails_at_its_bound(drills: str) -> None:
    line = summary_line(drills, "test_swallows_the_interrupt")
    assert line.startswith("FAILED") and "TestTimedOut" in line, section(
        drills, "test_swallows_the_interrupt"
    )


def test_an_interrupt_between_two_lines_fails_its_test_and_the_session_goes_on(drills: str) -> None:
    """A signal can land where the frame has no line number; pytest, rendering such a traceback,
    ended the whole session with an INTERNALERROR (every later test unrun)."""
    assert "INTERNALERROR" not in drills, drills[-4000:]
    line = summary_line(drills, "test_interrupted_between_two_lines")
    assert line.startswith("FAILED") and "HelperFailed" in line, section(
        drills, "test_interrupted_between_two_lines"
    )
    assert summary_line(drills, "test_after_the_slow_teardown").startswith("PASSED")


def test_the_responder_answers_its_own_run(drills: str) -> None:
    assert summary_line(drills, "test_answered").startswith("PASSED"), section(drills, "test_answered")


def test_a_teardown_past_the_bound_finishes_and_the_next_test_runs(drills: str) -> None:
    """Teardown has an allowance of its own: one interrupted half-way (a module fixture's, in CI)
    would leave fixtures half torn down, and every later test of the process failing on them."""
    assert summary_line(drills, "test_slow_teardown").startswith("PASSED")
    assert "slow teardown finished" in drills
    assert summary_line(drills, "test_after_the_slow_teardown").startswith("PASSED")
