"""Test session setup: an Airflow home of its own, so tests never touch a developer's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """A migrated metadata database (SQLite) for dag.test() runs."""
    TEST_AIRFLOW_HOME.mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ},
    )
    yield TEST_AIRFLOW_HOME
