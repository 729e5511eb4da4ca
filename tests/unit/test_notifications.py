"""Notifications reach a real SMTP server (aiosmtpd, started here on loopback) and a local Slack
webhook endpoint, through Airflow's own notifiers and connections; nothing configured sends nothing.

The approval and failure mails come from dag.test() runs of small DAGs built by the project's
builder (build_plan_dag) from real operators; the gate breach from the real DAG's failure callback
on the exception the real weight step raises.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, ClassVar
from urllib.parse import quote

import pytest
import yaml
from aiosmtpd.controller import Controller
from airflow.providers.standard.operators.hitl import HITLOperator

from lab.settings import free_ports
from lab.synthetic_graph import real_document
from pyairtable_migration.builder import build_migration_dag, build_plan_dag, run_params
from pyairtable_migration.config import MigrationConfig, NotificationsConfig, load_config, parse_config
from pyairtable_migration.notifications import GateBreached, MigrationNotifier, notifiers
from pyairtable_migration.plan import MigrationPlan, Step
from pyairtable_migration.problems import ConfigError
from pyairtable_migration.rollback import build_rollback_dag
from pyairtable_migration.triggers.traffic import Gate, GateSample
from tests.dagrun import Responder, registered, run_id_at, task_states
from tests.watchdog import helper_thread

BASE_URL = "http://airflow.example.com:8080"
SMTP_CONN = "notify_smtp"
SLACK_CONN = "notify_slack"
SLACK_TOKEN_PATH = "/services/T0NOTIFY/B0NOTIFY/s3cr3tWebhookToken"
SMTP = {
    "smtp": {"smtp_conn_id": SMTP_CONN, "to": ["oncall@example.com"], "from_email": "airflow@example.com"}
}


class Inbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.arrived:
            self.messages.append(message)
            self.arrived.notify_all()
        return "250 OK"

    def wait_for(self, count: int, seconds: float = 10) -> list[EmailMessage]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout=seconds)
            return list(self.messages)

    @staticmethod
    def body(message: EmailMessage) -> str:
        part = message.get_body(("html", "plain"))
        assert part is not None
        return str(part.get_content())


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    """A real SMTP server on loopback (aiosmtpd, in this process)."""
    (port,) = free_ports(1)
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, box
    finally:
        controller.stop()


@pytest.fixture
def inbox(smtp_server: tuple[int, Inbox], monkeypatch: pytest.MonkeyPatch) -> Inbox:
    """An empty inbox, the Airflow connection pointing at it, and the UI's base URL."""
    port, box = smtp_server
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{SMTP_CONN.upper()}", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    box.messages.clear()
    return box


def run_link(dag_id: str, run_id: str) -> str:
    return f"{BASE_URL}/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def config_with(notifications: dict[str, Any]) -> MigrationConfig:
    document = real_document()
    document["notifications"] = notifications
    return parse_config(yaml.safe_dump(document))


def tiny_dag(dag_id: str, step: Step, settings: dict[str, Any], on_success: str | None = None) -> Any:
    """One step's DAG, built as the migration's is (build_plan_dag) with the real run params, and
    `settings` as its notifications section."""
    plan = MigrationPlan()
    plan.add(step)
    dag = build_plan_dag(
        dag_id,
        plan,
        params=run_params(load_config()),
        doc_md="",
        description="notifications test",
        tags=["test"],
        notifications=NotificationsConfig.model_validate(settings),
        on_success=on_success,
    )
    return registered(dag)


REFUSING_STEP = Step(
    "check_params",
    "check the run parameters",
    operator="pyairtable_migration.operators.params.CheckRunParamsOperator",
    arguments={"configured_steps": [10, 25, 50, 75, 100], "rollback_dag_id": "notify_rollback"},
)
# A weight outside the configured steps: refused at once (no retry), as a bad trigger is.
REFUSED_CONF = {"mode": "plan", "traffic_steps": [10, 30, 100]}


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("airflow_db")
def test_an_approval_waiting_is_mailed_with_its_question_and_link_and_the_run_done_after(
    inbox: Inbox,
) -> None:
    step = Step(
        "approve",
        "ask for the switchover",
        operator="pyairtable_migration.operators.switchover.SwitchoverApprovalOperator",
        arguments={"notifications": SMTP},
    )
    dag = tiny_dag("notify_approval", step, SMTP, on_success="migration_done")
    when = datetime.now(UTC)
    run_id = run_id_at(when)
    responder = Responder(dag.dag_id, run_id, "approve", "Approve")
    stop = threading.Event()

    def answer_once_mailed() -> None:
        # The notice goes out as the task starts waiting: the answer comes only after it arrived.
        assert inbox.wait_for(1, seconds=60), "no approval mail while the approval waits"
        responder.answer(stop)

    helper = helper_thread(answer_once_mailed, "responder")
    started = time.monotonic()
    run = dag.test(run_conf={"mode": "apply"}, logical_date=when, run_after=when)
    stop.set()
    helper.join(timeout=10)
    assert run.state == "success", task_states(run)
    waiting, done = inbox.wait_for(2)[:2]
    link = run_link(dag.dag_id, run_id)
    assert waiting["Subject"] == "Approval waiting: Switch PyAirtable's database writes to production?"
    assert waiting["To"] == "oncall@example.com" and waiting["From"] == "airflow@example.com"
    body = Inbox.body(waiting)
    assert f"{link}/tasks/approve/required_actions" in body
    assert "**Reject** leaves writers on staging" in body
    assert "notify_approval" in body and "apply" in body
    assert done["Subject"] == f"Migration done: {run_id}"
    assert link in Inbox.body(done)
    print(f"approval run with two mails: {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("airflow_db")
def test_a_failed_task_is_mailed_with_its_exception_and_link(inbox: Inbox) -> None:
    dag = tiny_dag("notify_failure", REFUSING_STEP, SMTP)
    when = datetime.now(UTC)
    run = dag.test(run_conf=REFUSED_CONF, logical_date=when, run_after=when)
    assert run.state == "failed"
    (failed,) = inbox.wait_for(1)
    assert failed["Subject"] == "Task failed in notify_failure: check_params"
    body = Inbox.body(failed)
    assert f"{run_link(dag.dag_id, run_id_at(when))}/tasks/check_params" in body
    assert "AirflowFailException: run parameters refused" in body
    assert "traffic_steps: [30] not among the configured steps [10, 25, 50, 75, 100]" in body
    # One failure, one mail: no retry of a refusal, no second notice for the run.
    time.sleep(1)
    assert len(inbox.messages) == 1


@pytest.mark.timeout(60)
def test_a_gate_breach_is_mailed_as_a_breach_with_the_gates_figures(inbox: Inbox) -> None:
    """The real DAG's weight step fails after its revert; its failure callback tells the breach."""
    dag = build_migration_dag(config_with(SMTP))
    step: Any = dag.get_task("traffic.shift_to_25")
    gate = Gate({"error_ratio": 0.05, "p99": 0.5}, consecutive=2)
    for at, ratio in (("12:00:01", 0.31), ("12:00:03", 0.42)):
        gate.add(GateSample(at, {"error_ratio": ratio, "p99": 0.21}))
    event = {
        "status": "insync",
        "insync_seconds": 1.5,
        "carry": {"gate": gate.verdict(25), "revert_change_id": "C42"},
    }
    with pytest.raises(GateBreached) as raised:
        step.fail_after_revert({}, event)
    assert "Traffic reverted to staging (production 0 / staging 100" in str(raised.value)
    run_id = "manual__2026-12-03T12:00:00+00:00"
    context = {
        "dag": dag,
        "run_id": run_id,
        "ti": SimpleNamespace(task_id=step.task_id, try_number=1),
        "task": step,
        "params": {"mode": "apply"},
        "exception": raised.value,
    }
    for callback in step.on_failure_callback:
        callback(context)
    (breach,) = inbox.wait_for(1)
    assert breach["Subject"] == (
        "Gate breach in pyairtable_production_migration: traffic.shift_to_25, traffic back on staging"
    )
    body = Inbox.body(breach)
    assert f"{run_link(dag.dag_id, run_id)}/tasks/traffic.shift_to_25" in body
    assert "0.42 (max 0.05)" in body and "0.21 s (max 0.5 s)" in body
    assert "25 % to production when the gate tripped" in body
    assert "change C42, INSYNC after 1.5 s" in body


class Webhook(BaseHTTPRequestHandler):
    """A Slack incoming webhook stand-in: keeps each POSTed JSON payload and its path."""

    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append((self.path, json.loads(self.rfile.read(length))))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.timeout(60)
def test_slack_is_told_when_a_rollback_starts_and_fails_and_the_webhook_url_is_never_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    helper_thread(server.serve_forever, "webhook")
    url = f"http://127.0.0.1:{server.server_address[1]}{SLACK_TOKEN_PATH}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{SLACK_CONN.upper()}", json.dumps({"conn_type": "slackwebhook", "password": url})
    )
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    Webhook.received.clear()
    caplog.set_level("DEBUG")
    try:
        dag = build_rollback_dag(config_with({"slack": {"slack_webhook_conn_id": SLACK_CONN}}))
        check: Any = dag.get_task("check_run")
        run_id = "manual__2026-12-03T13:00:00+00:00"
        params = {"mode": "plan", "scope": "traffic", "services": [], "from_phase": "traffic"}
        context: Any = {
            "dag": dag,
            "run_id": run_id,
            "params": params,
            "ti": SimpleNamespace(task_id="check_run"),
        }
        assert check.execute(context) == {"mode": "plan", "scope": "traffic"}
        # The failure callback as the dag-processor calls it: the DAG, the run and the reason only.
        failure_callbacks: Any = dag.on_failure_callback
        for callback in failure_callbacks:
            callback({"dag": dag, "run_id": run_id, "reason": "task_failure"})
    finally:
        server.shutdown()
    (started_path, started), (failed_path, failed) = Webhook.received
    assert started_path == failed_path == SLACK_TOKEN_PATH
    link = f"<{run_link(dag.dag_id, run_id)}|Open in Airflow>"
    assert started["text"].startswith(f"*Rollback started: {run_id} (scope traffic)*")
    assert "mode: plan" in started["text"] and link in started["text"]
    assert failed["text"].startswith(f"*Rollback FAILED: {run_id}*")
    assert "reason: task_failure" in failed["text"] and link in failed["text"]
    assert dag.on_success_callback, "a rollback that ends well is told too"
    logged = caplog.text + "".join(capfd.readouterr())
    assert "s3cr3tWebhookToken" not in logged


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("airflow_db")
def test_without_notifiers_nothing_is_attached_sent_or_raised(inbox: Inbox) -> None:
    config = load_config()
    assert config.notifications == NotificationsConfig()  # the shipped config tells nobody
    migration, rollback = build_migration_dag(config), build_rollback_dag(config)
    for dag in (migration, rollback):
        assert not dag.on_success_callback and not dag.on_failure_callback, dag.dag_id
        assert not [t.task_id for t in dag.tasks if t.on_failure_callback or t.on_execute_callback]
    approvals = [t for t in migration.tasks if isinstance(t, HITLOperator)]
    assert approvals and all(t.notifiers == [] for t in approvals)
    assert notifiers(None, "task_failed") == notifiers({}, "task_failed") == []
    run = tiny_dag("notify_nobody", REFUSING_STEP, {}).test(run_conf=REFUSED_CONF)
    assert run.state == "failed"
    time.sleep(1)
    assert inbox.messages == []


def test_a_notice_that_cannot_be_sent_is_logged_and_fails_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    (closed,) = free_ports(1)
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": closed,
        "extra": {"retry_limit": 0, "timeout": 2},
    }
    monkeypatch.setenv("AIRFLOW_CONN_NOTIFY_DOWN", json.dumps(connection))
    notifier = MigrationNotifier(
        "task_failed", {"smtp": {"smtp_conn_id": "notify_down", "to": ["oncall@example.com"]}}
    )
    context: Any = {
        "run_id": "manual__x",
        "ti": SimpleNamespace(task_id="t", try_number=2),
        "exception": ValueError("x"),
    }
    started = time.monotonic()
    notifier(context)
    assert time.monotonic() - started < 10
    # Airflow's logging goes to the capture or, once a dag.test() configured it, to stdout.
    logged = caplog.text + "".join(capfd.readouterr())
    assert "Could not notify through smtp notify_down: ConnectionRefusedError" in logged


def test_a_bad_notifications_section_is_refused_naming_each_field() -> None:
    document = real_document()
    document["notifications"] = {
        "smtp": {"smtp_conn_id": "mail", "password": "hunter2"},
        "slack": {"webhook_url": "https://hooks.slack.com/services/T/B/X"},
    }
    with pytest.raises(ConfigError) as refused:
        parse_config(yaml.safe_dump(document))
    assert refused.value.problems == [
        "notifications.smtp.to: missing (required)",
        "notifications.smtp.password: unknown field",
        "notifications.slack.slack_webhook_conn_id: missing (required)",
        "notifications.slack.webhook_url: unknown field",
    ]
    document["notifications"] = {"smtp": {"smtp_conn_id": "mail", "to": []}}
    with pytest.raises(ConfigError, match=r"notifications\.smtp\.to: List should have at least 1 item"):
        parse_config(yaml.safe_dump(document))
    document["notifications"] = {"smtp": {"smtp_conn_id": "mail", "to": ["oncall"]}}
    with pytest.raises(ConfigError, match=r"notifications\.smtp\.to\.0: .* \(got 'oncall'\)"):
        parse_config(yaml.safe_dump(document))
