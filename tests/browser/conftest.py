"""A real Airflow against a throwaway lab, a web server for the run reports, and Chromium logged in."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from lab.airflow_server import ADMIN
from lab.settings import REPO_ROOT, free_ports
from tests.airflow_lab import MIGRATION_DAG, AirflowLab, airflow_lab
from tests.browser.airflow_ui import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS, AirflowUI

# Test artifacts (gitignored): the graph screenshots, and the reports the runs write (report_dir).
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
REPORT_DIR = ARTIFACTS / "reports"


@dataclass(frozen=True)
class Reports:
    directory: Path
    url: str

    @property
    def setting(self) -> str:
        """`validation.report_dir` as the config says it: relative to the repository."""
        return str(self.directory.relative_to(REPO_ROOT))


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are the browser's; the test output stays the test's."""


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """An empty artifacts folder, so what the assertions find is this session's."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    REPORT_DIR.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def reports(artifacts: Path) -> Iterator[Reports]:
    """The reports over HTTP: the UI shows an extra link only when it is http(s) or the UI's own
    origin, so the report task's default file:// link would not be there to click."""
    (port,) = free_ports(1)
    handler = functools.partial(QuietHandler, directory=str(REPORT_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Reports(REPORT_DIR, f"http://127.0.0.1:{port}")
    finally:
        server.shutdown()
        server.server_close()


# Airflow's task supervisor can see its task's sockets close before the process is reaped; it then
# sleeps in select() until [workers] min_heartbeat_interval (5 s) before it reports the exit. A task
# that deferred meanwhile has its trigger fire first, and the scheduler fails it ("finished with
# state success, but the task instance's state attribute is queued") - with the lab's second-long
# waits, twice in a row on traffic.shift_to_100 (the one retry spent too). At 1 s the gap stays
# shorter than the triggers here. Set for the Airflow this module starts, nothing else.
WORKER_SETTINGS = {"AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1"}


@pytest.fixture(scope="module")
def ui_lab() -> Iterator[AirflowLab]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in WORKER_SETTINGS.items():
            patch.setenv(name, value)
        with airflow_lab("pyairtable-ui-") as lab:
            yield lab


@pytest.fixture(scope="module")
def ui(ui_lab: AirflowLab) -> Iterator[AirflowUI]:
    """One Chromium page, logged in as the admin, for the whole module."""
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # Twice the pixels: the graph's nodes stay legible in the screenshots.
            context = browser.new_context(viewport={"width": 1600, "height": 1000}, device_scale_factor=2)
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            driver = AirflowUI(page, ui_lab.server.url, MIGRATION_DAG)
            driver.login(ADMIN, ui_lab.server.password)
            yield driver
        finally:
            browser.close()
