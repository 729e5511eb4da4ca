"""The migration report: written per run, opens as HTML, holds the run's figures."""

from __future__ import annotations

import json
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
    """Collects text, ids and svg elements, and checks every opened element is closed."""

    VOID = frozenset({"meta", "br", "img", "input", "hr", "link", "line", "rect", "polyline"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.ids: set[str] = set()
        self.svgs = 0
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)
        self.svgs += tag == "svg"
        self.scripts += tag == "script"
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svgs += tag == "svg"

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


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
        "return_value": {"gate": {"status": "passed", "peaks": {"error_ratio": 0.001, "p99": 0.2}}}
    },
    "traffic.shift_to_100": {
        "return_value": {"gate": {"status": "passed", "peaks": {"error_ratio": 0.004, "p99": 0.3}}}
    },
    "validation.latency_slos": {
        "figures": {
            "services": {
                "web-bff": {"slo_class": "business", "budget_ms": 500, "p95_ms": 847.5, "verdict": "breached"}
            }
        }
    },
    "services.frontend.web-bff.promote": {"return_value": {"rolled_back_from": "green"}},
}


def test_report_html_holds_the_figures_and_is_self_contained() -> None:
    tasks = [
        {"task_id": "switchover.switch_database", "phase": "switchover", "state": "success", "duration": 2.5},
        {"task_id": "validation.latency_slos", "phase": "validation", "state": "failed", "duration": 0.4},
    ]
    data = build_data(dag_id="d", run_id="r<1>", mode="apply", started=None, tasks=tasks, xcoms=XCOMS)
    assert data["write_stall_ms"] == 181.4
    assert data["replication_lag_bytes"] == [5000, 2400, 800, 120, 0]
    assert [(s["weight"], s["error_ratio"]) for s in data["traffic"]] == [(10, 0.001), (100, 0.004)]
    assert any("rolled_back_from" in line for line in data["rolled_back"])
    assert "validation.latency_slos: failed" in data["rolled_back"]
    page = parse(render_html(data))
    text = " ".join(page.text)
    assert "181.4 ms" in text and "847.5" in text and "web-bff" in text and "r<1>" in text
    assert {"summary", "phases", "lag", "traffic", "latency", "validation", "rollback"} <= page.ids
    assert page.svgs >= 4 and page.scripts == 0


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


def test_airflow_serves_the_report_files_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The api-server plugin app, called in-process: the config's report_dir, only report files."""
    from fastapi.testclient import TestClient

    from pyairtable_migration.reports_app import app

    config = tmp_path / "migration.yaml"
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    document.setdefault("validation", {})["report_dir"] = str(tmp_path)
    config.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("PYAIRTABLE_MIGRATION_CONFIG", str(config))
    (tmp_path / "report_x_run1.html").write_text("<html>stall 12.5 ms</html>")
    client = TestClient(app)
    answer = client.get("/report_x_run1.html")
    assert answer.status_code == 200 and "stall 12.5 ms" in answer.text
    assert client.get("/report_x_missing.html").status_code == 404
    assert client.get("/migration.yaml").status_code == 404, "only report files are served"
    assert client.get("/..%2Fmigration.yaml").status_code == 404
