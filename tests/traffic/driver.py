"""Running an operator the way a worker and the triggerer would, without an Airflow database.

execute(); for every deferral, the trigger is rebuilt from its serialized form (as the
triggerer does), run to its first event, and the named method resumed with that event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow.sdk._shared.module_loading import import_string
from airflow.sdk.bases.operator import ExecutorSafeguard
from airflow.sdk.exceptions import TaskDeferred


class FakeTaskInstance:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@dataclass
class FakeDagRun:
    clear_number: int = 0  # how many times the run was cleared (the context's dag_run has it)


def make_context(**params: Any) -> dict[str, Any]:
    defaults = {
        "mode": "apply",
        "require_approvals": True,
        "traffic_steps": [10, 25, 50, 75, 100],
        "bake_seconds": 1,
        "watch_seconds": 1,
    }
    return {
        "params": {**defaults, **params},
        "ti": FakeTaskInstance(),
        "dag_run": FakeDagRun(),
        "run_id": "manual__test",
    }


async def first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError("the trigger ended without an event")


@dataclass
class Outcome:
    """What running an operator produced: its return value, and each deferral on the way."""

    value: Any
    deferrals: list[TaskDeferred]
    events: list[Any]


def run_operator(operator: Any, context: dict[str, Any], events: list[Any] | None = None) -> Outcome:
    """Run to the end; every trigger event is also appended to `events` (kept when it raises)."""
    deferrals: list[TaskDeferred] = []
    events = [] if events is None else events
    method: Callable[..., Any] = operator.execute
    # What the task runner passes, so execute() knows it is not called by user code.
    kwargs: dict[str, Any] = {f"{type(operator).__name__}__sentinel": ExecutorSafeguard.sentinel_value}
    while True:
        try:
            return Outcome(method(context, **kwargs), deferrals, events)
        except TaskDeferred as deferred:
            deferrals.append(deferred)
            classpath, trigger_kwargs = deferred.trigger.serialize()
            json.dumps(trigger_kwargs)  # the trigger's arguments must survive serialization
            trigger = import_string(classpath)(**trigger_kwargs)
            event = asyncio.run(first_event(trigger))
            events.append(event.payload)
            method = getattr(operator, deferred.method_name)
            # Only the event, as dag.test() resumes (the scheduler would add the deferral's kwargs):
            # an operator that needs state on resume carries it through its trigger.
            kwargs = {"event": event.payload}
