"""The project's Airflow plugin: the migration reports, served by Airflow's api-server.

Airflow imports this file in every one of its processes, every task process included (the only
file plugins/.airflowignore lets it load). The app it mounts (reports_app.py: FastAPI and Airflow's
own api-server modules, half of a task process's start-up when imported there) is imported only
where the api-server asks for the plugin's apps.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin


class MigrationReportsPlugin(AirflowPlugin):
    name = "pyairtable_migration_reports"

    # AirflowPlugin declares a list attribute; a property builds it only where the apps are mounted.
    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from pyairtable_migration.report import REPORTS_URL_PREFIX
        from pyairtable_migration.reports_app import app

        return [{"app": app, "url_prefix": REPORTS_URL_PREFIX, "name": "PyAirtable migration reports"}]
