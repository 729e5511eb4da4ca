"""The rollback DAG: its shape (reverse dependency order), and on the lab a no-op on clean staging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.settings import LabSettings
from lab.synthetic_graph import REAL_CONFIG
from pyairtable_migration.config import load_config
from pyairtable_migration.rollback import ROLLBACK_DAG_ID, build_rollback_dag, build_rollback_plan
from tests.dagrun import registered, task_states
from tests.lab.conftest import lab  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]


def upstream_closure(dag: object, task_id: str) -> set[str]:
    return {t.task_id for t in dag.get_task(task_id).get_flat_relatives(upstream=True)}  # type: ignore[attr-defined]


def test_rollback_undoes_in_reverse_dependency_order() -> None:
    config = load_config(REAL_CONFIG)
    dag = build_rollback_dag(config)
    services = {f"services.{config.services[n].tier}.{n}": n for n in config.deployable}
    assert {t.task_id for t in dag.tasks} == {
        "check_run",
        "traffic.revert_weights",
        *services,
        "database.repoint_poolers",
        "database.drop_forward_replication",
        "redis.rollback",
        "kafka.rollback",
    }
    # traffic first, every service before the database, the database before Redis, Kafka's consumers
    # after every writer
    for task_id in services:
        assert "traffic.revert_weights" in upstream_closure(dag, task_id)
    assert set(services) <= upstream_closure(dag, "database.repoint_poolers")
    assert "database.repoint_poolers" in upstream_closure(dag, "database.drop_forward_replication")
    assert "database.drop_forward_replication" in upstream_closure(dag, "redis.rollback")
    assert "redis.rollback" in upstream_closure(dag, "kafka.rollback")
    # a dependent rolls back before each of its (deployable) dependencies
    by_name = {name: task_id for task_id, name in services.items()}
    for name in config.deployable:
        for dependency in config.services[name].depends_on:
            if dependency in by_name:
                assert by_name[name] in upstream_closure(dag, by_name[dependency]), (name, dependency)
    # so the frontend tier goes first: nothing in a lower tier precedes a frontend service
    for task_id in services:
        if task_id.startswith("services.frontend."):
            assert not [u for u in upstream_closure(dag, task_id) if u.startswith("services.")]
    assert dag.params["mode"] == "apply"


def test_rollback_dag_file_imports() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "pyairtable_rollback.py"))
    assert bag.import_errors == {}
    assert list(bag.dags) == [ROLLBACK_DAG_ID]


def test_rollback_plan_prints() -> None:
    from pyairtable_migration.plan import format_plan

    text = format_plan(build_rollback_plan(load_config(REAL_CONFIG)))
    assert text.index("traffic.revert_weights") < text.index("services.frontend.web-bff")
    assert text.index("services.core.api-gateway") < text.index("database.repoint_poolers")


@pytest.mark.usefixtures("airflow_db")
def test_rollback_on_a_clean_staging_state_changes_nothing(lab: LabSettings) -> None:  # noqa: F811
    """Nothing migrated yet: every step reads the state, finds nothing to undo, and succeeds."""
    from pyairtable_migration.status import collect

    config = load_config(REAL_CONFIG)
    before = collect(config)
    assert before["database"]["poolers"]["pgbouncer"]["points_at"] == "source", before
    dag = registered(build_rollback_dag(config, dag_id="pyairtable_rollback_lab_test"))
    for attempt in (1, 2):  # twice: still nothing to do
        run = dag.test(run_conf={"mode": "apply"})
        states = task_states(run)
        assert run.state == "success", (attempt, states)
        assert set(states.values()) == {"success"}, states
        assert "redis.rollback" in states and "kafka.rollback" in states
    after = collect(config)

    def pointing(status: dict[str, Any]) -> dict[str, tuple[str, bool]]:
        return {name: (p["points_at"], p["paused"]) for name, p in status["database"]["poolers"].items()}

    assert pointing(after) == pointing(before)
    assert after["dns"] == before["dns"]
    assert after["services"] == before["services"]
    assert before["redis"]["target"]["switched_at"] is None, before
    for side in ("source", "target"):  # offsets move with Redis's own pings; roles and marker may not
        assert {k: v for k, v in after["redis"][side].items() if k != "offset"} == {
            k: v for k, v in before["redis"][side].items() if k != "offset"
        }
