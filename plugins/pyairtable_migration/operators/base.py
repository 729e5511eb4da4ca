"""What the migration's operators do alike: plan mode, waiting on a trigger, and failing once
with every problem listed.

Plan mode (run param `mode` = plan) only logs what a task would do, so a plan run is safe against
production. A long wait is handed to the triggerer, which reports success or failure as an event
that `execute_complete` turns into the task's outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, NoReturn

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import BaseTrigger

from pyairtable_migration.operators.params import run_mode

# Each trigger keeps its own deadline and reports running past it as an event; the task's timeout
# only backs that up (a dead triggerer), so it waits this much longer.
DEFERRAL_MARGIN = timedelta(minutes=5)


def fail(message: str) -> AirflowFailException:
    """A failure no retry can fix: Airflow fails the task at once."""
    return AirflowFailException(message)


def bulleted(heading: str, lines: Iterable[str]) -> str:
    """`heading:` and one indented `- line` each: a check names everything it found at once."""
    return f"{heading}:\n  - " + "\n  - ".join(lines)


class MigrationOperator(BaseOperator):
    """Base of the migration's operators: plan mode and deferral to a trigger."""

    def planned(self, context: Context, *lines: str) -> bool:
        """In plan mode: log what would be done, and say so (the caller returns)."""
        if run_mode(context) != "plan":
            return False
        for line in lines:
            self.log.info("Plan: would %s", line)
        return True

    def defer_to(
        self, trigger: BaseTrigger, timeout_seconds: float, kwargs: dict[str, Any] | None = None
    ) -> NoReturn:
        """Wait on the triggerer; the task resumes in `execute_complete` with its event."""
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs=kwargs,
            timeout=timedelta(seconds=float(timeout_seconds)) + DEFERRAL_MARGIN,
        )

    @staticmethod
    def raise_on_failure(event: Mapping[str, Any], action: str) -> None:
        """A trigger reports a failed wait as an event, not an exception: fail with its message."""
        if event.get("status") != "ok":
            raise fail(f"{action}: {event.get('message')}")


class ConnectionPairOperator(MigrationOperator):
    """Base of the operators that act on a source and a target, both by Airflow connection id."""

    template_fields: Sequence[str] = ("source_conn_id", "target_conn_id")

    def __init__(self, *, source_conn_id: str, target_conn_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source_conn_id = source_conn_id
        self.target_conn_id = target_conn_id
