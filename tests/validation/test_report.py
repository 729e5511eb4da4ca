"""The migration report: written per run, opens as HTML, holds the run's figures."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk import DAG, TaskGroup, task

from pyairtable_migration.config import DEFAULT_CONFIG_PATH
from pyairtable_migration.links import MigrationReportLink
from pyairtable_migration.operators.validation import MigrationReportOperator
from pyairtable_migration.report import build_data, render_html
from tests.dagrun import registered, xcom


class Page(HTMLParser):
    """Collects text, ids, table cells and svg elements, and checks every opened element is closed."""

    VOID = frozenset({"meta", "br", "img", "input", "hr", "link", "line", "rect", "polyline"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.ids: set[str] = set()
        self.svgs = 0
        self.scripts = 0
        self.cells: list[str] = []
        self.in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)
        self.svgs += tag == "svg"
        self.scripts += tag == "script"
        if tag == "td":
            self.cells.append("")
            self.in_cell = True
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svgs += tag == "svg"

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        self.in_cell = self.in_cell and tag != "td"

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.in_cell:
            self.cells[-1] += data


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert page.stack == [], f"unclosed: {page.stack}"
    return page


XCOMS: dict[str, Any] = {
    "switchover.switch_database": {"return_value": {"write_stall_ms": 181.4, "changed": True}},
    "database.lag_gate": {"return_value": {"lags": [5000, 2400, 800, 120, 0], "seconds": 9.5}},
    "traffic.shift_to_10": {
        "return_value": {
            "gate": {
                "status": "passed",
                "samples": 8,
                "complete_samples": 8,
                "peaks": {"error_ratio": 0.001, "p99": 0.2},
                "limits": {"error_ratio": 0.01, "p99": 2.0},
            }
        }
    },
    "traffic.shift_to_100": {
        "return_value": {"gate": {"status": "passed", "peaks": {"error_ratio": 0.004, "p99": 0.3}}}
    },
    "traffic.watch": {
        "return_value": {
            "watch_seconds": 14400,
            "gate": {
                "status": "passed",
                "samples": 1440,
                "complete_samples": 1438,
                "peaks": {"error_ratio": 0.0062, "p99": 0.41},
                "limits": {"error_ratio": 0.01, "p99": 2.0},
            },
        }
    },
    "validation.latency_slos": {
        "figures": {
            "services": {
                "web-bff": {
                    "slo_class": "business",
                    "budget_ms": 500,
                    "p95_ms": 847.5,
                    "verdict": "breached",
                },
                "auth-frontend": {
                    "slo_class": "health",
                    "budget_ms": 100,
                    "p95_ms": None,
                    "verdict": "no traffic",
                },
            }
        }
    },
    "validation.security": {
        "return_value": {
            "problems": [],
            "active_colors": {"web-bff": "blue"},
            "replication_kept": {"source": ["subscription:pyairtable_rollback"]},
            "documents_searched": 185,
        }
    },
    "services.frontend.web-bff.promote": {"return_value": {"rolled_back_from": {"color": "green", "at": 3}}},
    "switchover.approve": {
        "return_value": {
            "approved": True,
            "by": "oncall-primary",
            "answered_at": "2026-12-03T02:14:07+00:00",
            "timed_out": False,
        }
    },
}
# Prometheus's series as collect() gathers them: [epoch seconds, value].
SERIES: dict[str, Any] = {
    "gates": {
        "traffic.shift_to_10": {
            "bake_start": 1000.0,
            "bake_end": 1015.0,
            "error_ratio": [[998.0, 0.0], [1004.0, 0.002], [1010.0, 0.001], [1016.0, 0.0]],
            "p99": [[998.0, 0.1], [1004.0, 0.2], [1010.0, 0.15], [1016.0, 0.12]],
        }
    },
    "writes": {
        "query": "sum(rate(writes_total[5s]))",
        "switch_start": 2000.0,
        "switch_end": 2001.5,
        "points": [[1990.0 + i, 200.0 - (40 if i == 11 else 0)] for i in range(30)],
    },
}


def test_report_html_holds_the_figures_and_is_self_contained() -> None:
    tasks = [
        {"task_id": "switchover.switch_database", "phase": "switchover", "state": "success", "duration": 2.5},
        {"task_id": "validation.latency_slos", "phase": "validation", "state": "failed", "duration": 0.4},
    ]
    data = build_data(
        dag_id="d", run_id="r<1>", mode="apply", started=None, tasks=tasks, xcoms=XCOMS, series=SERIES
    )
    assert data["write_stall_ms"] == 181.4
    assert data["replication_lag_bytes"] == [5000, 2400, 800, 120, 0]
    assert [(s["weight"], s["error_ratio"]) for s in data["traffic"]] == [(10, 0.001), (100, 0.004)]
    assert (data["watch"]["watch_seconds"], data["watch"]["error_ratio"]) == (14400, 0.0062)
    assert any("rolled_back_from" in line for line in data["rolled_back"])
    assert "validation.latency_slos: failed" in data["rolled_back"]
    assert data["approvals"] == [
        {
            "task_id": "switchover.approve",
            "approved": True,
            "by": "oncall-primary",
            "answered_at": "2026-12-03T02:14:07+00:00",
            "timed_out": False,
        }
    ]
    page = parse(render_html(data))
    text = " ".join(page.text)
    assert "181.4 ms" in text and "847.5" in text and "web-bff" in text and "r<1>" in text
    assert "oncall-primary" in text and "2026-12-03T02:14:07+00:00" in text
    # The watch after the cutover is a gate of the table too, with how long it watched.
    assert "watch after 100 % for 14400 s (traffic.watch)" in text and "1438 of 1440 complete" in text
    assert {
        "summary",
        "phases",
        "lag",
        "switchover",
        "approvals",
        "traffic",
        "latency",
        "validation",
        "rollback",
    } <= page.ids
    assert page.scripts == 0
    # Charts: phases, lag, writes around the switchover, two panels per gate with series, latency bars.
    assert page.svgs >= 6
    assert "limit 1" in text and "limit 2" in text, "each gate panel draws its limit (1 %, 2 s)"
    assert "switch_database (stall 181.4 ms inside)" in text
    # Every service's SLO, with units and a verdict; one without traffic says so.
    assert "847.5 ms" in text and "< 500 ms" in text and "FAIL" in text and "no requests" in text


def test_no_table_cell_holds_raw_data() -> None:
    """Tables have named columns and words: no cell holds a JSON object or list."""
    tasks = [{"task_id": "validation.security", "phase": "validation", "state": "success", "duration": 1.0}]
    data = build_data(
        dag_id="d", run_id="r", mode="apply", started=None, tasks=tasks, xcoms=XCOMS, series=SERIES
    )
    page = parse(render_html(data))
    assert page.cells
    for cell in page.cells:
        text = cell.strip()
        assert not re.search(r"[{}\[\]]", text), f"raw data in a cell: {text!r}"
        with contextlib.suppress(ValueError):
            assert not isinstance(json.loads(text), dict | list), f"JSON in a cell: {text!r}"


@pytest.mark.usefixtures("airflow_db")
def test_report_task_writes_html_and_json_per_run(tmp_path: Path) -> None:
    with DAG("report_test", schedule=None, params={"mode": "apply"}) as dag:
        with TaskGroup("switchover"):

            @task(task_id="switch_database")
            def switch() -> dict[str, Any]:
                return {"write_stall_ms": 123.4, "changed": True}

            switched = switch()
        with TaskGroup("validation"):
            report = MigrationReportOperator(task_id="report", report_dir=str(tmp_path))
        switched >> report
    run = registered(dag).test(run_conf={"mode": "apply"})
    assert run.state == "success"
    html_files = list(tmp_path.glob("report_report_test_*.html"))
    json_files = list(tmp_path.glob("report_report_test_*.json"))
    assert len(html_files) == 1 and len(json_files) == 1
    data = json.loads(json_files[0].read_text())
    assert data["write_stall_ms"] == 123.4
    assert [(t["task_id"], t["state"]) for t in data["tasks"]] == [("switchover.switch_database", "success")]
    assert data["phases"][0]["phase"] == "switchover"
    page = parse(html_files[0].read_text())
    assert "123.4 ms" in " ".join(page.text)
    # the task's "Migration report" extra link points at the file
    assert (
        xcom(run, "validation.report", MigrationReportLink.key) == f"/pyairtable-reports/{html_files[0].name}"
    )


@pytest.fixture
def reports_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Path]]:
    """The reports plugin app mounted as Airflow's api-server mounts it, beside Airflow's auth manager,
    called in-process; the config's report_dir is `tmp_path`."""
    from airflow.api_fastapi.app import init_auth_manager, purge_cached_app
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from pyairtable_migration.report import REPORTS_URL_PREFIX
    from pyairtable_migration.reports_app import app

    config = tmp_path / "migration.yaml"
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    document.setdefault("validation", {})["report_dir"] = str(tmp_path)
    config.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("PYAIRTABLE_MIGRATION_CONFIG", str(config))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "a-test-secret-" + "x" * 64)
    (tmp_path / "report_x_run1.html").write_text("<html>stall 12.5 ms</html>")
    site = FastAPI()
    init_auth_manager(site)
    site.mount(REPORTS_URL_PREFIX, app)
    with TestClient(site) as client:
        yield client, tmp_path
    purge_cached_app()


def login_token() -> str:
    """What Airflow's login hands the browser (the `_token` cookie): a JWT for the admin."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin")))


def test_reports_are_refused_without_a_login(reports_site: tuple[Any, Path]) -> None:
    client, _ = reports_site
    answer = client.get("/pyairtable-reports/report_x_run1.html")
    assert answer.status_code == 401 and "stall" not in answer.text
    # A browser is sent to Airflow's login page, which brings it back to the report.
    browser = client.get(
        "/pyairtable-reports/report_x_run1.html", headers={"Accept": "text/html"}, follow_redirects=False
    )
    assert browser.status_code == 303
    assert browser.headers["location"].startswith("/auth/login")
    assert "report_x_run1.html" in browser.headers["location"]
    expired = client.get(
        "/pyairtable-reports/report_x_run1.html", headers={"Authorization": "Bearer nonsense"}
    )
    assert expired.status_code == 401


def test_airflow_serves_the_report_files_and_nothing_else(reports_site: tuple[Any, Path]) -> None:
    """Logged in (the UI's cookie, or a bearer token): the config's report_dir, only report files."""
    client, _ = reports_site
    token = login_token()
    answer = client.get("/pyairtable-reports/report_x_run1.html", cookies={"_token": token})
    assert answer.status_code == 200 and "stall 12.5 ms" in answer.text
    client.cookies.clear()
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/pyairtable-reports/report_x_run1.html", headers=bearer).status_code == 200
    assert client.get("/pyairtable-reports/report_x_missing.html", headers=bearer).status_code == 404
    assert client.get("/pyairtable-reports/migration.yaml", headers=bearer).status_code == 404
    assert client.get("/pyairtable-reports/..%2Fmigration.yaml", headers=bearer).status_code == 404
