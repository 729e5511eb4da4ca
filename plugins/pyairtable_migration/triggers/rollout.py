"""Waiting for a Deployment's rollout, on the triggerer: no worker slot is held while pods start.

Done when the controller has observed the latest generation and every replica is updated, ready
and available. The progress deadline counts from the last time any of those numbers moved (as
Kubernetes' own progressDeadlineSeconds does), so a large rollout that keeps moving is never cut
short; the Deployment's own `ProgressDeadlineExceeded` condition ends the wait at once. A failure
names the Deployment's status and every pod's conditions that are not True.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from airflow.triggers.base import TriggerEvent

from pyairtable_migration.kubernetes.bluegreen import RolloutStatus, describe_pods
from pyairtable_migration.triggers.base import OK, MigrationTrigger, success, trigger_fields


@trigger_fields
class DeploymentRolloutTrigger(MigrationTrigger):
    """Fires once: `{"status": "ok" | "failed" | "error", "message": ..., "rollout": {...}, "seconds": ...}`
    ("error": the API could not be read, worth a retry)."""

    kubernetes_conn_id: str
    namespace: str
    deployment: str
    pod_selector: str
    progress_deadline_seconds: float = 600
    poll_seconds: float = 2

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The Kubernetes libraries load here, on the triggerer, not where the DAG is parsed.
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        from kubernetes_asyncio import client as async_client
        from kubernetes_asyncio.client.exceptions import ApiException

        started = time.monotonic()
        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        try:
            async with hook.get_conn() as api:
                apps, core = async_client.AppsV1Api(api), async_client.CoreV1Api(api)
                last_progress: tuple[int, ...] | None = None
                last_moved = time.monotonic()
                while True:
                    try:
                        found = await apps.read_namespaced_deployment(self.deployment, self.namespace)
                    except ApiException as exc:
                        if exc.status == 404:
                            yield self._event(
                                "failed", f"deployment {self.deployment} no longer exists", started
                            )
                            return
                        raise
                    status = RolloutStatus.of(api.sanitize_for_serialization(found))
                    if status.done:
                        yield self._event(
                            OK, f"{self.deployment} rolled out: {status.describe()}", started, status
                        )
                        return
                    if status.progress != last_progress:
                        last_progress, last_moved = status.progress, time.monotonic()
                        self.log.info("%s: %s", self.deployment, status.describe())
                    stalled = time.monotonic() - last_moved
                    if status.deadline_exceeded or stalled >= self.progress_deadline_seconds:
                        pods = await core.list_namespaced_pod(
                            self.namespace, label_selector=self.pod_selector
                        )
                        pod_lines = describe_pods(api.sanitize_for_serialization(pods).get("items") or [])
                        condition = (
                            f"Progressing={status.progressing_reason}: {status.progressing_message}"
                            if status.progressing_reason
                            else "no Progressing condition"
                        )
                        message = (
                            f"{self.deployment} made no progress for {stalled:.0f} s "
                            f"(progress deadline {self.progress_deadline_seconds:g} s): {status.describe()}; "
                            f"{condition}; " + ("; ".join(pod_lines) or "no pods")
                        )
                        yield self._event("failed", message, started, status)
                        return
                    await asyncio.sleep(self.poll_seconds)
        except Exception as exc:  # the operator turns this into a failed task with the reason
            yield self._event("error", f"waiting for {self.deployment}: {type(exc).__name__}: {exc}", started)

    def _event(
        self, outcome: str, message: str, started: float, status: RolloutStatus | None = None
    ) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": outcome,
                "deployment": self.deployment,
                "message": message,
                "seconds": round(time.monotonic() - started, 3),
                "rollout": None
                if status is None
                else {"ready": status.ready, "desired": status.desired, "generation": status.generation},
            }
        )


@trigger_fields
class RollbackWindowTrigger(MigrationTrigger):
    """Fires at `until` (ISO 8601, with offset): the end of the window in which the old color stays up.

    Sleeps the exact remaining time (not in whole seconds), so short windows in drills stay short.
    """

    until: str

    async def run(self) -> AsyncIterator[TriggerEvent]:
        end = datetime.fromisoformat(self.until)
        while (remaining := (end - datetime.now(UTC)).total_seconds()) > 0:
            await asyncio.sleep(min(remaining, 60))
        yield success(f"the rollback window ended at {self.until}", until=self.until)
