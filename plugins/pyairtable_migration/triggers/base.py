"""What every trigger here shares: how it serializes, the poll loop of the sampling ones, and the
one shape of an event: `{"status", "message", ...data}`.

`status` is "ok" when the wait ended as hoped; anything else names why it did not ("failed",
"timeout", "error" when the system could not be read; the traffic triggers report their verdicts,
"insync", "passed", "breached", "no_data", in the same shape). `message` says it for a person; the
data is what the resumed task needs. `MigrationOperator.raise_on_failure` is the one reader.
"""

from __future__ import annotations

import asyncio
import inspect
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar, dataclass_transform

from airflow.triggers.base import BaseTrigger, TriggerEvent


class MigrationTrigger(BaseTrigger):
    """A trigger serialized as its constructor's parameters, each read back from its attribute.

    The triggerer re-creates a trigger as `cls(**kwargs)`: with the constructor as the one list of
    those kwargs, serialize() cannot drift from it. Declared with `trigger_fields`, the constructor
    is the trigger's fields.
    """

    def __post_init__(self) -> None:
        """BaseTrigger's own state, for a constructor that `trigger_fields` generated."""
        super().__init__()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        parameters = inspect.signature(type(self)).parameters
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {name: getattr(self, name) for name in parameters},
        )


TriggerT = TypeVar("TriggerT", bound=MigrationTrigger)


@dataclass_transform(kw_only_default=True)
def trigger_fields(cls: type[TriggerT]) -> type[TriggerT]:
    """Declare a trigger's parameters once, as annotated fields: its keyword-only constructor and
    its attributes follow, and serialize() with them. Shown and compared as a trigger still
    (BaseTrigger's repr; by identity), not as a dataclass."""
    return dataclass(kw_only=True, eq=False, repr=False)(cls)


class PollingTrigger(MigrationTrigger):
    """A trigger that samples through the project's synchronous hooks until it has an answer.

    `sample` runs in a thread (`asyncio.to_thread`), so the triggerer's event loop never blocks
    and connections resolve as in any task.
    """

    @abstractmethod
    def sample(self) -> dict[str, Any]:
        """One look at what the trigger waits for (runs in a thread)."""

    async def poll(self, interval: float, failed: str) -> AsyncIterator[dict[str, Any] | None]:
        """Each sample, `interval` s apart; None for one that raised, logged with `failed` (`%s`: why).

        A sample that raises is not the end of the wait: a database restarting, or a dropped
        connection, is what these triggers wait out.
        """
        while True:
            try:
                observed: dict[str, Any] | None = await asyncio.to_thread(self.sample)
            except Exception as exc:
                self.log.warning(failed, exc)
                observed = None
            yield observed
            await asyncio.sleep(interval)


OK = "ok"


def success(message: str, **data: Any) -> TriggerEvent:
    """The event of a wait that ended as hoped."""
    return TriggerEvent({"status": OK, "message": message, **data})


def failure(status: str, message: str, **details: Any) -> TriggerEvent:
    """The event of a wait that ends without success: its status and a message that says why."""
    return TriggerEvent({"status": status, "message": message, **details})
