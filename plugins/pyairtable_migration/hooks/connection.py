"""A hook over one Airflow connection, looked up once per hook (the secrets backend may be remote):
PgBouncer's admin console, a Redis server, the Redis write endpoint."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook


class ConnectionHook(BaseHook):
    conn_name_attr = "conn_id"

    def __init__(self, conn_id: str) -> None:
        super().__init__()
        self.conn_id = conn_id

    @cached_property
    def _connection(self) -> Any:
        return self.get_connection(self.conn_id)
