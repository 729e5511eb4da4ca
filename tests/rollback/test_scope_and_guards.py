"""Scoped rollback and the guards between the two DAGs and before users move.

The scope: every rollback step names the migration phase it undoes and skips itself outside the
run's scope. The guards: each DAG's first task refuses (apply mode) while the other DAG has a run
queued or running, naming it, read through the Task SDK under dag.test(); a traffic step refuses
to send users to production while the writers' topology says the writers are on the source.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
from airflow.sdk.exceptions import AirflowFailException

from lab.settings import LabSettings
from lab.synthetic_graph import REAL_CONFIG
from pyairtable_migration.builder import build_migration_dag
from pyairtable_migration.config import load_config
from pyairtable_migration.operators.base import outside_rollback_scope
from pyairtable_migration.rollback import build_rollback_dag
from tests.dagrun import registered, task_states
from tests.lab.conftest import lab  # noqa: F401
from tests.traffic.driver import make_context, run_operator

CONFIG = load_config(REAL_CONFIG)
MIGRATION, ROLLBACK = "guard_test_migration", "guard_test_rollback"


EVERY_STEP = {"traffic", "services:a", "services:b", "switchover", "database"}


@pytest.mark.parametrize(
    ("params", "in_scope"),
    [
        ({}, EVERY_STEP),
        ({"scope": "all"}, EVERY_STEP),
        ({"scope": "traffic"}, {"traffic"}),
        ({"scope": "services", "services": ["a"]}, {"services:a"}),
        ({"scope": "from_phase", "from_phase": "services"}, EVERY_STEP - {"database"}),
        ({"scope": "from_phase", "from_phase": "traffic"}, {"traffic"}),
    ],
)
def test_scope_decides_each_step(params: dict[str, Any], in_scope: set[str]) -> None:
    def runs(step: str) -> bool:
        phase, _, service = step.partition(":")
        return outside_rollback_scope(params, phase, service or None) is None

    assert {step for step in EVERY_STEP if runs(step)} == in_scope


def test_rollback_form_offers_the_scopes() -> None:
    dag = build_rollback_dag(CONFIG)
    assert dag.params.get_param("scope").schema["enum"] == ["all", "traffic", "services", "from_phase"]
    assert set(dag.params.get_param("services").schema["items"]["enum"]) == set(CONFIG.deployable)
    assert dag.params["scope"] == "all" and dag.params["services"] == []
    check = dag.get_task("check_run")
    assert {t.task_id for t in dag.tasks if not t.upstream_task_ids} == {"check_run"}
    for task in dag.tasks:
        if task is not check:
            assert getattr(task, "undoes", None) in {"traffic", "services", "switchover", "database"}, (
                task.task_id
            )
            assert task.trigger_rule == "none_failed", task.task_id


def start_blocking_run(dag: Any, run_id: str) -> None:
    """A run of `dag` in state running, with its task instances, as the scheduler creates one."""
    from airflow.sdk import timezone
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    now = timezone.utcnow()
    with create_session() as session:
        scheduler_dag.create_dagrun(
            run_id=run_id,
            logical_date=None,
            data_interval=None,
            run_after=now,
            conf={},
            run_type=DagRunType.MANUAL,
            state=DagRunState.RUNNING,
            triggered_by=DagRunTriggeredByType.TEST,
            triggering_user_name="test",
            start_date=now,
            session=session,
        )


def end_run(dag_id: str, run_id: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(
            update(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id).values(state="failed")
        )


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.timeout(300)
def test_each_dag_refuses_while_the_other_runs(capfd: pytest.CaptureFixture[str]) -> None:
    migration = registered(build_migration_dag(CONFIG, dag_id=MIGRATION, rollback_dag_id=ROLLBACK))
    rollback = registered(build_rollback_dag(CONFIG, dag_id=ROLLBACK, migration_dag_id=MIGRATION))

    blocking = f"migration_in_flight_{uuid.uuid4().hex[:8]}"
    start_blocking_run(migration, blocking)
    try:
        run = rollback.test(run_conf={"mode": "apply", "scope": "traffic"})
    finally:
        end_run(MIGRATION, blocking)
    states = task_states(run)
    assert run.state == "failed" and states["check_run"] == "failed", states
    assert states["traffic.revert_weights"] == "upstream_failed", states
    output = capfd.readouterr()
    said = output.out + output.err
    assert f"migration {MIGRATION} is running: {blocking} (running)" in said, said[-3000:]

    blocking = f"rollback_in_flight_{uuid.uuid4().hex[:8]}"
    start_blocking_run(rollback, blocking)
    try:
        run = migration.test(run_conf={"mode": "apply", "require_approvals": False})
    finally:
        end_run(ROLLBACK, blocking)
    states = task_states(run)
    assert states["preflight.check_params"] == "failed", states
    assert {states[t] for t in states if t.startswith("database.")} == {"upstream_failed"}, states
    output = capfd.readouterr()
    said = output.out + output.err
    assert f"rollback {ROLLBACK} is running: {blocking} (running)" in said, said[-3000:]


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.timeout(300)
def test_scoped_rollbacks_skip_what_is_outside() -> None:
    """Plan mode (nothing touched): each scope runs its own steps and skips every other one."""
    rollback = registered(build_rollback_dag(CONFIG, dag_id=ROLLBACK, migration_dag_id=MIGRATION))
    services = {
        t.task_id: t.task_id.rsplit(".", 1)[1] for t in rollback.tasks if t.task_id.startswith("services.")
    }
    chosen = "api-gateway"
    run = rollback.test(run_conf={"mode": "plan", "scope": "services", "services": [chosen]})
    states = task_states(run)
    assert run.state == "success", states
    expected = {task_id: "success" if name == chosen else "skipped" for task_id, name in services.items()}
    assert {t: states[t] for t in services} == expected
    assert {states[t] for t in ("traffic.revert_weights", "database.repoint_poolers", "redis.rollback")} == {
        "skipped"
    }

    run = rollback.test(run_conf={"mode": "plan", "scope": "from_phase", "from_phase": "switchover"})
    states = task_states(run)
    assert run.state == "success", states
    assert (
        states["traffic.revert_weights"]
        == states["database.repoint_poolers"]
        == states["redis.rollback"]
        == "success"
    )
    assert states["database.drop_forward_replication"] == "skipped"
    assert {states[t] for t in services} == {"skipped"}


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.timeout(300)
def test_a_traffic_step_after_a_rollback_refuses(lab: LabSettings) -> None:  # noqa: F811
    """A rollback leaves the writers on the source; a weight step run then (a clear, a second run)
    refuses before it changes a record, naming what the topology saw."""
    from pyairtable_migration.status import collect

    rollback = registered(build_rollback_dag(CONFIG, dag_id=ROLLBACK, migration_dag_id=MIGRATION))
    assert rollback.test(run_conf={"mode": "apply"}).state == "success"
    before = collect(CONFIG)
    assert before["database"]["poolers"]["pgbouncer"]["points_at"] == "source", before
    step = build_migration_dag(CONFIG).get_task("traffic.shift_to_10")
    context = make_context()
    step.render_template_fields(cast(Any, context))
    with pytest.raises(AirflowFailException) as refused:
        run_operator(step, context)
    message = str(refused.value)
    assert "not moving users to production" in message, message
    assert "writers on source: pgbouncer -> source" in message, message
    assert collect(CONFIG)["dns"] == before["dns"]
