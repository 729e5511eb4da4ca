"""Infrastructure nodes of the service graph: readiness checks, never deployments.

postgres: a query through the configured connection; redis: PING and INFO; kafka: a broker's
ApiVersions and Metadata; mesh: an HTTP GET of the configured URL. A node marked `external: true`
(the lab has no Kafka broker and no mesh) is not checked: the task says so and ends SKIPPED, so
it is visibly not green; its dependents still run (their deploy tasks use `none_failed`).
In plan mode a check runs if it can, and a failure is reported without failing the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from pyairtable_migration.hooks.readiness import (
    http_ready,
    kafka_ready,
    postgres_ready,
    redis_ready,
)
from pyairtable_migration.operators.base import MigrationOperator, bulleted, run_mode


class InfrastructureReadyOperator(MigrationOperator):
    template_fields: Sequence[str] = ("node", "check", "conn_id", "url")
    ui_color = "#f3ecdc"

    node: str
    check: str
    external: bool = False
    conn_id: str | None = None
    url: str | None = None
    timeout_seconds: float = 5

    def execute(self, context: Context) -> dict[str, Any]:
        mode = run_mode(context)
        summary = {"node": self.node, "check": self.check, "mode": mode}
        if self.external:
            message = (
                f"{self.node} ({self.check}) is marked external: it is not reachable from this environment, "
                "so its readiness is not checked here; its dependents go ahead"
            )
            if mode == "plan":
                self.log.info("Plan: %s (in apply mode this task ends skipped)", message)
                return {**summary, "external": True}
            self.log.warning("%s: skipped", message)
            raise AirflowSkipException(message)
        target = self.url if self.check == "mesh" else f"connection {self.conn_id}"
        try:
            facts = self._run_check()
        except Exception as exc:
            reason = f"{self.node} ({self.check} via {target}) is not ready: {type(exc).__name__}: {exc}"
            if mode == "plan":
                self.log.warning("Plan: %s (in apply mode this task fails)", reason)
                return {**summary, "ready": False}
            raise AirflowException(reason) from None
        self.log.info("%s is ready (%s via %s): %s", self.node, self.check, target, facts)
        return {**summary, "ready": True, **facts}

    def _run_check(self) -> dict[str, Any]:
        if self.check == "postgres":
            return postgres_ready(self._conn_id())
        if self.check == "redis":
            return redis_ready(self._conn_id(), self.timeout_seconds)
        if self.check == "kafka":
            return kafka_ready(self._conn_id(), self.timeout_seconds)
        if self.check == "mesh":
            if not self.url:
                raise ValueError("a mesh check needs a url")
            return http_ready(self.url, self.timeout_seconds)
        raise ValueError(f"unknown check {self.check!r}")

    def _conn_id(self) -> str:
        if not self.conn_id:
            raise ValueError(f"a {self.check} check needs a connection id")
        return self.conn_id


class CheckKubernetesOperator(MigrationOperator):
    """Preflight: every environment's namespace answers, and production's service Secret exists.

    Reads only; reports every problem in one message. In plan mode it connects to nothing.
    """

    template_fields: Sequence[str] = ("namespaces", "service_secrets")
    ui_color = "#dbe9f6"

    namespaces: dict[str, str]
    kubernetes_conn_ids: dict[str, str]
    service_secrets: dict[str, str | None]

    def execute(self, context: Context) -> dict[str, Any]:
        if run_mode(context) == "plan":
            self.log.info("Plan mode: would check namespaces %s", self.namespaces)
            return {"mode": "plan", "namespaces": self.namespaces}
        from pyairtable_migration.hooks.bluegreen import BlueGreenHook  # loads the Kubernetes client

        problems: list[str] = []
        for environment, namespace in self.namespaces.items():
            hook = BlueGreenHook(self.kubernetes_conn_ids[environment], namespace)
            try:
                if not hook.namespace_exists():
                    problems.append(f"{environment}: namespace {namespace} does not exist")
                    continue
                secret = self.service_secrets.get(environment)
                if secret and hook.secret_keys(secret) is None:
                    problems.append(f"{environment}: Secret {secret} not found in namespace {namespace}")
            except Exception as exc:
                problems.append(f"{environment}: namespace {namespace} unreachable: {exc}")
        if problems:
            raise AirflowException(bulleted("Kubernetes preflight refused", problems))
        self.log.info("Namespaces reachable: %s", self.namespaces)
        return {"namespaces": self.namespaces, "problems": []}
