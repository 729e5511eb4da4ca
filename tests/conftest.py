"""Test session setup: an Airflow home of its own, so tests never touch a developer's; a bound on
every test (tests/watchdog.py); and nothing the session starts outlives it (lab/reaper.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from lab.reaper import OWNER_VARIABLE, owner_mark, reap_orphans, start_watcher

pytest_plugins = ["tests.watchdog", "tests.airflow_lab", "pytester"]

REPO_ROOT = Path(__file__).resolve().parent.parent
# tests.parallel gives the process it starts beside this one a home of its own.
TEST_AIRFLOW_HOME = Path(os.environ.get("PYAIRTABLE_TEST_AIRFLOW_HOME", REPO_ROOT / ".test-airflow"))

# Airflow reads its settings when first imported, so these must be set before any test imports it.
os.environ["AIRFLOW_HOME"] = str(TEST_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.pop("PYAIRTABLE_MIGRATION_CONFIG", None)
# What `make` exports: every process a test starts (load generators, lab components, Airflow,
# a pytest session of its own) imports the project as this process does.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT / "plugins"), str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
)
# Every process this session starts inherits the mark; the watcher stops them when it ends.
os.environ[OWNER_VARIABLE] = owner_mark(os.getpid())


def pytest_sessionstart(session: pytest.Session) -> None:
    for line in reap_orphans():
        print(f"stopped, left by an ended test run: {line}", file=sys.stderr)
    session.config.stash[WATCHER] = start_watcher(os.getpid())
    # SIGTERM (a CI timeout, `timeout make test`) unwinds like Ctrl-C: fixtures stop their labs.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal = _sigterm_still_ends_the_session  # type: ignore[assignment]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the session's real Airflow run last, in their order: the deployment they share
    (scheduler, workers, api-server, dag-processor) never idles beside another test."""
    items.sort(key=lambda item: item.get_closest_marker("real_airflow") is not None)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


_install_handler = signal.signal


def _sigterm_still_ends_the_session(signum: int, handler: Any) -> Any:
    """`signal.signal` for the session: a SIGTERM handler someone installs runs, then ours.

    Airflow's task runner, which dag.test() runs in this process, installs its own SIGTERM handler
    (the task's on_kill) and never puts ours back: a `timeout make test` then left this process
    running, its lab with it. Handlers of other signals, and SIG_DFL / SIG_IGN, pass unchanged.
    """
    if signum != signal.SIGTERM or not callable(handler) or handler is _interrupt:
        return _install_handler(signum, handler)

    def theirs_then_ours(received: int, frame: Any) -> None:
        try:
            handler(received, frame)
        finally:
            _interrupt(received, frame)

    return _install_handler(signum, theirs_then_ours)


WATCHER = pytest.StashKey[subprocess.Popen[bytes]]()


@pytest.fixture(scope="session", autouse=True)
def dag_test_polls() -> Iterator[None]:
    from tests.dagrun import dag_test_polls_faster

    with dag_test_polls_faster():
        yield


# A copy of the metadata database as `airflow db migrate` left it, before any test wrote to it.
PRISTINE_DB = "airflow-pristine.db"


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """A migrated metadata database (SQLite) for dag.test() runs; beside it, a pristine copy for
    a test that needs an Airflow of its own (a copy takes no time, a migration most of a minute)."""
    TEST_AIRFLOW_HOME.mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ},
    )
    shutil.copyfile(TEST_AIRFLOW_HOME / "airflow.db", TEST_AIRFLOW_HOME / PRISTINE_DB)
    yield TEST_AIRFLOW_HOME


@pytest.fixture(scope="session")
def pristine_airflow_db(airflow_db: Path) -> Path:
    """The metadata database as migrated, to be copied (never opened) by a test that needs its own."""
    return airflow_db / PRISTINE_DB


MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server of this session's own (nothing else uses it)."""
    from tests.services.support import free_port  # not at the top: Airflow's home is set above

    port = free_port()
    process = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{endpoint}/moto-api/", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"moto_server did not start on port {port}")
            time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)
