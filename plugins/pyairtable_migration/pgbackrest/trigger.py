"""The wait until a restored cluster has replayed up to its recovery target (it pauses there)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import TriggerEvent

from pyairtable_migration.hooks.database import fetch_one, statement
from pyairtable_migration.pgbackrest.cluster import RestoredHook, log_problems, postmaster_pid
from pyairtable_migration.pgbackrest.recovery import recovery_reached
from pyairtable_migration.triggers.base import PollingTrigger, failure, trigger_fields


@trigger_fields
class RecoveryTargetTrigger(PollingTrigger):
    """Polls the restored cluster: ok once paused at its target; failed if the server exits
    (recovery ended before the target, a missing WAL segment: its log says which) or past the timeout."""

    conn_id: str
    host: str
    port: int
    data_path: str
    timeout_seconds: float
    poll_seconds: float = 1.0

    def sample(self) -> dict[str, Any]:
        if postmaster_pid(Path(self.data_path)) is None:
            return {"stopped": True}
        with RestoredHook(self.conn_id, self.host, self.port).cursor(connect_timeout=3) as cursor:
            row = fetch_one(cursor, statement("backup_recovery_state"))
        assert row is not None
        return {"stopped": False, **row}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = time.monotonic() + self.timeout_seconds
        async for observed in self.poll(self.poll_seconds, "restored cluster not answering yet: %s"):
            if observed is not None and observed["stopped"]:
                yield failure(
                    "stopped",
                    f"the restored server stopped before its target: {log_problems(Path(self.data_path))}",
                )
                return
            if observed is not None and recovery_reached(observed):
                yield TriggerEvent(
                    {
                        "status": "ok",
                        "message": "recovery reached its target",
                        "last_replayed_commit": str(observed["last_replayed_commit"]),
                        "replay_lsn": observed["replay_lsn"],
                    }
                )
                return
            if time.monotonic() > deadline:
                yield failure(
                    "timeout", f"recovery did not reach its target within {self.timeout_seconds:.0f} s"
                )
                return
