"""A person's approval before a step that moves writers or users (Airflow's Required Actions).

Both approval points of the migration behave alike: in plan mode they only say what they would
ask; with the run's `require_approvals` off they are skipped (and say so); an answer is logged
with who gave it. What Approve and Reject then do is the subclass's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from pyairtable_migration.notifications import notifiers
from pyairtable_migration.operators.base import run_mode


def approver(answer: Mapping[str, Any], timeout_seconds: float | None = None) -> str:
    """Who answered: their name, else their id; the timeout's default when nobody did."""
    user = answer.get("responded_by_user") or {}
    who = (user.get("name") or user.get("id")) if isinstance(user, Mapping) else user
    if who:
        return str(who)
    if answer.get("timedout"):
        return f"nobody (no answer within {timeout_seconds or 0:g} s: the timeout's default)"
    return "an unknown user"


class MigrationApprovalOperator(ApprovalOperator):
    """Ask (unless planning or approvals are off); hand the answer to `approved` or `rejected`.

    :param approvers: who may answer (HITL `assigned_users`: dicts with `id` and `name`); empty: anyone
    :param timeout_seconds: an approval nobody answers within this long is rejected (the scheduler
        applies the default answer, Reject, when the response timeout passes)
    :param notifications: the config's notifications section (plain data): who is told that the
        approval waits, through HITLOperator's `notifiers` (called as it starts waiting)
    """

    ui_color = "#fff2a8"

    def __init__(
        self,
        *,
        approvers: Sequence[Mapping[str, str]] = (),
        timeout_seconds: float | None = None,
        notifications: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("notifiers", notifiers(notifications, "approval_waiting"))
        if approvers:
            kwargs.setdefault("assigned_users", [{"id": a["id"], "name": a["name"]} for a in approvers])
        if timeout_seconds:
            kwargs.setdefault("response_timeout", timedelta(seconds=timeout_seconds))
            kwargs.setdefault("defaults", [self.REJECT])
        super().__init__(**kwargs)
        self.timeout_seconds = timeout_seconds

    def plan_summary(self) -> dict[str, Any]:
        return {"mode": "plan"}

    def approved(self, context: Context, answer: Answer) -> Any:
        raise NotImplementedError

    def rejected(self, context: Context, answer: Answer) -> Any:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        if run_mode(context) == "plan":
            self.log.info("Plan: would ask for approval: %s", self.subject)
            return self.plan_summary()
        # Absent means ask: an approval point is never passed over by accident.
        if not context["params"].get("require_approvals", True):
            self.log.info("Approvals off for this run (require_approvals=false): not asking")
            raise AirflowSkipException("approvals off (require_approvals=false)")
        if self.assigned_users:
            self.log.info(
                "Who may answer: %s", ", ".join(f"{u['name']} ({u['id']})" for u in self.assigned_users)
            )
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        # HITLOperator's: validates the answer; ApprovalOperator's would skip downstream on Reject,
        # where a rejection here must fail the task (and undo what the subclass says).
        answer = HITLOperator.execute_complete(self, context, event)
        given = Answer(
            by=approver({**answer, "timedout": event.get("timedout")}, self.timeout_seconds),
            at=answer["responded_at"].isoformat() if answer.get("responded_at") else None,
            timed_out=bool(event.get("timedout")),
        )
        choice = answer["chosen_options"][0]
        self.log.info("Answered %s by %s at %s", choice, given.by, given.at)
        if choice == self.APPROVE:
            return self.approved(context, given)
        return self.rejected(context, given)


@dataclass(frozen=True)
class Answer:
    """Who answered an approval and when (UTC, ISO 8601); `timed_out`: nobody did in time."""

    by: str
    at: str | None
    timed_out: bool

    def summary(self) -> dict[str, Any]:
        return {"by": self.by, "answered_at": self.at, "timed_out": self.timed_out}
