"""An HTTP API reached through an ordinary `http` connection (Prometheus, Alertmanager).

One request with the hook's timeout and the answer returned whatever its status (each API reads
its own errors); no answer at all is the subclass's `unavailable` error, named with the connection
id, never its password (basic auth travels in a header, not the URL).
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.providers.http.hooks.http import HttpHook
from requests import Response


class HttpApiHook(HttpHook):
    conn_type = "http"
    unavailable: ClassVar[type[Exception]] = ConnectionError

    def __init__(self, conn_id: str | None = None, timeout_seconds: float = 10.0) -> None:
        super().__init__(method="GET", http_conn_id=conn_id or self.default_conn_name)
        self.timeout_seconds = timeout_seconds

    def answer(self, method: str, endpoint: str, **request_kwargs: Any) -> Response:
        self.method = method  # HttpHook sends with the hook's method; an API may use several
        try:
            return self.run(
                endpoint,
                extra_options={"timeout": self.timeout_seconds, "check_response": False},
                **request_kwargs,
            )
        except Exception as exc:
            raise self.unavailable(
                f"{self.hook_name} ({self.http_conn_id}) did not answer: {type(exc).__name__}: {exc}"
            ) from exc
