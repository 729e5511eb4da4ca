"""The migration driven from the Airflow UI in Chromium, as the on-call engineer would drive it.

The session's Airflow deployment (tests/airflow_lab.py) runs the DAG against a throwaway lab under
load. Every action is the browser's: trigger from the trigger form, approve from Required Actions,
reparse from the DAG page, clear from the task page. The REST API only says when to look and checks
what the UI showed.

One run, as a hard night goes. It starts with a fault: web-bff's production image is `-5xx` (its
pods answer 500). Its smoke test fails, which the graph shows; the automatic containment holds (the
active Service, DNS and the pooler are where they were). Traffic never moved, so the rollback DAG
is not triggered: it would also undo the replication the cleared run goes on with. After the image
is fixed in the config and the DAG reparsed, clearing web-bff's deploy with downstream (the smoke
test alone would only test the same bad pods again) makes the run go on. The dags-folder bundle is
unversioned, so a cleared task always runs what the dag-processor parsed last: the clear dialog has
no "Run with latest bundle version" to tick.

From there: the form's mode, approvals and bake time hold; both approvals are answered in the UI;
the Graph view is watched through the cutover (screenshots of the traffic phase are kept in
test-artifacts/browser/); the run succeeds and the report task's "Migration report" link opens the
report, whose figures match the run's XCom; the same address without a session is refused.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from lab.airflow_server import ADMIN, AirflowServer
from lab.connections import connections_in_environment
from lab.migration_config import write_lab_config
from pyairtable_migration.config import MigrationConfig, load_config
from pyairtable_migration.links import MigrationReportLink
from pyairtable_migration.plan import PHASES
from pyairtable_migration.status import collect
from tests.airflow_lab import MIGRATION_DAG, AirflowLab
from tests.browser.airflow_ui import AirflowUI
from tests.browser.conftest import REPORT_SETTING

pytestmark = [pytest.mark.lab, pytest.mark.real_airflow]

BAKE_SECONDS = 3
APPROVALS = ("switchover.approve", "traffic.approve_100")
FAULTY_SERVICE = "web-bff"
FIXED_IMAGE = load_config().deployable[FAULTY_SERVICE].image
FAULTY_IMAGE = f"{FIXED_IMAGE}-5xx"
GROUP = f"services.frontend.{FAULTY_SERVICE}"
DEPLOY, SMOKE_TEST, PROMOTE = (f"{GROUP}.{step}" for step in ("deploy", "smoke_test", "promote"))
DONE = ("success", "skipped")
RUN_TIMEOUT = 1200


def configure(lab: AirflowLab, ui: AirflowUI, image: str) -> MigrationConfig:
    """Write the lab's config (reports among the artifacts, the service's image), reparse from the UI,
    and wait until the DAG Airflow serves was built from it (its task docs name the image)."""
    path = write_lab_config(
        lab.settings,
        {
            ("validation", "report_dir"): REPORT_SETTING,
            ("services", FAULTY_SERVICE, "image"): image,
        },
    )
    ui.reparse()

    def parsed() -> bool:
        deploy = lab.server.api("GET", f"dags/{MIGRATION_DAG}/tasks/{DEPLOY}")["doc_md"]
        report = lab.server.api("GET", f"dags/{MIGRATION_DAG}/tasks/validation.report")["doc_md"]
        return f"deploy {image} as" in deploy and REPORT_SETTING in report

    lab.server.wait(f"the DAG parsed with {image}", parsed, timeout=300, poll=2)
    return load_config(path)


def systems(lab: AirflowLab, config: MigrationConfig) -> dict[str, Any]:
    """What the systems themselves say (pyairtable_migration.status), every part readable."""
    with connections_in_environment(lab.settings):
        status = collect(config)
    unreadable = {name: part["error"] for name, part in status.items() if "error" in part}
    assert not unreadable, unreadable
    return status


def weights(status: dict[str, Any]) -> set[tuple[int, int]]:
    """(production, staging) weight of every record."""
    return {(sets["production"]["weight"], sets["staging"]["weight"]) for sets in status["dns"].values()}


def xcom(server: AirflowServer, run_id: str, task_id: str, key: str = "return_value") -> Any:
    path = f"dags/{MIGRATION_DAG}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
    return server.api("GET", path)["value"]


def not_done(server: AirflowServer, run_id: str) -> dict[str, str]:
    tasks = server.task_instances(MIGRATION_DAG, run_id)
    return {task_id: ti["state"] for task_id, ti in tasks.items() if ti["state"] not in DONE}


def answer_taken(server: AirflowServer, run_id: str, task_id: str) -> bool:
    return bool(server.task_instance(MIGRATION_DAG, run_id, task_id)["state"] != "awaiting_input")


def assert_graph_succeeded(ui: AirflowUI, run_id: str) -> None:
    ui.show_graph(run_id)
    for phase in PHASES:
        expect(ui.badge(phase)).to_have_text("success")


@pytest.mark.timeout(2400)
def test_a_faulty_image_contained_then_cleared_and_the_run_approved_in_the_ui_to_its_report(
    airflow_deployment: AirflowLab, ui: AirflowUI, artifacts: Path
) -> None:
    lab, server = airflow_deployment, airflow_deployment.server
    began = time.monotonic()
    lab.fresh()
    config = configure(lab, ui, FAULTY_IMAGE)
    before = systems(lab, config)
    run_id = ui.trigger(mode="apply", require_approvals=True, bake_seconds=BAKE_SECONDS)
    conf = server.api("GET", f"dags/{MIGRATION_DAG}/dagRuns/{run_id}")["conf"]
    assert (conf["mode"], conf["require_approvals"], conf["bake_seconds"]) == ("apply", True, BAKE_SECONDS)
    ui.rest()

    def failed() -> list[str]:
        return sorted(server.task_instances(MIGRATION_DAG, run_id, states=("failed",)))

    assert server.wait("a task to fail", failed, timeout=RUN_TIMEOUT) == [SMOKE_TEST]
    ui.show_graph(run_id, expand=("services", "services.frontend", GROUP))
    expect(ui.badge(SMOKE_TEST)).to_have_text("failed")
    ui.screenshot(artifacts / "graph-smoke_test-failed.png", close_up=GROUP)
    assert server.wait_for_run(MIGRATION_DAG, run_id, timeout=RUN_TIMEOUT) == "failed"

    # Contained: the bad color never became active, nothing moved to production.
    contained = systems(lab, config)
    assert contained["services"][FAULTY_SERVICE]["color"] == before["services"][FAULTY_SERVICE]["color"]
    assert contained["services"][FAULTY_SERVICE]["image"] != FAULTY_IMAGE
    assert weights(contained) == {(0, 100)}
    assert {p["points_at"] for p in contained["database"]["poolers"].values()} == {"source"}

    config = configure(lab, ui, FIXED_IMAGE)
    ui.clear_with_downstream(run_id, DEPLOY, expected=(SMOKE_TEST, PROMOTE))
    server.wait("the run to start again", lambda: server.run_state(MIGRATION_DAG, run_id) != "failed", 120)
    # The graph is watched during the cutover; before it, the page rests (a live graph of 130 tasks
    # re-renders on every refresh, and the machine's two cores are shared with the run itself). Only
    # now: the clear dialog closes before its request is answered, and leaving would drop it.
    ui.rest()

    shifts = [f"traffic.shift_to_{weight}" for weight in config.traffic.steps]
    answered: list[str] = []
    shots: dict[str, list[Path]] = {}
    graph: list[bool] = []

    def watch() -> str | None:
        """One look: answer an approval that waits, photograph a traffic step the graph shows working."""
        state = server.run_state(MIGRATION_DAG, run_id)
        if state in ("success", "failed"):
            return state
        tasks = {
            task_id: server.task_instance(MIGRATION_DAG, run_id, task_id)
            for task_id in ("traffic.lower_ttl", *APPROVALS)
        }
        if not graph and tasks["traffic.lower_ttl"]["state"] not in (None, "scheduled", "queued"):
            ui.show_graph(run_id, expand=("traffic",))
            graph.append(True)
        for task_id in APPROVALS:
            if tasks[task_id]["state"] != "awaiting_input" or task_id in answered:
                continue
            if task_id.startswith("traffic."):
                # Mid-cutover for certain: production at the last step before 100 %, waiting for a person.
                expect(ui.badge(task_id)).to_have_text("awaiting_input")
                shots[task_id] = ui.screenshot(
                    artifacts / f"graph-{task_id}-awaiting_input.png", close_up="traffic"
                )
            ui.approve(run_id, task_id)
            answered.append(task_id)
            server.wait(
                f"{task_id} to take the answer",
                functools.partial(answer_taken, server, run_id, task_id),
                timeout=120,
            )
            if graph:
                ui.show_graph(run_id, expand=("traffic",))
            else:
                ui.rest()
        if not graph:
            return None
        for task_id in shifts:
            shown = ui.shown_state(task_id)
            if shown in ("running", "deferred") and task_id not in shots:
                shots[task_id] = ui.screenshot(artifacts / f"graph-{task_id}-{shown}.png", close_up="traffic")
        return None

    state = server.wait("the run to end", watch, timeout=RUN_TIMEOUT)
    assert state == "success", server.failures(MIGRATION_DAG, run_id)
    assert not_done(server, run_id) == {}
    assert server.tries(MIGRATION_DAG, run_id, SMOKE_TEST) == {1: "failed", 2: "success"}
    assert answered == list(APPROVALS)
    for task_id in APPROVALS:
        answer = xcom(server, run_id, task_id)
        assert (answer["approved"], answer["by"], answer["timed_out"]) == (True, ADMIN, False), (
            task_id,
            answer,
        )
        assert answer["answered_at"], (task_id, answer)
    assert_graph_succeeded(ui, run_id)
    migrated = systems(lab, config)
    assert migrated["services"][FAULTY_SERVICE]["image"] == FIXED_IMAGE
    assert weights(migrated) == {(100, 0)}
    assert {p["points_at"] for p in migrated["database"]["poolers"].values()} == {"target"}

    # Screenshots of the graph mid-cutover: at the approval before 100 %, and during a weight step.
    assert "traffic.approve_100" in shots, sorted(shots)
    assert set(shots) & set(shifts), sorted(shots)
    saved = [path for paths in shots.values() for path in paths]
    assert all(path.is_file() and path.stat().st_size > 0 for path in saved), saved

    report = ui.open_extra_link(run_id, "validation.report", MigrationReportLink.name)
    # Served by Airflow's own api-server (the project's reports_app plugin), on the UI's origin.
    assert report.url == server.url + xcom(server, run_id, "validation.report", MigrationReportLink.key)
    stall = xcom(server, run_id, "switchover.switch_database")["write_stall_ms"]
    expect(report.locator("#write-stall")).to_have_text(f"{stall} ms")
    expect(report.get_by_text(run_id).first).to_be_visible()
    for phase in PHASES:
        expect(report.locator("#phases").get_by_role("cell", name=phase, exact=True)).to_be_visible()
    # Who answered each approval, named in the report.
    expect(report.locator("#approvals").get_by_role("cell", name=ADMIN, exact=True)).to_have_count(
        len(APPROVALS)
    )
    report.screenshot(path=artifacts / "report.png", full_page=True)
    report_url = report.url
    report.close()
    # Only a logged-in user reads it: without a session the browser lands on Airflow's login page,
    # and a client that is no browser gets 401.
    assert ui.page.context.browser is not None
    stranger = ui.page.context.browser.new_context()
    try:
        page = stranger.new_page()
        page.goto(report_url)
        page.wait_for_url(lambda url: "/auth/login" in url)
        expect(page.locator("input[name=username]")).to_be_visible()
        expect(page.get_by_text(run_id)).to_have_count(0)
        assert stranger.request.get(report_url, max_redirects=0).status == 401
    finally:
        stranger.close()
    print(f"\nthe run: {time.monotonic() - began:.0f} s; screenshots: {[p.name for p in saved]}")
