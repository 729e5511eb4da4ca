"""A person's approval before a step that moves writers or users (Airflow's Required Actions).

Both approval points of the migration behave alike: in plan mode they only say what they would
ask; with the run's `require_approvals` off they are skipped (and say so); an answer is logged
with who gave it. What Approve and Reject then do is the subclass's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from pyairtable_migration.notifications import notifiers
from pyairtable_migration.operators.base import run_mode


def approver(answer: Mapping[str, Any]) -> str:
    """Who answered: their name, else their id, else "an unknown user"."""
    user = answer.get("responded_by_user") or {}
    who = (user.get("name") or user.get("id")) if isinstance(user, Mapping) else user
    return str(who) if who else "an unknown user"


class MigrationApprovalOperator(ApprovalOperator):
    """Ask (unless planning or approvals are off); hand the answer to `approved` or `rejected`.

    :param notifications: the config's notifications section (plain data): who is told that the
        approval waits, through HITLOperator's `notifiers` (called as it starts waiting)
    """

    ui_color = "#fff2a8"

    def __init__(self, *, notifications: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("notifiers", notifiers(notifications, "approval_waiting"))
        super().__init__(**kwargs)

    def plan_summary(self) -> dict[str, Any]:
        return {"mode": "plan"}

    def approved(self, context: Context, who: str) -> Any:
        raise NotImplementedError

    def rejected(self, context: Context, who: str) -> Any:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        if run_mode(context) == "plan":
            self.log.info("Plan: would ask for approval: %s", self.subject)
            return self.plan_summary()
        # Absent means ask: an approval point is never passed over by accident.
        if not context["params"].get("require_approvals", True):
            self.log.info("Approvals off for this run (require_approvals=false): not asking")
            raise AirflowSkipException("approvals off (require_approvals=false)")
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        # HITLOperator's: validates the answer; ApprovalOperator's would skip downstream on Reject,
        # where a rejection here must fail the task (and undo what the subclass says).
        answer = HITLOperator.execute_complete(self, context, event)
        who = approver(answer)
        if answer["chosen_options"][0] == self.APPROVE:
            return self.approved(context, who)
        return self.rejected(context, who)
