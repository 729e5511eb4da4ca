"""Nothing a test run starts outlives it, however the run ends.

Each case starts a real pytest session (this project's conftest) whose test brings up a throwaway
lab component (Redis) and a plain child process, then waits forever; the session is then ended
the hard ways: SIGTERM (a CI timeout, `timeout make test`) and SIGKILL (nothing runs in it after). The lab's
directory and the Airflow home a process worked in go too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from lab.reaper import OWNER_VARIABLE, reap_orphans

pytestmark = pytest.mark.timeout(240)

WAITS_FOREVER = """
import json
import os
import subprocess
import tempfile
import time

from lab.settings import LabSettings
from lab.supervisor import start_component


def test_waits_forever():
    settings = LabSettings.throwaway("pyairtable-reaper-drill-")
    redis = start_component("redis-source", settings)
    home = tempfile.mkdtemp(prefix="pyairtable-reaper-drill-airflow-")
    child = subprocess.Popen(["sleep", "3600"], env={**os.environ, "AIRFLOW_HOME": home})
    state = {"pids": [redis, child.pid], "dirs": [str(settings.data_dir), home]}
    with open(os.environ["DRILL_STATE"], "w") as out:
        json.dump(state, out)
    while True:
        time.sleep(1)
"""


# The same after a task ran in the session's own process (dag.test(), as most tests here do):
# Airflow's task runner installs its SIGTERM handler there.
AFTER_A_TASK = WAITS_FOREVER.replace(
    "def test_waits_forever():",
    """def test_waits_forever(airflow_db):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from tests.dagrun import registered

    with DAG("reaper_drill", schedule=None) as dag:
        EmptyOperator(task_id="one")
    assert registered(dag).test().state == "success"
""",
)


@pytest.fixture
def drill(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    source = request.param
    (tmp_path / "test_drill.py").write_text(textwrap.dedent(source))
    state = tmp_path / "state.json"
    environment = {key: value for key, value in os.environ.items() if key != OWNER_VARIABLE} | {
        "DRILL_STATE": str(state),
        "PYAIRTABLE_TEST_AIRFLOW_HOME": str(tmp_path / "airflow"),
    }
    session = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-q",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield session, state
    finally:
        session.kill()
        session.wait()


def started(session: subprocess.Popen[bytes], state: Path) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while not state.exists() or not state.read_text():
        assert session.poll() is None, "the drill session ended before starting its processes"
        assert time.monotonic() < deadline, "the drill session did not start its processes"
        time.sleep(0.2)
    return dict(json.loads(state.read_text()))


def gone(pids: list[int], dirs: list[Path], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        if not alive and not any(directory.exists() for directory in dirs):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize(
    ("signum", "drill"),
    [(signal.SIGTERM, WAITS_FOREVER), (signal.SIGKILL, WAITS_FOREVER), (signal.SIGTERM, AFTER_A_TASK)],
    ids=["SIGTERM", "SIGKILL", "SIGTERM after dag.test"],
    indirect=["drill"],
)
def test_a_killed_test_session_leaves_no_process_and_no_lab_behind(
    drill: tuple[subprocess.Popen[bytes], Path], signum: signal.Signals
) -> None:
    session, state_file = drill
    state = started(session, state_file)
    pids = [int(pid) for pid in state["pids"]]  # type: ignore[attr-defined]
    dirs = [Path(directory) for directory in state["dirs"]]  # type: ignore[attr-defined]
    assert all(psutil.pid_exists(pid) for pid in pids) and all(directory.is_dir() for directory in dirs)

    session.send_signal(signum)
    session.wait(timeout=60)
    assert gone(pids, dirs, within=60), [pid for pid in pids if psutil.pid_exists(pid)]


def test_orphans_whose_watcher_was_killed_too_are_reaped_by_the_next_session(tmp_path: Path) -> None:
    # An owner that is gone: a process started with the mark of a pid that has exited.
    ended = subprocess.Popen(["true"])
    ended.wait()
    mark = f"{ended.pid}:0.00"
    orphan = subprocess.Popen(
        ["sleep", "3600"], env={**os.environ, OWNER_VARIABLE: mark}, start_new_session=True
    )
    try:
        # Until the child has exec'd, its environment is still this session's (an owner alive).
        deadline = time.monotonic() + 30
        while psutil.Process(orphan.pid).cmdline()[:1] != ["sleep"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(line.startswith(f"pid {orphan.pid} ") for line in reap_orphans())
        orphan.wait(timeout=30)  # it ended (the reaper already collected its status)
    finally:
        orphan.kill()
