"""Turn the migration plan into one Airflow DAG: TaskGroups per phase, tier and service.

Shaped like astronomer-cosmos's graph builder: the plan is the graph, each step becomes a task
through one factory, each plan edge becomes a task dependency. Nothing here does I/O, so parsing
stays fast as the service graph grows.
"""

from __future__ import annotations

import functools
import importlib
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG, BaseOperator, Param, TaskGroup

from pyairtable_migration.config import MigrationConfig, NotificationsConfig
from pyairtable_migration.notifications import run_callbacks
from pyairtable_migration.plan import MIGRATION_DAG_ID, ROLLBACK_DAG_ID, MigrationPlan, Step, build_plan

DAG_ID = MIGRATION_DAG_ID

DOC_MD = """
### PyAirtable: staging → production, zero downtime, zero data loss

Trigger with **mode = plan** first: every task logs what it would change and changes nothing.
Trigger with **mode = apply** to migrate. **preflight_only** (what `cli validate` sets) runs the
preflight alone against the live systems and skips every later task. Phases, in order:

1. **preflight** — everything checked, nothing changed; one message lists every problem.
2. **database** — logical replication to the target, lag gate, independent data validation, Redis.
3. **services** — blue-green deploy into production in dependency order (one group per tier).
4. **switchover** — after approval, writes move to the target through the pooler(s);
   reverse replication keeps the source current for rollback.
5. **traffic** — weighted DNS, step by step, each step gated on production's error ratio and p99;
   a breach sends traffic back to staging and fails the step.
6. **validation** — latency SLOs, data parity, security, backup restore, monitoring; the report.

Every task is safe to clear and run again: it reads the state and changes only what differs.

**Clear to undo**, beside three phases (skipped on a healthy run): clear **traffic.undo** alone to
put every user back on staging (it also acts by itself when a traffic step failed); then
**services.undo** alone to send every service back to its previous color, dependents first, or
**switchover.undo** alone to move every writer (PostgreSQL through the pooler(s), Redis through
its endpoint) back to the source. Those two never act by themselves, refuse while any record sends
users to production, and stay skipped when their phase is re-run (a step cleared with downstream).
Configuration: `{config_path}`.
"""


def run_params(config: MigrationConfig) -> dict[str, Param]:
    """The trigger form: defaults from the config, each field titled and explained."""
    return {
        "mode": mode_param(
            "plan",
            "plan: every task logs what it would change and changes nothing. apply: perform the migration.",
        ),
        "preflight_only": Param(
            False,
            type="boolean",
            title="Preflight only (validate)",
            description="Run the preflight checks and stop: every later task is skipped. With mode "
            "apply the checks read the live systems; nothing is changed either way.",
        ),
        "require_approvals": Param(
            config.approvals.required,
            type="boolean",
            title="Require approvals",
            description="Wait for a person before the database switchover and before the "
            "approval steps of the traffic cutover. Off only for drills and demos.",
        ),
        "traffic_steps": Param(
            list(config.traffic.steps),
            type="array",
            items={"type": "integer", "minimum": 1, "maximum": 100},
            minItems=1,
            title="Traffic steps (% to production)",
            description=f"A subset of the configured steps {list(config.traffic.steps)}, strictly "
            "increasing and ending at 100; steps left out are skipped.",
        ),
        "bake_seconds": Param(
            config.traffic.bake_seconds,
            type="number",
            exclusiveMinimum=0,
            title="Bake time per step (seconds)",
            description="How long production is watched at each weight before the next step.",
        ),
        "watch_seconds": Param(
            config.traffic.watch_seconds,
            type="number",
            minimum=0,
            title="Watch after the cutover (seconds)",
            description="How long the gate keeps watching production at 100 % before the TTL goes "
            "back up; a breach puts every user back on staging. 0: no watch.",
        ),
        "lag_threshold_bytes": Param(
            config.database.lag_threshold_bytes,
            type="integer",
            minimum=1,
            title="Replication lag threshold (bytes)",
            description="The lag gate passes once the slot lag stays below this for "
            f"{config.database.lag_consecutive_samples} consecutive samples.",
        ),
    }


def mode_param(default: str, description: str) -> Param:
    """The plan/apply switch of both trigger forms; the migration defaults to plan, the rollback
    (the emergency path) to apply."""
    return Param(default, type="string", enum=["plan", "apply"], title="Mode", description=description)


# Every task reads the state and changes only what differs, so one automatic retry is always safe.
# It absorbs the transient (a worker lost, an API blip) and Airflow's own race that fails a
# deferred task whose trigger fires before the scheduler has seen it defer (apache/airflow#66374,
# #72716). Deliberate refusals raise AirflowFailException and are never retried.
DEFAULT_ARGS = {"retries": 1, "retry_delay": timedelta(seconds=5)}


@functools.cache
def operator_class(path: str) -> type[BaseOperator]:
    module_name, _, class_name = path.rpartition(".")
    operator: type[BaseOperator] = getattr(importlib.import_module(module_name), class_name)
    return operator


def create_airflow_task(step: Step, dag: DAG, task_group: TaskGroup | None) -> BaseOperator:
    return operator_class(step.operator)(
        task_id=step.task_id.rpartition(".")[2],
        dag=dag,
        task_group=task_group,
        doc_md="\n".join([step.action, "", *(f"- touches {t}" for t in step.touches)]),
        **step.arguments,
    )


def build_airflow_graph(plan: MigrationPlan, dag: DAG) -> dict[str, BaseOperator]:
    """Create the TaskGroups and tasks of every step, then one dependency per plan edge."""
    groups: dict[str, TaskGroup] = {}

    def group_for(group_id: str) -> TaskGroup | None:
        if not group_id:
            return None
        if group_id not in groups:
            parent_id, _, local_id = group_id.rpartition(".")
            groups[group_id] = TaskGroup(
                local_id,
                parent_group=group_for(parent_id),
                dag=dag,
                tooltip=plan.group_tooltips.get(group_id, ""),
            )
        return groups[group_id]

    tasks = {
        task_id: create_airflow_task(step, dag, group_for(step.group_id))
        for task_id, step in plan.steps.items()
    }
    for upstream, downstream in plan.edges:
        tasks[upstream] >> tasks[downstream]
    return tasks


def build_plan_dag(
    dag_id: str,
    plan: MigrationPlan,
    *,
    params: dict[str, Param],
    doc_md: str,
    description: str,
    tags: list[str],
    notifications: NotificationsConfig | None = None,
    on_success: str | None = None,
    on_failure: str | None = None,
) -> DAG:
    """A DAG of the plan's steps, triggered by hand and one run at a time: the migration and the
    rollback are built alike, so neither drifts in scheduling, retries or who is told: every task's
    last failure, and the run's `on_success`/`on_failure` notices (notifications.EVENTS)."""
    notifications = notifications or NotificationsConfig()
    dag = DAG(
        dag_id,
        schedule=None,
        max_active_runs=1,
        catchup=False,
        params=params,
        doc_md=doc_md,
        description=description,
        tags=tags,
        default_args={
            **DEFAULT_ARGS,
            **run_callbacks(notifications, on_success=None, on_failure="task_failed"),
        },
        **run_callbacks(notifications, on_success=on_success, on_failure=on_failure),
    )
    build_airflow_graph(plan, dag)
    return dag


def build_migration_dag(
    config: MigrationConfig,
    config_path: str | Path = "",
    dag_id: str = DAG_ID,
    rollback_dag_id: str = ROLLBACK_DAG_ID,
) -> DAG:
    return build_plan_dag(
        dag_id,
        build_plan(config, rollback_dag_id),
        params=run_params(config),
        doc_md=DOC_MD.format(config_path=config_path),
        description="Move PyAirtable from staging to production with zero downtime and zero data loss",
        tags=["pyairtable", "migration"],
        notifications=config.notifications,
        on_success="migration_done",
    )
