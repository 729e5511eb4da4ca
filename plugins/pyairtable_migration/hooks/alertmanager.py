"""Alertmanager's HTTP API (v2) and its metrics, through an ordinary `http` connection.

The monitoring check posts one test alert and reads the notification counters; what they mean is
the engine's (monitoring/delivery.py). No answer, or an answer other than 2xx, is
AlertmanagerUnavailable, named with the connection id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from requests import Response

from pyairtable_migration.hooks.http_api import HttpApiHook
from pyairtable_migration.monitoring.delivery import AlertmanagerUnavailable


class AlertmanagerHook(HttpApiHook):
    conn_name_attr = "alertmanager_conn_id"
    default_conn_name = "alertmanager_default"
    hook_name = "Alertmanager"
    unavailable = AlertmanagerUnavailable

    def _request(self, method: str, endpoint: str, **request_kwargs: Any) -> Response:
        response = self.answer(method, endpoint, **request_kwargs)
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
