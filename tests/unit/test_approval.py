"""The approval points' shared behaviour, on the switchover's (the traffic one is in tests/traffic)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pyairtable_migration.operators.approval import approver
from pyairtable_migration.operators.switchover import SwitchoverApprovalOperator


def answer(choice: str, user: Any) -> dict[str, Any]:
    return {
        "chosen_options": [choice],
        "params_input": {},
        "responded_at": datetime.now(UTC),
        "responded_by_user": user,
    }


def context(**params: Any) -> Any:
    return {"params": {"mode": "apply", "require_approvals": True, **params}}


@pytest.mark.parametrize(
    ("user", "who"),
    [
        ({"id": "7", "name": "oncall"}, "oncall"),
        ({"id": "7", "name": ""}, "7"),
        ({"id": None, "name": None}, "an unknown user"),
        (None, "an unknown user"),
        ("oncall", "oncall"),
    ],
)
def test_the_approver_is_named_or_said_unknown(user: Any, who: str) -> None:
    assert approver({"responded_by_user": user}) == who


def test_switchover_approve_passes_and_reject_fails_naming_who() -> None:
    approval = SwitchoverApprovalOperator(task_id="approve")
    approved = approval.execute_complete(context(), answer("Approve", {"id": "7", "name": "oncall"}))
    assert approved == {"approved": True, "by": "oncall"}
    with pytest.raises(AirflowFailException, match="rejected by an unknown user: writers stay on the source"):
        approval.execute_complete(context(), answer("Reject", {"id": None, "name": None}))


def test_switchover_approval_is_not_asked_in_plan_mode_or_with_approvals_off() -> None:
    approval = SwitchoverApprovalOperator(task_id="approve")
    assert approval.execute(context(mode="plan")) == {"mode": "plan"}
    with pytest.raises(AirflowSkipException, match="approvals off"):
        approval.execute(context(require_approvals=False))
