"""The switchover's operators: a person's approval, then the write switch (and, in the rollback
DAG, its way back), each one task over the engine in `postgres/switchover.py` (`WriteSwitch`),
which holds the steps, the freeze and the abort. The operators add what Airflow needs: the
arguments from the plan, plan-mode lines, the run id in the catch-up marker, and the undo on kill.
The migration's own `switchover.undo` (writers back, PostgreSQL and Redis) is in redis_sync.py,
beside the Redis rollback it runs: an operator module imports no other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from pyairtable_migration.operators.approval import Answer, MigrationApprovalOperator
from pyairtable_migration.operators.base import ReplicationTopologyOperator, fail
from pyairtable_migration.postgres.switchover import Direction, Side, WriteSwitch, rollback_direction
from pyairtable_migration.topology import Pooler

# --- operators ------------------------------------------------------------------------------------


class SwitchoverOperatorBase(ReplicationTopologyOperator):
    """The switch and the rollback: one engine, run in the direction the subclass names.

    :param sequence_margin: steps added to every sequence's last value on the side writers join
    :param timeout_seconds: longest write freeze; past it the switch aborts and resumes
    """

    template_fields: Sequence[str] = (
        *ReplicationTopologyOperator.template_fields,
        "sequence_margin",
        "timeout_seconds",
    )
    ui_color = "#f9d7d7"

    sequence_margin: int
    timeout_seconds: float = 30.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._engine: WriteSwitch | None = None

    def direction(self) -> Direction:
        raise NotImplementedError

    def plan(self) -> list[str]:
        """What the direction would do after pausing the poolers, for plan mode."""
        raise NotImplementedError

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context, f"PAUSE pooler(s) {', '.join(p['name'] for p in self.poolers)}", *self.plan()
        ):
            return {"mode": "plan"}
        return self.switch(context)

    def engine(self, context: Context) -> WriteSwitch:
        direction = self.direction()
        return WriteSwitch(
            direction,
            [Pooler.of(p) for p in self.poolers],
            sequence_margin=int(self.sequence_margin),
            timeout_seconds=float(self.timeout_seconds),
            marker_id=f"{direction.label}:{context.get('run_id') or 'manual'}",
            log=self.log,
        )

    def switch(self, context: Context) -> dict[str, Any]:
        self._engine = self.engine(context)
        try:
            return self.run(self.task_id, self._engine.run)
        finally:
            self._engine = None

    def on_kill(self) -> None:
        engine = self._engine
        if engine is not None and engine.freezing:
            self.log.warning("Killed during the write freeze: undoing it and resuming writers")
            for line in engine.abort():
                self.log.warning("Undone: %s", line)


class SwitchDatabaseOperator(SwitchoverOperatorBase):
    """Move every writer from the source to the target (module docstring), reverse replication on."""

    def direction(self) -> Direction:
        return Direction(
            label="switchover",
            leaving=Side("source", self.source()),
            joining=Side("target", self.target()),
            catch_up_subscription=self.subscription,
            catch_up_publication=self.publication,
            reverse_publication=self.reverse_publication,
            reverse_subscription=self.reverse_subscription,
        )

    def plan(self) -> list[str]:
        return [
            f"write a marker on {self.source_conn_id}, wait until {self.target_conn_id} has it",
            f"set every sequence on the target to the source's last value + {self.sequence_margin}",
            f"disable subscription {self.subscription}; create slot {self.reverse_subscription} on the "
            "target",
            "repoint the pooler(s) to the target and RESUME (abort and RESUME on the source past "
            f"{self.timeout_seconds} s)",
            f"start reverse replication {self.reverse_publication} -> {self.reverse_subscription} "
            f"(copy_data = false); drop subscription {self.subscription} and publication {self.publication}",
        ]


class RollbackDatabaseOperator(SwitchoverOperatorBase):
    """Move every writer back from the target to the source; reverse replication kept the source
    current, so nothing written on the target is lost."""

    def direction(self) -> Direction:
        return rollback_direction(
            self.source(), self.target(), self.reverse_publication, self.reverse_subscription
        )

    def plan(self) -> list[str]:
        return [
            f"write a marker on {self.target_conn_id}, wait until {self.source_conn_id} has it",
            f"set every sequence on the source to the target's last value + {self.sequence_margin}",
            f"repoint the pooler(s) to the source, RESUME; drop subscription {self.reverse_subscription} and "
            f"publication {self.reverse_publication}",
        ]


class SwitchoverApprovalOperator(MigrationApprovalOperator):
    """A person approves the write switchover. Skipped when the run's `require_approvals` is false;
    in plan mode it only says what it would ask. A rejection fails the task: writers stay on the
    source and nothing downstream runs."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Switch PyAirtable's database writes to production?")
        kwargs.setdefault(
            "body",
            "Replication is caught up and the data validated. **Approve** pauses the pooler(s) for a short "
            "write stall, moves every writer to the production database and starts reverse replication for "
            "a lossless rollback. **Reject** leaves writers on staging.",
        )
        super().__init__(**kwargs)

    def approved(self, context: Context, answer: Answer) -> dict[str, Any]:
        self.log.info("Approved by %s: the write switchover may proceed", answer.by)
        return {"approved": True, **answer.summary()}

    def rejected(self, context: Context, answer: Answer) -> Any:
        raise fail(f"write switchover rejected by {answer.by}: writers stay on the source")
