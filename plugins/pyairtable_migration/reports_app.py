"""Serves the migration reports from Airflow's own api-server (reports_plugin.py mounts it), so the
report task's extra link (`/pyairtable-reports/<file>`) opens from the UI: the UI only shows links
on its own site or http(s), never a file:// path.

Only to a logged-in user, as Airflow's auth manager decides it for its own API: the UI's session
cookie or a bearer token. A report holds no secret, but it tells how production is built and how it
behaves: it is no more public than the run it describes. A browser without a session is sent to
Airflow's login page, which brings it back to the report; any other client gets 401.

The directory is read from the configuration on each request (`validation.report_dir`), so a
config changed while Airflow runs is followed. Only files the report task writes are served.
"""

from __future__ import annotations

import os
import re
from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from pyairtable_migration.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from pyairtable_migration.report import resolve_dir

REPORT_FILE = re.compile(r"report_[A-Za-z0-9_.+-]+\.(html|json)")

app = FastAPI(title="PyAirtable migration reports")


async def viewer(request: Request) -> BaseUser | None:
    """The logged-in user, by Airflow's own rules (bearer token first, then the UI's cookie); None if none."""
    try:
        return await get_user(request, None, await bearer_scheme(request))
    except HTTPException:
        return None


def refused(request: Request) -> Response:
    """A browser goes to the login page (and comes back here after it); an API client gets 401."""
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    return JSONResponse(
        {"detail": "log in to Airflow to read migration reports"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


@app.get("/{name}", response_model=None)
def report_file(name: str, request: Request, user: Annotated[BaseUser | None, Depends(viewer)]) -> Response:
    if user is None:
        return refused(request)
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
