"""Bootstrap servers from an Airflow connection: extra `bootstrap_servers` (h:p,h:p), else host:port.

Airflow is imported when called, so the rest of the engine stays importable without it.
"""

from __future__ import annotations


def bootstrap_of(conn_id: str) -> str:
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    listed = str(connection.extra_dejson.get("bootstrap_servers") or "")
    return listed or f"{connection.host or 'localhost'}:{connection.port or 9092}"
