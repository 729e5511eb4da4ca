"""Run one operator as Airflow would, in-process: templates rendered, deferrals handed to their
trigger (run to its first event here), then the resume method called with that event; and the
bounded wait the scenarios use for what the load shows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import TaskDeferred

from pyairtable_migration.builder import create_airflow_task, run_params
from pyairtable_migration.config import MigrationConfig
from pyairtable_migration.plan import Step, build_plan
from pyairtable_migration.rollback import build_rollback_plan

# The database phase's PostgreSQL steps, in the order the DAG runs them.
POSTGRES_STEPS = [
    "database.copy_schema",
    "database.create_publication",
    "database.create_subscription",
    "database.wait_initial_sync",
    "database.build_deferred_indexes",
    "database.lag_gate",
    "database.validate_data",
]
# A quicker gate than production's 5 samples 2 s apart; the rule is the same.
FAST_GATE = {"lag_sample_seconds": 0.5, "lag_consecutive_samples": 3}


def params(config: MigrationConfig, **overrides: Any) -> dict[str, Any]:
    values = {name: param.value for name, param in run_params(config).items()}
    values.update(mode="apply", require_approvals=False)
    values.update(overrides)
    return values


def operator_for(config: MigrationConfig, task_id: str, **arguments: Any) -> BaseOperator:
    """The operator the DAG builds for `task_id`, from the real plan (arguments override)."""
    step = build_plan(config).steps[task_id]
    if arguments:
        step = type(step)(
            step.task_id, step.action, step.touches, step.operator, {**step.arguments, **arguments}
        )
    return task_of(step)


def task_of(step: Step) -> BaseOperator:
    from airflow.sdk import DAG

    return create_airflow_task(step, DAG(f"test_{step.task_id.replace('.', '_')}", schedule=None), None)


async def _first_event(trigger: Any) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


def run(operator: BaseOperator, config: MigrationConfig, run_id: str = "test-run", **overrides: Any) -> Any:
    context: dict[str, Any] = {"params": params(config, **overrides), "run_id": run_id}
    operator.render_template_fields(context)  # type: ignore[arg-type]
    try:
        return operator.execute(context)  # type: ignore[arg-type]
    except TaskDeferred as deferred:
        event = asyncio.run(_first_event(deferred.trigger))
        method = getattr(operator, deferred.method_name)
        return method(context, event=event, **(deferred.kwargs or {}))


def run_task(config: MigrationConfig, task_id: str, run_id: str = "test-run", **overrides: Any) -> Any:
    return run(operator_for(config, task_id), config, run_id=run_id, **overrides)


def run_fast(config: MigrationConfig, task_id: str, **arguments: Any) -> Any:
    """`task_id` run as the DAG builds it but for a quicker lag gate (FAST_GATE); arguments override."""
    if task_id == "database.lag_gate":
        arguments = {**FAST_GATE, **arguments}
    return run(operator_for(config, task_id, **arguments), config)


def rollback_operator(config: MigrationConfig) -> BaseOperator:
    """The database rollback, configured as the rollback DAG configures it."""
    return task_of(build_rollback_plan(config).steps["database.repoint_poolers"])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Until `check()` holds; an AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.1)
