"""The approval points' shared behaviour, on the switchover's (the traffic one is in tests/traffic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from lab.synthetic_graph import real_document
from pyairtable_migration.builder import build_migration_dag
from pyairtable_migration.config import parse_config
from pyairtable_migration.operators.approval import MigrationApprovalOperator, approver
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
    given = answer("Approve", {"id": "7", "name": "oncall"})
    approved = approval.execute_complete(context(), given)
    assert approved == {
        "approved": True,
        "by": "oncall",
        "answered_at": given["responded_at"].isoformat(),
        "timed_out": False,
    }
    with pytest.raises(AirflowFailException, match="rejected by an unknown user: writers stay on the source"):
        approval.execute_complete(context(), answer("Reject", {"id": None, "name": None}))


def test_approvers_and_timeout_from_the_config_reach_every_approval_point() -> None:
    """Who may answer and how long it waits come from `approvals`; nobody answering is a Reject."""
    document = real_document()
    document["approvals"].update(approvers=[{"id": "3", "name": "oncall-primary"}], timeout_seconds=90)
    dag = build_migration_dag(parse_config(yaml.safe_dump(document)))
    points = [task for task in dag.tasks if isinstance(task, MigrationApprovalOperator)]
    assert {task.task_id for task in points} == {"switchover.approve", "traffic.approve_100"}
    for task in points:
        assert task.assigned_users == [{"id": "3", "name": "oncall-primary"}], task.task_id
        assert task.response_timeout == timedelta(seconds=90), task.task_id
        assert task.defaults == ["Reject"], task.task_id


def test_an_approval_nobody_answers_in_time_is_a_rejection_saying_so() -> None:
    """The event the scheduler's timeout sweep resumes the task with: the default (Reject), no user."""
    approval = SwitchoverApprovalOperator(task_id="approve", timeout_seconds=5)
    timed_out = {**answer("Reject", None), "timedout": True}
    with pytest.raises(
        AirflowFailException,
        match=r"rejected by nobody \(no answer within 5 s: the timeout's default\): writers stay",
    ):
        approval.execute_complete(context(), timed_out)


def test_switchover_approval_is_not_asked_in_plan_mode_or_with_approvals_off() -> None:
    approval = SwitchoverApprovalOperator(task_id="approve")
    assert approval.execute(context(mode="plan")) == {"mode": "plan"}
    with pytest.raises(AirflowSkipException, match="approvals off"):
        approval.execute(context(require_approvals=False))
