"""Chromium logged in to the session's Airflow deployment, and the artifacts folder."""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from lab.airflow_server import ADMIN
from lab.settings import REPO_ROOT
from tests.airflow_lab import MIGRATION_DAG, AirflowLab
from tests.browser.airflow_ui import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS, AirflowUI

# Test artifacts (gitignored): the graph screenshots, and the reports the runs write (report_dir).
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
REPORT_DIR = ARTIFACTS / "reports"
# `validation.report_dir` as the config says it: relative to the repository.
REPORT_SETTING = str(REPORT_DIR.relative_to(REPO_ROOT))


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """An empty artifacts folder, so what the assertions find is this session's."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    REPORT_DIR.mkdir(parents=True)
    return ARTIFACTS


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed browser test leaves the page it saw among the artifacts (`<test>-failed.png`)."""
    report = yield
    driver = item.funcargs.get("ui") if isinstance(item, pytest.Function) else None
    if report.failed and isinstance(driver, AirflowUI):
        try:
            driver.page.screenshot(path=ARTIFACTS / f"{item.name}-failed.png")
        except Exception as error:  # the page itself may be what broke; the failure stays the report
            report.sections.append(("failure screenshot", f"not taken: {error}"))
    return report


@pytest.fixture(scope="module")
def ui(airflow_deployment: AirflowLab) -> Iterator[AirflowUI]:
    """One Chromium page, logged in as the admin, for the whole module."""
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # Twice the pixels: the graph's nodes stay legible in the screenshots.
            context = browser.new_context(viewport={"width": 1600, "height": 1000}, device_scale_factor=2)
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            driver = AirflowUI(page, airflow_deployment.server.url, MIGRATION_DAG)
            driver.login(ADMIN, airflow_deployment.server.password)
            yield driver
        finally:
            browser.close()
