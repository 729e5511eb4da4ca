"""Alertmanager's HTTP API (v2) and its metrics, through an ordinary `http` connection.

The monitoring check posts one test alert and reads the notification counters; what they mean is
the engine's (monitoring/delivery.py). Any failure to get an answer is AlertmanagerUnavailable,
named with the connection id (never its password: basic auth travels in a header, not the URL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.http.hooks.http import HttpHook
from requests import Response

from pyairtable_migration.monitoring.delivery import AlertmanagerUnavailable


class AlertmanagerHook(HttpHook):
    conn_name_attr = "alertmanager_conn_id"
    default_conn_name = "alertmanager_default"
    conn_type = "http"
    hook_name = "Alertmanager"

    def __init__(self, alertmanager_conn_id: str = default_conn_name, timeout_seconds: float = 10.0) -> None:
        super().__init__(method="GET", http_conn_id=alertmanager_conn_id)
        self.timeout_seconds = timeout_seconds

    def _request(self, method: str, endpoint: str, **request_kwargs: Any) -> Response:
        self.method = method  # HttpHook sends with the hook's method; this one uses two
        try:
            response = self.run(
                endpoint,
                extra_options={"timeout": self.timeout_seconds, "check_response": False},
                **request_kwargs,
            )
        except Exception as exc:
            raise AlertmanagerUnavailable(
                f"Alertmanager ({self.http_conn_id}) did not answer: {type(exc).__name__}: {exc}"
            ) from exc
        if not response.ok:
            raise AlertmanagerUnavailable(
                f"Alertmanager ({self.http_conn_id}) answered {method} /{endpoint} with HTTP "
                f"{response.status_code}: {response.text[:200]!r}"
            )
        return response

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        self._request("POST", "api/v2/alerts", json=list(alerts))

    def metrics(self) -> str:
        return self._request("GET", "metrics").text
