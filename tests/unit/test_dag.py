"""The DAG built from the configuration: it imports, its structure mirrors the service graph,
and a plan-mode run goes through end to end."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.synthetic_graph import REAL_CONFIG, real_document, service, with_services
from pyairtable_migration.builder import DAG_ID, build_migration_dag
from pyairtable_migration.config import load_config, parse_config
from pyairtable_migration.operators.base import undo_reason
from pyairtable_migration.operators.params import RUN_PARAM_NAMES
from pyairtable_migration.plan import PHASES, build_plan, format_plan
from pyairtable_migration.recovery import RECOVERY_DAG_ID
from pyairtable_migration.rollback import ROLLBACK_DAG_ID
from tests.dagrun import clear_alone_and_run, task_states, xcom

REPO_ROOT = Path(__file__).resolve().parents[2]


def service_of(task_id: str) -> str | None:
    """`services.<tier>.<service>.<step>` -> `<service>`."""
    parts = task_id.split(".")
    return parts[2] if parts[0] == "services" and len(parts) == 4 else None


def service_edges(dag: Any) -> set[tuple[str, str]]:
    """(dependency, dependent) for every task edge that crosses between two service groups."""
    edges = set()
    for task in dag.tasks:
        for downstream_id in task.downstream_task_ids:
            upstream_service, downstream_service = service_of(task.task_id), service_of(downstream_id)
            if upstream_service and downstream_service and upstream_service != downstream_service:
                edges.add((upstream_service, downstream_service))
    return edges


def config_edges(services: dict[str, Any]) -> set[tuple[str, str]]:
    return {(dep, name) for name, node in services.items() for dep in node.get("depends_on", [])}


def test_dag_file_imports_without_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    assert sorted(bag.dags) == sorted([DAG_ID, ROLLBACK_DAG_ID, RECOVERY_DAG_ID])
    dag = bag.dags[DAG_ID]
    assert dag.schedule is None if hasattr(dag, "schedule") else True
    assert dag.max_active_runs == 1
    assert dag.doc_md and "mode = plan" in dag.doc_md


# Each phase that changes production has one undo task beside it, after the phase's last task.
UNDO_AFTER = {
    "services.undo": "services.verify",
    "switchover.undo": "switchover.full_backup",
    "traffic.undo": "traffic.finalize",
}


def test_phases_are_task_groups_in_order() -> None:
    """Every task of a phase waits for every task of the phases before it, except the undo tasks,
    each hanging beside its phase: after the phase's last task (all_done), upstream of nothing."""
    config = load_config(REAL_CONFIG)
    dag = build_migration_dag(config)
    aside = {step.task_id for step in build_plan(config).steps.values() if step.aside}
    assert aside == set(UNDO_AFTER)
    assert set(dag.task_group.children) == set(PHASES)
    for earlier, later in itertools.pairwise(PHASES):
        later_tasks = [t for t in dag.tasks if t.task_id.startswith(later + ".")]
        earlier_ids = {t.task_id for t in dag.tasks if t.task_id.startswith(earlier + ".")} - aside
        for task in later_tasks:
            assert task.get_flat_relative_ids(upstream=True) >= earlier_ids, (earlier, task.task_id)
    for undo_id, last in UNDO_AFTER.items():
        undo: Any = dag.get_task(undo_id)
        assert undo.upstream_task_ids == {last} and not undo.downstream_task_ids, undo_id
        assert undo.trigger_rule == "all_done" and undo.finalized_by == last, undo_id


def test_the_undos_reuse_the_rollback_dags_steps() -> None:
    """services.undo holds every deployable service's rollback step, dependents first, with the
    rollback DAG's arguments; switchover.undo moves the switch's poolers, on the switch's worker
    queue, and Redis with the rollback's own arguments."""
    from pyairtable_migration.rollback import build_rollback_plan

    config = load_config(REAL_CONFIG)
    steps, rollback = build_plan(config).steps, build_rollback_plan(config).steps
    services = steps["services.undo"].arguments["services"]
    order = [service["service_name"] for service in services]
    assert sorted(order) == sorted(config.deployable)
    for position, (name, arguments) in enumerate(zip(order, services, strict=True)):
        assert not set(config.services[name].depends_on) & set(order[:position]), (name, order)
        step = rollback[f"services.{config.services[name].tier}.{name}"].arguments
        assert {key: step[key] for key in arguments} == arguments, name
    assert config.services[order[0]].tier == "frontend"
    switch, undo = steps["switchover.switch_database"].arguments, steps["switchover.undo"].arguments
    assert {key: switch[key] for key in undo["database"]} == undo["database"]
    assert undo.get("queue") == switch.get("queue")
    redis = rollback["redis.rollback"].arguments
    assert {key: redis[key] for key in ("source_conn_id", "target_conn_id", "mode", "endpoint_conn_id")} == {
        key: undo[key] for key in ("source_conn_id", "target_conn_id", "mode", "endpoint_conn_id")
    }


@pytest.mark.parametrize(
    ("failed", "finalized_at_clear", "clear_number", "try_number", "acts"),
    [
        ([], 0, 0, 1, None),  # a healthy run: the way back is there, not taken
        ([], 0, 0, 2, None),  # its own automatic retry on a healthy run changes nothing
        (["traffic.shift_to_25"], None, 0, 1, "a step of the phase failed"),
        ([], 0, 1, 2, "cleared by hand"),  # cleared alone after the cutover
        ([], 2, 2, 3, None),  # a step cleared with downstream: the phase ran again, the undo skips
        ([], 1, 3, 4, "cleared by hand"),  # cleared alone again after an earlier clear
        ([], None, 1, 2, "cleared by hand"),  # the phase never got to its end, the undo cleared
    ],
)
def test_the_traffic_undo_acts_on_a_failed_phase_or_its_own_clear_only(
    failed: list[str], finalized_at_clear: int | None, clear_number: int, try_number: int, acts: str | None
) -> None:
    why = undo_reason(failed, finalized_at_clear, clear_number, try_number)
    assert (why is None) == (acts is None), why
    assert acts is None or acts in str(why)


@pytest.mark.parametrize(
    ("failed", "finalized_at_clear", "clear_number", "try_number", "acts"),
    [
        ([], 0, 0, 1, None),  # a healthy run: the way back is there, not taken
        (["services.core.api-gateway.smoke_test"], None, 0, 1, None),  # a failure is not reason enough
        # The failed deploy fixed and cleared with downstream, failing again: the undo re-ran with it.
        (["services.core.api-gateway.deploy"], None, 1, 2, None),
        ([], None, 1, 2, None),  # the phase never ended: no clear of the undo can be told from a re-run
        ([], 0, 1, 2, "cleared by hand"),  # cleared alone after the phase ended
        ([], 2, 2, 3, None),  # a step cleared with downstream: the phase ended again, the undo skips
        ([], 1, 3, 4, "cleared by hand"),  # cleared alone again after an earlier clear
    ],
)
def test_the_services_and_switchover_undos_act_on_their_own_clear_only(
    failed: list[str], finalized_at_clear: int | None, clear_number: int, try_number: int, acts: str | None
) -> None:
    why = undo_reason(failed, finalized_at_clear, clear_number, try_number, acts_on_failure=False)
    assert (why is None) == (acts is None), why
    assert acts is None or acts in str(why)


class UndoTaskInstance:
    """What an undo reads of its run through the Task SDK: its phase's states, the last task's result."""

    def __init__(self, states: dict[str, str], recorded: dict[str, Any], try_number: int) -> None:
        self.dag_id, self.run_id, self.try_number = "migration", "run", try_number
        self.states, self.recorded = states, recorded

    def get_task_states(self, dag_id: str, task_group_id: str, run_ids: list[str]) -> dict[str, Any]:
        assert (dag_id, run_ids) == (self.dag_id, [self.run_id])
        return {self.run_id: {t: s for t, s in self.states.items() if t.startswith(f"{task_group_id}.")}}

    def xcom_pull(self, task_ids: str) -> Any:
        return self.recorded.get(task_ids)


@pytest.mark.parametrize(
    ("undo_id", "verify_state", "clear_number", "acts"),
    [
        ("services.undo", "success", 1, True),  # cleared alone after the phase ended
        ("services.undo", "success", 0, False),  # its first run, in a healthy run
        # A clear from the database phase with downstream, failing there: verify never ran again and
        # keeps its old result, which must not read as "the phase ended before this clear".
        ("services.undo", "upstream_failed", 1, False),
        ("switchover.undo", "success", 1, True),
        ("switchover.undo", "upstream_failed", 1, False),
        ("traffic.undo", "upstream_failed", 0, False),
    ],
)
def test_an_undo_counts_the_last_tasks_record_only_when_it_ended(
    undo_id: str, verify_state: str, clear_number: int, acts: bool
) -> None:
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowSkipException

    dag = build_migration_dag(load_config(REAL_CONFIG))
    undo: Any = dag.get_task(undo_id)
    last = UNDO_AFTER[undo_id]
    ti = UndoTaskInstance({last: verify_state}, {last: {"clear_number": 0}}, try_number=clear_number + 1)
    context: Any = {"ti": ti, "dag_run": SimpleNamespace(clear_number=clear_number)}
    if acts:
        assert "cleared by hand" in undo.undo_or_skip(context)
    else:
        with pytest.raises(AirflowSkipException, match=r"nothing to undo: .*clear this task alone"):
            undo.undo_or_skip(context)


def test_service_groups_mirror_depends_on_in_the_real_config() -> None:
    dag = build_migration_dag(load_config(REAL_CONFIG))
    assert service_edges(dag) == config_edges(real_document()["services"])
    tier_groups = {
        task.task_group.parent_group.group_id  # type: ignore[union-attr]
        for task in dag.tasks
        if service_of(task.task_id)
    }
    assert tier_groups == {f"services.{tier}" for tier in real_document()["tiers"]}
    gateway = dag.get_task("services.core.api-gateway.deploy")
    assert gateway.upstream_task_ids == {
        "services.infrastructure.postgres.check_ready",
        "services.infrastructure.redis.check_ready",
    }
    assert (
        "services.core.api-gateway.promote"
        in dag.get_task("services.frontend.web-bff.deploy").upstream_task_ids
    )


@st.composite
def acyclic_service_graphs(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    """Services that depend only on earlier ones; tiers never decrease along an edge."""
    tiers = real_document()["tiers"]
    count = draw(st.integers(min_value=1, max_value=300))
    services: dict[str, dict[str, Any]] = {}
    tier_of: dict[str, int] = {}
    for index in range(count):
        name = f"s{index}"
        earlier = list(services)
        dependencies = draw(st.lists(st.sampled_from(earlier), max_size=4, unique=True)) if earlier else []
        tier = min(max((tier_of[d] for d in dependencies), default=0) + draw(st.integers(0, 1)), 4)
        tier_of[name] = tier
        services[name] = service(tiers[tier], dependencies)
    return services


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(acyclic_service_graphs())
def test_service_groups_mirror_depends_on_for_generated_graphs(services: dict[str, dict[str, Any]]) -> None:
    config = parse_config(yaml.safe_dump(with_services(services)))
    dag = build_migration_dag(config)
    assert service_edges(dag) == config_edges(services)
    # Every dependency's promote precedes every dependent's deploy, not just some task of it.
    for name, node in services.items():
        deploy = dag.get_task(f"services.{node['tier']}.{name}.deploy")
        for dependency in node["depends_on"]:
            tier = services[dependency]["tier"]
            assert f"services.{tier}.{dependency}.promote" in deploy.upstream_task_ids


def test_plan_lists_every_step_with_what_it_touches() -> None:
    config = load_config(REAL_CONFIG)
    plan = build_plan(config)
    text = format_plan(plan)
    assert len(plan.ordered()) == len(plan.steps) == len(build_migration_dag(config).tasks)
    assert "services.frontend.web-bff.promote: point service web-bff at the new color" in text
    assert "touches namespace pyairtable-production: service web-bff selector" in text
    assert "touches records api.pyairtable.example.com., app.pyairtable.example.com." in text
    assert "touches source pyairtable_source_db: publication pyairtable_migration" in text
    order = [step.task_id for step in plan.ordered()]
    assert order.index("services.core.api-gateway.promote") < order.index("services.frontend.web-bff.deploy")
    assert order.index("traffic.approve_100") == order.index("traffic.shift_to_100") - 1


def test_trigger_form_params_are_titled_and_described() -> None:
    dag = build_migration_dag(load_config(REAL_CONFIG))
    params = dag.params
    # The form holds exactly the params preflight.check_params checks and records.
    assert set(params) == set(RUN_PARAM_NAMES)
    for name in params:
        param = params.get_param(name)
        assert param.schema.get("title") and param.description, name
    assert params["mode"] == "plan"
    assert params["traffic_steps"] == [10, 25, 50, 75, 100]


def _task_states(run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.mark.usefixtures("airflow_db")
def test_plan_mode_run_succeeds_end_to_end() -> None:
    dag = build_migration_dag(load_config(REAL_CONFIG))
    run = dag.test(run_conf={"mode": "plan"})
    states = _task_states(run)
    assert run.state == "success"
    assert len(states) == len(dag.tasks)
    # Every task ran, but the undos: nothing was cleared, so they skip (clear one alone to undo).
    assert {undo: states.pop(undo) for undo in UNDO_AFTER} == dict.fromkeys(UNDO_AFTER, "skipped")
    assert set(states.values()) == {"success"}
    # Cleared alone afterwards (Airflow's own clear), each undo acts: here, in plan mode, it says what
    # it would do. Every other task keeps its state.
    for undo in UNDO_AFTER:
        cleared = clear_alone_and_run(dag, run, undo)
        after = task_states(cleared)
        assert after.pop(undo) == "success" and cleared.state == "success", undo
        assert after == {t: s for t, s in _task_states(run).items() if t != undo}, undo
        if undo != "traffic.undo":
            assert "cleared by hand" in xcom(cleared, undo)["why"], undo


@pytest.mark.usefixtures("airflow_db")
def test_bad_run_params_are_refused_before_anything_else() -> None:
    dag = build_migration_dag(load_config(REAL_CONFIG))
    run = dag.test(run_conf={"mode": "plan", "traffic_steps": [10, 30, 100]})
    states = _task_states(run)
    assert run.state == "failed"
    assert states["preflight.check_params"] == "failed"
    assert states["preflight.check_database"] == "upstream_failed"
    # The undos run whatever happened before them (all_done) and found nothing to undo.
    assert {undo: states.pop(undo) for undo in UNDO_AFTER} == dict.fromkeys(UNDO_AFTER, "skipped")
    assert all(state in ("upstream_failed", "failed") for state in states.values())


@pytest.mark.usefixtures("airflow_db")
def test_apply_mode_preflight_refuses_before_anything_is_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no connection reachable, apply stops in preflight: no later phase starts."""
    for name in list(os.environ):
        if name.startswith("AIRFLOW_CONN_"):
            monkeypatch.delenv(name)
    dag = build_migration_dag(load_config(REAL_CONFIG))
    run = dag.test(run_conf={"mode": "apply"})
    states = _task_states(run)
    assert run.state == "failed"
    assert states["preflight.check_params"] == "success"
    assert states["preflight.check_database"] == "failed"
    started_later = {
        task_id: state
        for task_id, state in states.items()
        if not task_id.startswith("preflight.") and state not in (None, "upstream_failed")
    }
    # The report always runs (it records failed runs too) and fails with them; the undos run too
    # (all_done) and find nothing to undo.
    assert started_later == {"validation.report": "failed", **dict.fromkeys(UNDO_AFTER, "skipped")}


def test_every_step_has_a_real_operator() -> None:
    plan = build_plan(load_config(REAL_CONFIG))
    dag = build_migration_dag(load_config(REAL_CONFIG))
    for step in plan.steps.values():
        assert type(dag.get_task(step.task_id)).__name__ == step.operator.rpartition(".")[2]


def test_an_operator_takes_its_declared_arguments_and_names_a_missing_or_unknown_one() -> None:
    from pyairtable_migration.operators.database import ValidateDataOperator

    poolers = ({"name": "main", "admin_conn_id": "pgbouncer_admin", "database": "pyairtable"},)
    arguments: dict[str, Any] = {
        "source_conn_id": "staging",
        "target_conn_id": "production",
        "subscription": "sub",
        "chunk_rows": 1000,
        "tables": ("public.users",),
    }
    first = ValidateDataOperator(task_id="first", **arguments)
    assert (first.source_conn_id, first.subscription, first.chunk_rows) == ("staging", "sub", 1000)
    assert (first.parallelism, first.recheck_rounds) == (2, 3)  # the declared defaults
    assert first.tables == ["public.users"] and first.tables is not arguments["tables"]

    # Each task keeps its own copy: rendering or changing one task's value leaves the caller's alone.
    from pyairtable_migration.operators.base import WritersReader

    reader = WritersReader(task_id="reader", source_conn_id="a", target_conn_id="b", poolers=poolers)
    kept = reader.poolers[0]
    assert isinstance(kept, dict)
    kept["database"] = "changed"
    assert poolers[0]["database"] == "pyairtable"

    with pytest.raises(TypeError, match=r"ValidateDataOperator \(task 'x'\) needs argument\(s\) chunk_rows"):
        ValidateDataOperator(task_id="x", **{k: v for k, v in arguments.items() if k != "chunk_rows"})
    with pytest.raises(TypeError, match="chunk_size"):
        ValidateDataOperator(task_id="y", chunk_size=5, **arguments)
