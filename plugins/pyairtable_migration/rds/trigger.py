"""The wait until a managed cluster restored to a point in time is available."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent

from pyairtable_migration.triggers.base import OK, PollingTrigger, failure, trigger_fields

FAILED_STATES = ("failed", "inaccessible-encryption-credentials", "incompatible-parameters", "deleting")


@trigger_fields
class RdsClusterAvailableTrigger(PollingTrigger):
    """Polls the RDS API: ok once the cluster is available; failed in a state it cannot leave by
    itself, or past the timeout."""

    aws_conn_id: str
    cluster: str
    timeout_seconds: float
    poll_seconds: float = 10.0

    def sample(self) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.rds import RdsHook

        described = RdsHook(aws_conn_id=self.aws_conn_id).conn.describe_db_clusters(
            DBClusterIdentifier=self.cluster
        )
        return {"status": str(described["DBClusters"][0].get("Status", ""))}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = time.monotonic() + self.timeout_seconds
        async for observed in self.poll(
            self.poll_seconds, f"RDS cluster {self.cluster} not readable yet: %s"
        ):
            state = observed["status"] if observed else None
            if state == "available":
                yield TriggerEvent(
                    {
                        "status": OK,
                        "message": f"RDS cluster {self.cluster} is available",
                        "cluster": self.cluster,
                    }
                )
                return
            if state in FAILED_STATES:
                yield failure("failed", f"RDS cluster {self.cluster} is {state}")
                return
            if time.monotonic() > deadline:
                yield failure(
                    "timeout",
                    f"RDS cluster {self.cluster} not available within {self.timeout_seconds:.0f} s "
                    f"(last seen: {state or 'unreadable'})",
                )
                return
