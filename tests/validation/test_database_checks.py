"""The validation phase's database checks and the rollback's database step, after a real switchover.

On a pair of clusters of its own (tests/database/pair.py: repointing the pooler on the shared lab
would disturb other modules): the database phase and the switchover run as the DAG runs them, then
final parity (target -> source through reverse replication), replication leftovers and the backup
restore check; then the rollback DAG's database step moves writers back, and a second run changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from pyairtable_migration.builder import create_airflow_task
from pyairtable_migration.config import MigrationConfig, load_config
from pyairtable_migration.operators.validation import SecurityOperator
from pyairtable_migration.rollback import build_rollback_plan
from pyairtable_migration.status import database_status
from tests.database.pair import Pair, running_pair
from tests.database.runner import POSTGRES_STEPS, operator_for, run, run_fast

pytestmark = pytest.mark.lab

RECORDS = 5000
PHASE = [*POSTGRES_STEPS, "switchover.switch_database"]


@pytest.fixture(scope="module")
def config() -> MigrationConfig:
    return load_config()


@pytest.fixture(scope="module")
def switched(config: MigrationConfig) -> Iterator[Pair]:
    with running_pair(RECORDS) as pair:
        pair.reset()
        for task_id in PHASE:
            run_fast(config, task_id)
        yield pair


def test_status_shows_writers_on_the_target_and_reverse_replication(
    switched: Pair, config: MigrationConfig
) -> None:
    status = database_status(config)
    pooler = status["poolers"]["pgbouncer"]
    assert (pooler["points_at"], pooler["paused"], pooler["clients_waiting"]) == ("target", False, 0)
    # Served there: a client through the pooler, then its server connection is counted.
    with psycopg2.connect(switched.app_dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()
    assert database_status(config)["poolers"]["pgbouncer"]["server_connections"] >= 1
    assert status["replication"]["forward (source -> target)"]["state"] == "absent"
    reverse = status["replication"]["reverse (target -> source)"]
    assert reverse["state"] == "enabled" and reverse["lag_bytes"] is not None


def test_final_parity_compares_target_to_source_after_the_switchover(
    switched: Pair, config: MigrationConfig
) -> None:
    with switched.connect("target") as connection, connection.cursor() as cursor:
        cursor.execute("INSERT INTO workspaces (name, owner_id) SELECT 'after-switch', min(id) FROM users")
    summary = run(operator_for(config, "validation.data_parity"), config)
    assert summary["writers_on"] == "target" and summary["compared"] == "target -> source"
    assert summary["passed"] and summary["problems"] == [] and summary["rows"] >= RECORDS


def test_only_the_reverse_path_is_left_behind(switched: Pair, config: MigrationConfig) -> None:
    step = operator_for(config, "validation.security")
    assert isinstance(step, SecurityOperator)
    kept, problems = step.leftovers()
    db = config.database
    assert kept == {
        "source": [f"subscription:{db.reverse_subscription}"],
        "target": [f"publication:{db.reverse_publication}", f"slot:{db.reverse_subscription}"],
    }
    assert problems == [], "the switchover dropped the forward publication, subscription and slot"


@pytest.mark.parametrize("task_id", PHASE[:3])
def test_the_steps_that_write_into_the_target_refuse_once_writers_are_there(
    switched: Pair, config: MigrationConfig, task_id: str
) -> None:
    """Cleared after the switchover (or a second run of the migration), they would copy staging
    over production: create_subscription would even empty the target's tables first."""
    before = leftovers_and_rows(switched)
    with pytest.raises(AirflowFailException, match=r"writers are on the target .* nothing changed"):
        run(operator_for(config, task_id), config)
    assert leftovers_and_rows(switched) == before


def leftovers_and_rows(pair: Pair) -> dict[str, Any]:
    return {
        side: pair.query(
            side,
            "SELECT (SELECT count(*) FROM records), (SELECT array_agg(pubname ORDER BY pubname) FROM "
            "pg_publication), (SELECT array_agg(subname ORDER BY subname) FROM pg_subscription)",
        )
        for side in ("source", "target")
    }


def test_rollback_moves_writers_back_then_changes_nothing(switched: Pair, config: MigrationConfig) -> None:
    step = build_rollback_plan(config).steps["database.repoint_poolers"]
    dag = DAG("test_rollback_database", schedule=None)
    first = run(create_airflow_task(step, dag, None), config)
    assert first["changed"] is True
    assert database_status(config)["poolers"]["pgbouncer"]["points_at"] == "source"
    dag = DAG("test_rollback_database_again", schedule=None)
    again = run(create_airflow_task(step, dag, None), config)
    assert again == {"changed": False, "writers_on": "source"}
