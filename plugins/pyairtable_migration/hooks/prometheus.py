"""Prometheus's HTTP API, through an ordinary `http` connection.

Gates read single numbers (an error ratio, a p99), so the hook returns exactly that: the value
of an instant query, or None when the query matched no series (no traffic yet is not a pass).
Two failures are told apart, because the gate treats them differently from a preflight check:
Prometheus unreachable (PrometheusUnavailable) and Prometheus refusing the query, e.g. a PromQL
syntax error (PrometheusQueryRefused).
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

from pyairtable_migration.hooks.http_api import HttpApiHook

# The gate and the links import it from here; the alert rules render their queries with it too.
from pyairtable_migration.monitoring.promql import render_query  # noqa: F401


class PrometheusQueryError(RuntimeError):
    """Prometheus refused the query or could not be reached."""


class PrometheusUnavailable(PrometheusQueryError):
    """No answer: connection refused, timeout, or a server error."""


class PrometheusQueryRefused(PrometheusQueryError):
    """Prometheus answered and refused the query (bad_data: syntax, unknown function...)."""


class PrometheusHook(HttpApiHook):
    conn_name_attr = "prometheus_conn_id"
    default_conn_name = "prometheus_default"
    hook_name = "Prometheus"
    unavailable = PrometheusUnavailable

    def _get(self, endpoint: str, params: dict[str, Any]) -> Any:
        response = self.answer("GET", endpoint, data=params)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 500 or not isinstance(body, dict) or "status" not in body:
            raise PrometheusUnavailable(
                f"Prometheus ({self.http_conn_id}) answered HTTP {response.status_code} "
                f"without a Prometheus API body: {response.text[:200]!r}"
            )
        if body["status"] != "success":
            raise PrometheusQueryRefused(
                f"Prometheus refused the query ({body.get('errorType', 'error')}): {body.get('error', '')}"
            )
        return body["data"]

    def instant_value(self, query: str) -> float | None:
        """The single value of an instant query; None for no series or NaN (e.g. 0/0)."""
        data = self._get("api/v1/query", {"query": query})
        result = data["result"]
        if data.get("resultType") == "scalar":
            result = [{"value": result}]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("api/v1/targets", {"state": "active"})["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        """The alerting rule groups Prometheus has loaded, each rule with its health and last error."""
        return list(self._get("api/v1/rules", {"type": "alert"})["groups"])

    def alertmanagers(self) -> list[dict[str, Any]]:
        """The Alertmanagers Prometheus sends its alerts to."""
        return list(self._get("api/v1/alertmanagers", {})["activeAlertmanagers"])

    def base(self) -> str:
        """Where Prometheus answers, built from the connection as HttpHook builds it."""
        return self.url_from_endpoint("").rstrip("/")

    def graph_url(self, query: str) -> str:
        """The Prometheus UI showing this query, for an operator extra link."""
        return f"{self.base()}/graph?g0.expr={quote(query)}&g0.tab=0&g0.range_input=15m"
