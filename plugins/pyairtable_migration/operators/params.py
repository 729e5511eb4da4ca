"""The first task of every run: refuse parameters the configuration cannot honour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from pyairtable_migration.config import traffic_step_problems
from pyairtable_migration.operators.base import MigrationOperator, bulleted, fail


class CheckRunParamsOperator(MigrationOperator):
    """Checks what the trigger form's JSON schema cannot: cross-field rules against the config.

    The chosen traffic steps must be configured steps (each has its own task) ending at 100.
    """

    ui_color = "#dbe9f6"

    def __init__(self, *, configured_steps: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.configured_steps = list(configured_steps)

    def execute(self, context: Context) -> dict[str, Any]:
        params = context["params"]
        steps = list(params["traffic_steps"])
        problems = [f"traffic_steps: {p}" for p in traffic_step_problems(steps)]
        unknown = [s for s in steps if s not in self.configured_steps]
        if unknown:
            problems.append(
                f"traffic_steps: {unknown} not among the configured steps {self.configured_steps}"
            )
        for name in ("bake_seconds", "lag_threshold_bytes"):
            if not params[name] > 0:
                problems.append(f"{name}: must be greater than 0, got {params[name]!r}")
        if params["mode"] not in ("plan", "apply"):
            problems.append(f"mode: must be 'plan' or 'apply', got {params['mode']!r}")
        if problems:
            raise fail(bulleted("run parameters refused", problems))
        summary = {name: params[name] for name in RUN_PARAM_NAMES}
        self.log.info("Run parameters accepted: %s", summary)
        return summary


RUN_PARAM_NAMES = ("mode", "require_approvals", "traffic_steps", "bake_seconds", "lag_threshold_bytes")
