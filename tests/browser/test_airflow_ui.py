"""The migration driven from the Airflow UI in Chromium through a hard night, then the command line.

The session's Airflow deployment (tests/airflow_lab.py: CeleryExecutor, two workers and one beside
the pooler, as docker-compose.yaml deploys it) runs the DAG against a throwaway lab under load.
Every action of the engineer's is the browser's: trigger from the trigger form, approve from
Required Actions, reparse from the DAG page, clear from the task page. The REST API only says when
to look and checks what the UI showed; the command line (`pyairtable_migration.cli`) runs as the
engineer would run it.

One run, as a hard night goes:
- The preflight alone first, on the fresh lab, nothing after it: triggered from the UI's trigger form
  (mode, approvals, bake time and "Preflight only" as filled in), then `cli validate`.
- `cli migrate` triggers the migration (approvals on).
- The config has a fault: web-bff's production image is `-5xx` (its pods answer 500). Its smoke test
  fails, which the graph shows; the automatic containment holds (the active Service, DNS and the
  pooler are where they were). Traffic never moved, so the rollback DAG is not triggered: it would
  also undo the replication the cleared run goes on with. After the image is fixed in the config
  and the DAG reparsed, clearing web-bff's deploy with downstream (the smoke test alone would only
  test the same bad pods again) makes the run go on. The dags-folder bundle is unversioned, so a
  cleared task always runs what the dag-processor parsed last.
- Faults beside it (a helper thread): when `database.copy_schema` runs, its whole worker is
  SIGKILLed with it and nobody clears anything (the scheduler fails the attempt once its heartbeat
  stops; the retry runs on a surviving worker); during replication, inside the write switchover's
  pooler freeze and during a traffic step, only the task's own process is killed, and the engineer
  does not wait for the retry: a clear (with downstream, as the UI's Clear does) runs it again.
- While the run waits for the switchover's approval, `cli rollback --scope traffic` is refused by the
  rollback DAG's first task under the real scheduler, naming the migration run; nothing moves.
- Both approvals are answered in the UI; the Graph view is watched through the cutover (screenshots
  of the traffic phase are kept in test-artifacts/browser/); the run succeeds with every
  acknowledged write on the target; the report task's "Migration report" link opens the report,
  whose figures match the run's XCom; the same address without a session is refused. Last,
  `traffic.undo` (skipped through this healthy run, the drill's clears included) is cleared alone
  in the UI: every user goes back to staging; the writers and services stay where they are.

After it, on the migrated lab: `cli status`, bad rollback input that triggers nothing, and
`cli rollback --scope all --wait` (the rollback DAG under the real scheduler) puts every writer and
user back on staging, with load running and no write lost.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import pytest
from playwright.sync_api import expect

from lab.airflow_celery import pooler_queues
from lab.airflow_server import ADMIN, AirflowServer
from lab.connections import connections_in_environment, environment
from lab.ledger import check_ledger
from lab.loadgen import LoadProcess, app_dsn
from lab.migration_config import CONFIG_ENV, lab_config_path, write_lab_config
from pyairtable_migration.airflow_rest import AirflowError
from pyairtable_migration.config import MigrationConfig, load_config
from pyairtable_migration.links import MigrationReportLink
from pyairtable_migration.plan import PHASES
from pyairtable_migration.status import collect
from tests.airflow_lab import (
    MIGRATION_DAG,
    ROLLBACK_DAG,
    AirflowLab,
    attempts,
    awaits_retry,
    cli,
    hold_a_transaction,
    kill_attempt,
    pooler_paused,
    printed,
    triggered_run,
)
from tests.browser.airflow_ui import AirflowUI
from tests.browser.conftest import REPORT_SETTING
from tests.watchdog import helper_thread

pytestmark = [pytest.mark.lab, pytest.mark.real_airflow]

BAKE_SECONDS = 3
# How long one look at the run watches the graph for a weight step at work or an approval waiting: each
# step is shown working for its bake and DNS wait (seconds), and the four steps before the approval at
# 100 % are watched without a gap (a look's REST calls between page waits may take as long).
CUTOVER_WATCH_MS = 60_000
APPROVALS = ("switchover.approve", "traffic.approve_100")
FAULTY_SERVICE = "web-bff"
FIXED_IMAGE = load_config().deployable[FAULTY_SERVICE].image
FAULTY_IMAGE = f"{FIXED_IMAGE}-5xx"
GROUP = f"services.frontend.{FAULTY_SERVICE}"
DEPLOY, SMOKE_TEST, PROMOTE = (f"{GROUP}.{step}" for step in ("deploy", "smoke_test", "promote"))
DONE = ("success", "skipped")
RUN_TIMEOUT = 1200
KILLED_WITH_ITS_WORKER = "database.copy_schema"
REPLICATION_TASK = "database.create_subscription"
SWITCHOVER_TASK = "switchover.switch_database"
TRAFFIC_TASK = "traffic.shift_to_25"
FILE_CHECK_TASK = "preflight.check_pooler_files"


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


def dags_parsed(lab: AirflowLab) -> bool:
    try:
        return not lab.server.import_errors() and all(
            lab.server.dag_details(dag_id) for dag_id in (MIGRATION_DAG, ROLLBACK_DAG)
        )
    except AirflowError:
        return False


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


def dumping_schema() -> bool:
    """A task's process waits on its pg_dump: the schema copy is half-way, not about to end (its
    worker killed at that moment cannot have reported the attempt a success)."""
    for process in psutil.process_iter(["name"]):
        if process.info["name"] != "pg_dump":
            continue
        with contextlib.suppress(psutil.Error):
            parent = process.parent()
            if parent is not None and " ".join(parent.cmdline()).startswith("airflow worker -- "):
                return True
    return False


def rollback_runs(lab: AirflowLab) -> int:
    return lab.server.runs(ROLLBACK_DAG, limit=1)[1]


class Drill:
    """The faults of the night, on a helper thread: each kill waits for its task's first attempt to
    run; each killed task process is cleared once it shows up for retry."""

    def __init__(self, lab: AirflowLab, run_id: str) -> None:
        self.lab, self.run_id = lab, run_id
        self.victims: list[str] = []
        self.kills: list[dict[str, Any]] = []

    def kill_its_worker(self, pid: int) -> None:
        victim = self.lab.server.worker_running(pid)
        assert victim is not None, f"no worker of this deployment runs task process {pid}"
        self.victims.append(victim)
        self.lab.server.kill(victim)

    def __call__(self) -> None:
        lab, run_id, server = self.lab, self.run_id, self.lab.server
        self.kills.append(
            kill_attempt(lab, run_id, KILLED_WITH_ITS_WORKER, 1, dumping_schema, kill=self.kill_its_worker)
        )
        paused = pooler_paused(lab)
        release = threading.Event()  # the transaction that holds the switchover's freeze open
        for task_id, moment, when_running in (
            (REPLICATION_TASK, None, None),
            (SWITCHOVER_TASK, paused, functools.partial(hold_a_transaction, lab, release)),
            (TRAFFIC_TASK, None, None),
        ):
            # The switchover checks before it pauses (catalogs, lag), longer on a busy machine.
            self.kills.append(
                kill_attempt(
                    lab, run_id, task_id, 1, moment, when_running, timeout=RUN_TIMEOUT, moment_timeout=120
                )
            )
            if moment is not None:  # killed inside the freeze: nobody resumes the pooler but a re-run
                release.set()
                assert self.kills[-1]["moment_caught"], self.kills
                assert moment(), "the pooler should still be paused after the switchover's process died"
            retrying = functools.partial(awaits_retry, lab, run_id, task_id)
            server.wait(f"{task_id} to be up for retry", retrying, timeout=120)
            assert task_id in server.clear(MIGRATION_DAG, run_id, [task_id])

    def restart_victims(self) -> None:
        """The killed workers back for the test after this one, as a restart policy would."""
        for victim in self.victims:
            self.lab.server.restart(victim)

    def assert_recovered(self, tasks: dict[str, dict[str, Any]]) -> None:
        """The attempt killed with its worker failed there (no heartbeat) and its retry, which nobody
        asked for, succeeded on another worker; each killed task process's attempt failed and the one
        after the clear succeeded; the pooler's tasks ran on the worker beside the pooler."""
        lab, run_id, server = self.lab, self.run_id, self.lab.server
        tries = attempts(lab, run_id, KILLED_WITH_ITS_WORKER)
        assert tries[1]["hostname"] == self.victims[0], tries
        assert tries[1]["state"] in ("failed", "up_for_retry"), tries
        last = tries[max(tries)]
        assert last["state"] == "success" and last["hostname"] != self.victims[0], tries
        for task_id in (REPLICATION_TASK, SWITCHOVER_TASK, TRAFFIC_TASK):
            cleared = server.tries(MIGRATION_DAG, run_id, task_id)
            assert cleared.get(1) in ("failed", "up_for_retry"), (task_id, cleared)
            assert max(cleared) > 1 and cleared[max(cleared)] == "success", (task_id, cleared)
        ran_on = {ti["hostname"] for ti in tasks.values() if ti["hostname"]}
        assert ran_on <= {worker.name for worker in server.workers}, ran_on
        assert len(ran_on | set(self.victims)) >= 2, f"every task ran on one worker: {ran_on}"
        (queue,) = set(pooler_queues(lab_config_path(lab.settings)).values())
        (beside,) = [worker.name for worker in server.workers if worker.queues == (queue,)]
        for task_id in (FILE_CHECK_TASK, SWITCHOVER_TASK):
            assert (tasks[task_id]["queue"], tasks[task_id]["hostname"]) == (queue, beside), tasks[task_id]
        assert not pooler_paused(lab)(), "the re-run switchover resumed the pooler"


def assert_rollback_refused_while_migrating(lab: AirflowLab, migration_run: str) -> None:
    """A rollback triggered from the command line while the migration runs: its first task refuses,
    naming the migration run, and nothing after it starts."""
    run_id = triggered_run(cli(lab, "rollback", "--scope", "traffic"))
    assert lab.server.wait_for_run(ROLLBACK_DAG, run_id, timeout=300) == "failed"
    tasks = lab.server.task_instances(ROLLBACK_DAG, run_id)
    assert tasks["check_run"]["state"] == "failed", tasks["check_run"]
    started = {t: ti["state"] for t, ti in tasks.items() if t != "check_run" and ti["state"] in DONE}
    assert not started, started
    said = lab.server.task_log_tail(ROLLBACK_DAG, run_id, "check_run", 1, lines=40)
    assert f"migration {MIGRATION_DAG} is running: {migration_run}" in said, said


@pytest.mark.timeout(2400)
def test_a_hard_night_in_the_ui_faulty_image_killed_workers_and_tasks_approvals_to_the_report(
    airflow_deployment: AirflowLab, ui: AirflowUI, artifacts: Path
) -> None:
    lab, server = airflow_deployment, airflow_deployment.server
    began = time.monotonic()
    lab.fresh()
    config = configure(lab, ui, FAULTY_IMAGE)
    # The purge took the lab's config away for a while: the DAG files failed to import meanwhile.
    server.wait("both DAGs parsed again after the purge", functools.partial(dags_parsed, lab), timeout=180)
    # The preflight alone, twice: from the UI's trigger form (every field of it held), and from the
    # command line; each checks the fresh lab against the live systems and skips everything after.
    checked_in_the_ui = ui.trigger(
        mode="apply", require_approvals=True, bake_seconds=BAKE_SECONDS, preflight_only=True
    )
    conf = server.run(MIGRATION_DAG, checked_in_the_ui)["conf"]
    assert (conf["mode"], conf["require_approvals"], conf["bake_seconds"]) == ("apply", True, BAKE_SECONDS)
    assert conf["preflight_only"] is True
    assert server.wait_for_run(MIGRATION_DAG, checked_in_the_ui, timeout=600) == "success"
    preflight_only = server.task_instances(MIGRATION_DAG, checked_in_the_ui)
    assert {ti["state"] for t, ti in preflight_only.items() if not t.startswith("preflight.")} == {"skipped"}
    ui.rest()
    checked = cli(lab, "validate", "--timeout", "600", timeout=660)
    assert checked.returncode == 0, printed(checked)
    assert re.search(r"^  PASS +preflight\.check_database$", checked.stdout, re.MULTILINE), printed(checked)
    assert "preflight passed" in checked.stdout and "FAIL" not in checked.stdout, printed(checked)

    # The migration from the command line (approvals on: they are answered in the UI).
    before = systems(lab, config)
    run_id = triggered_run(cli(lab, "migrate", "--bake-seconds", str(BAKE_SECONDS)))
    conf = server.run(MIGRATION_DAG, run_id)["conf"]
    assert conf == {"mode": "apply", "require_approvals": True, "bake_seconds": BAKE_SECONDS}, conf
    drill = Drill(lab, run_id)
    drilling = helper_thread(drill, "kills and clears")
    try:
        ui.rest()
        state, shots = the_night(lab, ui, artifacts, config, before, run_id)
        drilling.join(timeout=60)
        assert not drilling.is_alive(), f"the drill did not end with the run: {drill.kills}"
    finally:
        drill.restart_victims()
        # Stopped however the night ends: the next test starts its own load on the same ports.
        figures = lab.stop_load()
    tasks = server.task_instances(MIGRATION_DAG, run_id)
    assert state == "success", (not_done(server, run_id), drill.kills, server.failures(MIGRATION_DAG, run_id))
    assert not_done(server, run_id) == {}
    drill.assert_recovered(tasks)
    # The smoke test failed on the bad image, then passed after the clear. (A try numbered 0 may
    # come first: a task queued to the killed worker, failed by the scheduler before it started.)
    smoke = server.tries(MIGRATION_DAG, run_id, SMOKE_TEST)
    assert smoke[max(smoke)] == "success" and smoke.get(max(smoke) - 1) == "failed", smoke
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
    ledger = lab.ledger(app_dsn(lab.settings))  # through the pooler, which points at the target now
    assert ledger.checked > 0 and ledger.lost == 0, ledger
    assert figures["db_failures"] == 0, figures

    # Screenshots of the graph mid-cutover: at the approval before 100 %, and during a weight step.
    shifts = [f"traffic.shift_to_{weight}" for weight in config.traffic.steps]
    assert "traffic.approve_100" in shots, sorted(shots)
    assert set(shots) & set(shifts), sorted(shots)
    saved = [path for paths in shots.values() for path in paths]
    assert all(path.is_file() and path.stat().st_size > 0 for path in saved), saved
    assert_report_in_the_ui(ui, server, run_id, artifacts)
    assert_clearing_the_traffic_undo_puts_users_back_on_staging(lab, ui, config, run_id, migrated)
    print(
        f"\nthe night: {time.monotonic() - began:.0f} s; screenshots: {[p.name for p in saved]}"
        f"\nkills: {drill.kills}; workers killed: {drill.victims}\nload: {figures}\nledger: {ledger}"
    )


def assert_clearing_the_traffic_undo_puts_users_back_on_staging(
    lab: AirflowLab, ui: AirflowUI, config: MigrationConfig, run_id: str, migrated: dict[str, Any]
) -> None:
    """Clear to undo, from the run's own graph: `traffic.undo` stayed skipped through this run (the
    drill's clear of a traffic step with downstream re-ran it with the phase); cleared alone in the
    UI it puts every user back on staging and touches nothing else: the writers stay on the target,
    every service keeps its color and image."""
    server = lab.server

    def undo_state() -> str:
        return str(server.task_instance(MIGRATION_DAG, run_id, "traffic.undo")["state"])

    assert undo_state() == "skipped"
    ui.clear_with_downstream(run_id, "traffic.undo", expected=())
    server.wait("the cleared undo to run", lambda: undo_state() != "skipped", timeout=60)
    ui.rest()
    assert server.wait_for_run(MIGRATION_DAG, run_id, timeout=300) == "success"
    assert undo_state() == "success", server.task_log_tail(MIGRATION_DAG, run_id, "traffic.undo", 2)
    undone = systems(lab, config)
    assert weights(undone) == {(0, 100)}
    assert undone["database"] == migrated["database"]
    assert undone["services"] == migrated["services"]


def the_night(
    lab: AirflowLab,
    ui: AirflowUI,
    artifacts: Path,
    config: MigrationConfig,
    before: dict[str, Any],
    run_id: str,
) -> tuple[str, dict[str, list[Path]]]:
    """The engineer's side of the run: the failed smoke test seen and contained, the fix, the clear,
    the refused rollback, both approvals and the graph watched; returns the run's end state and the
    screenshots taken."""
    server = lab.server

    def failed() -> list[str]:
        return sorted(server.task_instances(MIGRATION_DAG, run_id, states=("failed",)))

    failed_first = server.wait("a task to fail", failed, timeout=RUN_TIMEOUT)
    assert failed_first == [SMOKE_TEST], server.failures(MIGRATION_DAG, run_id)
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

    configure(lab, ui, FIXED_IMAGE)
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
            if task_id == "switchover.approve":
                assert_rollback_refused_while_migrating(lab, run_id)
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
        if not set(shots) & set(shifts):
            # Until the graph shows a step at work or an approval waiting for a person (answered above).
            wanted: dict[str, tuple[str, ...]] = {shift: ("running", "deferred") for shift in shifts}
            wanted |= {task_id: ("awaiting_input",) for task_id in APPROVALS if task_id not in answered}
            working = ui.node_shown_in(wanted, timeout_ms=CUTOVER_WATCH_MS)
            if working is not None and working in shifts:
                shown = ui.shown_state(working)
                shots[working] = ui.screenshot(artifacts / f"graph-{working}-{shown}.png", close_up="traffic")
        return None

    state = server.wait("the run to end", watch, timeout=RUN_TIMEOUT)
    # A run that ended before an approval: why, from the failed tasks' logs.
    assert answered == list(APPROVALS), (answered, state, server.failures(MIGRATION_DAG, run_id))
    return str(state), shots


def assert_report_in_the_ui(ui: AirflowUI, server: AirflowServer, run_id: str, artifacts: Path) -> None:
    """The report task's link opens the report, whose figures match the run's XCom and which names who
    answered each approval; the same address without a session is refused."""
    report = ui.open_extra_link(run_id, "validation.report", MigrationReportLink.name)
    # Served by Airflow's own api-server (the project's reports_app plugin), on the UI's origin.
    assert report.url == server.url + xcom(server, run_id, "validation.report", MigrationReportLink.key)
    stall = xcom(server, run_id, "switchover.switch_database")["write_stall_ms"]
    expect(report.locator("#write-stall")).to_have_text(f"{stall} ms")
    expect(report.get_by_text(run_id).first).to_be_visible()
    for phase in PHASES:
        expect(report.locator("#phases").get_by_role("cell", name=phase, exact=True)).to_be_visible()
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


@pytest.mark.timeout(900)
def test_the_command_line_shows_status_and_rolls_the_migration_back_under_the_scheduler(
    airflow_deployment: AirflowLab,
) -> None:
    """After the drill's migration: `cli status` shows the writers on the target; bad rollback input
    triggers nothing; `cli rollback --scope all --wait` runs the rollback DAG under the real scheduler
    and puts every writer and user back on staging, with load running and no write lost."""
    lab, server = airflow_deployment, airflow_deployment.server
    # As on the platform: the configured connection ids in the environment (AIRFLOW_CONN_*).
    shown = cli(lab, "status", timeout=180, extra_environment=environment(lab.settings))
    if not re.search(r"^  pooler \S+ -> target:", shown.stdout, re.MULTILINE):
        pytest.skip(f"needs the lab the drill above leaves migrated; status shows:\n{shown.stdout}")
    assert shown.returncode == 0, printed(shown)
    assert f"{MIGRATION_DAG}: " in shown.stdout and "success" in shown.stdout, printed(shown)

    before = rollback_runs(lab)
    for bad, named in (
        (("--services", "web-bff,no-such-service"), "no-such-service"),
        (("--scope", "everything"), "unknown scope 'everything'"),
    ):
        refused = cli(lab, "rollback", *bad)
        assert refused.returncode == 2 and named in refused.stderr, (bad, printed(refused))
    assert rollback_runs(lab) == before, "bad input triggered a rollback"

    ledger_path = lab.settings.data_dir / "rollback-ledger.log"
    lab.load = LoadProcess(
        lab.settings, http_rate=lab.http_rate, db_rate=lab.db_rate, ledger_path=ledger_path
    )
    lab.load.start()
    started = time.monotonic()
    rolled = cli(lab, "rollback", "--scope", "all", "--wait", "--timeout", "600", timeout=700)
    took = time.monotonic() - started
    figures = lab.stop_load()
    output = rolled.stdout + rolled.stderr
    assert rolled.returncode == 0, printed(rolled)
    assert server.password not in output
    run_id = triggered_run(rolled)
    run = server.run(ROLLBACK_DAG, run_id)
    assert run["state"] == "success" and run["conf"] == {"mode": "apply", "scope": "all"}, run
    lines = set(rolled.stdout.splitlines())
    for task_id in ("check_run", "traffic.revert_weights", "database.repoint_poolers", "redis.rollback"):
        assert f"{task_id} -> success" in lines, (task_id, printed(rolled))
    assert figures["db_failures"] == 0, figures

    config_path = lab_config_path(lab.settings)
    with connections_in_environment(lab.settings, **{CONFIG_ENV: str(config_path)}):
        status = collect(load_config(config_path))
    for record, sets in status["dns"].items():
        assert {sid: v["weight"] for sid, v in sets.items()} == {"staging": 100, "production": 0}, record
    assert status["database"]["poolers"], status["database"]
    for name, pooler in status["database"]["poolers"].items():
        assert (pooler["points_at"], pooler["paused"]) == ("source", False), name
    migrated = lab.ledger(app_dsn(lab.settings))  # through the pooler, which points at the source again
    with psycopg2.connect(app_dsn(lab.settings)) as connection:
        during = check_ledger(ledger_path, connection)
    connection.close()
    assert migrated.checked > 0 and migrated.lost == 0, migrated
    assert during.checked > 0 and during.lost == 0, during
    print(
        f"\nrollback {run_id}: {run.get('duration')} s in Airflow, {took:.0f} s for the command"
        f"\nload: {figures}\nledger of the migration: {migrated}\nledger of the rollback: {during}"
    )
