"""A step whose operator arrives with its phase.

It describes the step in plan mode, so a plan run shows the whole migration, and refuses to
apply it: a placeholder never pretends to have changed anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException


class PlaceholderStepOperator(BaseOperator):
    template_fields: Sequence[str] = ("action", "touches")
    ui_color = "#eeeeee"

    def __init__(self, *, action: str, touches: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.action = action
        self.touches = list(touches)

    def execute(self, context: Context) -> dict[str, Any]:
        mode = context["params"]["mode"]
        self.log.info("Step: %s", self.action)
        for touched in self.touches:
            self.log.info("Touches: %s", touched)
        if mode != "plan":
            raise AirflowFailException(
                f"{self.task_id}: this step is not implemented yet, so it cannot run in mode "
                f"{mode!r}; trigger with mode 'plan' to review the migration"
            )
        return {"mode": mode, "action": self.action, "touches": self.touches}
