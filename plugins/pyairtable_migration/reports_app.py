"""Serves the migration reports from Airflow's own api-server, so the report task's extra link
(`/pyairtable-reports/<file>`) opens from the UI: the UI only shows links on its own site or http(s),
never a file:// path.

The directory is read from the configuration on each request (`validation.report_dir`), so a
config changed while Airflow runs is followed. Only files the report task writes are served.
"""

from __future__ import annotations

import os
import re

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

from pyairtable_migration.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from pyairtable_migration.report import REPORTS_URL_PREFIX, resolve_dir

REPORT_FILE = re.compile(r"report_[A-Za-z0-9_.+-]+\.(html|json)")

app = FastAPI(title="PyAirtable migration reports")


@app.get("/{name}")
def report_file(name: str) -> FileResponse:
    if not REPORT_FILE.fullmatch(name):
        raise HTTPException(status_code=404, detail="not a migration report")
    try:
        config = load_config(os.environ.get("PYAIRTABLE_MIGRATION_CONFIG", str(DEFAULT_CONFIG_PATH)))
    except ConfigError as exc:
        raise HTTPException(status_code=503, detail=f"the migration config does not load: {exc}") from None
    path = resolve_dir(config.validation.report_dir) / name
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"no report {name}")
    return FileResponse(path)


class MigrationReportsPlugin(AirflowPlugin):
    name = "pyairtable_migration_reports"
    fastapi_apps = [  # noqa: RUF012 (AirflowPlugin declares it as an instance attribute)
        {"app": app, "url_prefix": REPORTS_URL_PREFIX, "name": "PyAirtable migration reports"}
    ]
