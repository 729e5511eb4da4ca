"""The mirror's lag gate on the triggerer: passes once the events on the source not yet copied and
committed by the mirror stay at or below `max_lag` for `consecutive_samples` samples in a row.
With max_lag 0 after the producers moved, it is the drain: everything the source took is copied,
and (`quiet_seconds`) the source has taken nothing new for that long (kafka_mirror.groups.LagWatch)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent

from pyairtable_migration.kafka_mirror.connection import bootstrap_of
from pyairtable_migration.kafka_mirror.groups import LagWatch, MirrorProgress, mirror_progress
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
    quiet_seconds: float = 0.0

    def sample(self) -> dict[str, Any]:
        progress = mirror_progress(bootstrap_of(self.source_conn_id), self.mirror_group, self.topics)
        return {"lag": progress.lag, "ends": progress.ends}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        watch = LagWatch(self.max_lag, self.consecutive_samples, self.quiet_seconds)
        async for observed in self.poll(
            self.sample_seconds, "Mirror lag sample failed (counts as above): %s"
        ):
            now = time.monotonic()
            progress = None if observed is None else MirrorProgress(observed["lag"], observed["ends"])
            passed = watch.observe(progress, now)
            lag = None if watch.last is None else watch.last.total
            if passed:
                yield success(watch.verdict(now), lag=lag, seconds=now - started)
                return
            if now - started > self.timeout_seconds:
                yield failure("timeout", f"after {self.timeout_seconds:.0f} s: {watch.verdict(now)}", lag=lag)
                return
