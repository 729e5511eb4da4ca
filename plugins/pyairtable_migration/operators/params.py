"""The first task of every run: refuse parameters the configuration cannot honour, and refuse to
act while the other DAG (the migration for the rollback, the rollback for the migration) is running:
the two would move the same writers, services and records in opposite directions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.standard.utils.skipmixin import SkipMixin
from airflow.sdk import Context

from pyairtable_migration.config import traffic_step_problems
from pyairtable_migration.notifications import notifiers
from pyairtable_migration.operators.base import (
    ROLLBACK_SCOPES,
    UNDOABLE_PHASES,
    MigrationOperator,
    active_runs,
    bulleted,
    fail,
    run_mode,
)


def guard_problems(context: Context, other_dag_id: str, what: str) -> list[str]:
    """In apply mode, one problem naming every run of `other_dag_id` queued or running (plan runs
    change nothing, so they are never refused)."""
    if run_mode(context) != "apply":
        return []
    blocking = active_runs(context, other_dag_id)
    if not blocking:
        return []
    return [f"{what} {other_dag_id} is running: {', '.join(blocking)}; wait for it to end (or stop it) first"]


class CheckRunParamsOperator(MigrationOperator):
    """Checks what the trigger form's JSON schema cannot: cross-field rules against the config.

    The chosen traffic steps must be configured steps (each has its own task) ending at 100. In
    apply mode, no run of the rollback DAG (`rollback_dag_id`) may be queued or running.
    """

    ui_color = "#dbe9f6"

    configured_steps: Sequence[int]
    rollback_dag_id: str

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
        if not params["watch_seconds"] >= 0:
            problems.append(f"watch_seconds: must be 0 or more, got {params['watch_seconds']!r}")
        if params["mode"] not in ("plan", "apply"):
            problems.append(f"mode: must be 'plan' or 'apply', got {params['mode']!r}")
        problems += guard_problems(context, self.rollback_dag_id, "rollback")
        if problems:
            raise fail(bulleted("run parameters refused", problems))
        summary = {name: params[name] for name in RUN_PARAM_NAMES}
        self.log.info("Run parameters accepted: %s", summary)
        return summary


RUN_PARAM_NAMES = (
    "mode",
    "preflight_only",
    "require_approvals",
    "traffic_steps",
    "bake_seconds",
    "watch_seconds",
    "lag_threshold_bytes",
)


class PreflightOnlyGateOperator(MigrationOperator, SkipMixin):
    """The preflight's last task, after every check passed. On a validate run (run param
    `preflight_only`) it skips every later task, whatever its trigger rule, as a ShortCircuitOperator
    does; otherwise it lets the run go on. A validate run whose preflight refused never reaches it:
    the later tasks are upstream_failed, and the report (which runs after anything) fails unwritten.
    """

    inherits_from_skipmixin = True
    ui_color = "#dbe9f6"

    def execute(self, context: Context) -> dict[str, Any]:
        if not context["params"].get("preflight_only"):
            return {"preflight_only": False}
        later = [task for task in self.get_flat_relatives(upstream=False) if not task.is_teardown]
        self.log.info("Preflight passed; preflight_only: the %d later task(s) are skipped", len(later))
        self.skip(ti=context["ti"], tasks=later)  # raises DownstreamTasksSkipped: this task succeeds
        return {"preflight_only": True}


class CheckRollbackRunOperator(MigrationOperator):
    """The rollback's first task: the scope is one the DAG can honour, and (apply mode) no run of
    the migration DAG (`migration_dag_id`) is queued or running.

    :param services: the services a `services` scope may name (the deployable ones)
    :param notifications: the config's notifications section (plain data): who is told that the
        rollback started, once this task has accepted it (a refused rollback did not start)
    """

    ui_color = "#dbe9f6"

    migration_dag_id: str
    services: Sequence[str]
    notifications: Mapping[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        params = context["params"]
        scope, chosen = params.get("scope") or "all", list(params.get("services") or [])
        problems = []
        if scope not in ROLLBACK_SCOPES:
            problems.append(f"scope: must be one of {list(ROLLBACK_SCOPES)}, got {scope!r}")
        if scope == "services":
            if not chosen:
                problems.append("services: scope services needs at least one service")
            unknown = sorted(set(chosen) - set(self.services))
            if unknown:
                known = ", ".join(self.services)
                problems.append(f"services: {unknown} are not deployable services ({known})")
        if scope == "from_phase" and params.get("from_phase") not in UNDOABLE_PHASES:
            problems.append(
                f"from_phase: must be one of {list(UNDOABLE_PHASES)}, got {params.get('from_phase')!r}"
            )
        problems += guard_problems(context, self.migration_dag_id, "migration")
        if problems:
            raise fail(bulleted("rollback refused", problems))
        summary = {"mode": run_mode(context), "scope": scope}
        if scope == "services":
            summary["services"] = chosen
        if scope == "from_phase":
            summary["from_phase"] = params["from_phase"]
        self.log.info("Rollback accepted: %s; steps outside this scope are skipped", summary)
        for notifier in notifiers(self.notifications, "rollback_started"):
            notifier(context)
        return summary
