"""The mirror's lag gate on the triggerer: passes once the events on the source not yet copied and
committed by the mirror stay at or below `max_lag` for `consecutive_samples` samples in a row.
With max_lag 0 after the producers moved, it is the drain: everything the source took is copied."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent

from pyairtable_migration.kafka_mirror.connection import bootstrap_of
from pyairtable_migration.kafka_mirror.groups import mirror_lag
from pyairtable_migration.triggers.base import PollingTrigger, failure, success, trigger_fields


@trigger_fields
class KafkaMirrorLagTrigger(PollingTrigger):
    source_conn_id: str
    mirror_group: str
    topics: list[str]
    max_lag: int
    consecutive_samples: int
    sample_seconds: float
    timeout_seconds: float

    def sample(self) -> dict[str, Any]:
        lag = mirror_lag(bootstrap_of(self.source_conn_id), self.mirror_group, self.topics)
        return {"total": sum(lag.values()), "partitions": len(lag)}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        streak = 0
        last: int | None = None
        async for observed in self.poll(
            self.sample_seconds, "Mirror lag sample failed (counts as above): %s"
        ):
            if observed is not None:
                last = int(observed["total"])
                streak = streak + 1 if last <= self.max_lag else 0
            else:
                streak = 0
            seconds = time.monotonic() - started
            if streak >= self.consecutive_samples:
                yield success(
                    f"mirror lag {last} <= {self.max_lag} events for {streak} samples",
                    lag=last,
                    seconds=seconds,
                )
                return
            if seconds > self.timeout_seconds:
                yield failure(
                    "timeout",
                    f"mirror lag still {last} events (limit {self.max_lag}) "
                    f"after {self.timeout_seconds:.0f} s",
                    lag=last,
                )
                return
