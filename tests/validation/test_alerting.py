"""Alerting end to end: production's rules generated from the config, loaded in the lab's real
Prometheus, and validation.monitoring's test alert through the lab's real Alertmanager to the lab's
alert receiver; a broken route (a second Alertmanager whose receiver nobody listens on) fails it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException

from lab.alert_receiver import received_notifications
from lab.alertmanager import Alertmanager
from lab.migration_config import lab_config
from lab.processes import start_detached, terminate, wait_until_answers
from lab.settings import REPO_ROOT, LabSettings, free_ports
from pyairtable_migration.config import DEFAULT_CONFIG_PATH, load_config
from pyairtable_migration.hooks.prometheus import PrometheusHook
from pyairtable_migration.monitoring.alerts import (
    ERROR_RATIO_ALERT,
    LATENCY_ALERT,
    TARGET_DOWN_ALERT,
    alert_rules,
    expected_rules,
    loaded_rule_problems,
)
from pyairtable_migration.monitoring.delivery import TEST_ALERT_NAME
from pyairtable_migration.monitoring.promql import render_query
from pyairtable_migration.operators.validation import MonitoringOperator
from pyairtable_migration.plan import build_plan
from tests.lab.conftest import lab  # noqa: F401
from tests.validation.test_checks import FakeTI

PROMETHEUS = "pyairtable_prometheus"
ALERTMANAGER = "pyairtable_alertmanager"
STAGING = {"namespace": "pyairtable-staging"}  # the lab's pods at rest: production has none yet


class TryTI(FakeTI):
    try_number = 1


def run_context(mode: str = "apply") -> dict[str, Any]:
    """A task's context with a run id of its own, so each test's alert is new to Alertmanager."""
    return {"params": {"mode": mode}, "ti": TryTI(), "run_id": f"manual__alerting-{uuid.uuid4().hex[:12]}"}


def monitoring(alertmanager_conn_id: str, settings: LabSettings) -> MonitoringOperator:
    return MonitoringOperator(
        task_id="monitoring",
        prometheus_conn_id=PROMETHEUS,
        prometheus_labels=STAGING,
        alertmanager_conn_id=alertmanager_conn_id,
        alert_rules=expected_rules(lab_config(settings)),
    )


def wait_until_prometheus_settled(settings: LabSettings, deadline_seconds: float = 60) -> None:
    """A lab started moments ago: within seconds Prometheus has scraped every staging pod, evaluated
    its rules and found its Alertmanager (its notifier's discovery updates every 5 s at most)."""
    prometheus, deadline = PrometheusHook(PROMETHEUS), time.monotonic() + deadline_seconds
    expected = expected_rules(lab_config(settings))
    while True:
        health = [
            t["health"] for t in prometheus.targets() if t["labels"].get("namespace") == STAGING["namespace"]
        ]
        problems = loaded_rule_problems(expected, prometheus.rules())
        alertmanagers = prometheus.alertmanagers()
        if health and "unknown" not in health and not problems and alertmanagers:
            return
        assert time.monotonic() < deadline, f"staging pods {health}; rules {problems}; {alertmanagers=}"
        time.sleep(0.5)


# --- the rules, from the config ----------------------------------------------------------------------


def test_rules_measure_what_the_traffic_gate_measures() -> None:
    config = load_config()
    gate, labels = config.traffic.gate, config.environments.production.prometheus_labels
    rules = {rule.key: rule for rule in alert_rules(config)}
    assert list(rules) == [
        ERROR_RATIO_ALERT,
        *(f'{LATENCY_ALERT}{{slo_class="{name}"}}' for name in ("health", "auth", "business", "ai")),
        TARGET_DOWN_ALERT,
    ]
    errors = rules[ERROR_RATIO_ALERT].document()
    assert errors["expr"] == f"({render_query(gate.error_ratio_query, labels, gate.window)}) > 0.01"
    assert errors["for"] == "30s"  # the gate's breach: 3 samples 10 s apart
    assert errors["labels"] == {"severity": "critical"}
    ai = rules[f'{LATENCY_ALERT}{{slo_class="ai"}}'].document()
    assert ai["expr"] == f"({render_query(gate.p99_query, labels, gate.window, ['llm-orchestrator'])}) > 2"
    assert 'service=~"llm-orchestrator"' in ai["expr"] and "[30s]" in ai["expr"]
    assert ai["labels"] == {"slo_class": "ai", "severity": "warning"}
    auth = rules[f'{LATENCY_ALERT}{{slo_class="auth"}}'].document()
    assert 'service=~"auth-service|permission-service"' in auth["expr"] and auth["expr"].endswith("> 0.2")
    assert rules[TARGET_DOWN_ALERT].expr == 'up{namespace="pyairtable-production"} == 0'
    # A budget changed in the config is the threshold; a class no service uses has no rule.
    changed = config.model_copy(update={"slo_classes": {**config.slo_classes, "ai": 1500, "batch": 9000}})
    keys = {rule.key: rule for rule in alert_rules(changed)}
    assert keys[f'{LATENCY_ALERT}{{slo_class="ai"}}'].expr.endswith("> 1.5")
    assert not any("batch" in key for key in keys)
    # Each rule says which config it was written from: its digest changes with what it evaluates.
    assert errors["annotations"]["config_digest"] == rules[ERROR_RATIO_ALERT].digest
    assert keys[ERROR_RATIO_ALERT].digest == rules[ERROR_RATIO_ALERT].digest
    ai_key = f'{LATENCY_ALERT}{{slo_class="ai"}}'
    assert keys[ai_key].digest != rules[ai_key].digest


def test_the_written_rules_file_is_what_prometheus_accepts(tmp_path: Path) -> None:
    written = subprocess.run(
        [sys.executable, "-m", "pyairtable_migration.monitoring.alerts", str(DEFAULT_CONFIG_PATH)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(written.stdout)
    checked = subprocess.run(
        ["/usr/bin/promtool", "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules(load_config()))} rules found" in checked.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "pyairtable_migration.monitoring.alerts", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_the_plan_checks_alerting_only_with_an_alertmanager() -> None:
    config = load_config()
    shipped = build_plan(config).steps
    arguments = shipped["validation.monitoring"].arguments
    assert arguments["alertmanager_conn_id"] == ALERTMANAGER
    assert arguments["alert_rules"] == {rule.key: rule.digest for rule in alert_rules(config)}
    assert arguments["alert_delivery_timeout_seconds"] == 60
    assert ALERTMANAGER in shipped["validation.security"].arguments["connection_ids"]
    without = config.model_copy(
        update={"validation": config.validation.model_copy(update={"alertmanager_conn_id": None})}
    )
    step = build_plan(without).steps["validation.monitoring"]
    assert step.arguments["alertmanager_conn_id"] == "" and "alerting not checked" in step.action


# --- the lab's Prometheus and Alertmanager -----------------------------------------------------------


@pytest.mark.lab
def test_the_lab_prometheus_has_the_rules_loaded_and_sends_to_the_lab_alertmanager(
    lab: LabSettings,  # noqa: F811
) -> None:
    wait_until_prometheus_settled(lab)  # the rules are loaded at start, evaluated each second
    prometheus = PrometheusHook(PROMETHEUS)
    config = lab_config(lab)
    expected = expected_rules(config)
    assert loaded_rule_problems(expected, prometheus.rules()) == []
    hint = (
        "(write them with `python -m pyairtable_migration.monitoring.alerts <config>`, list the file "
        "in Prometheus's rule_files, reload Prometheus)"
    )
    assert loaded_rule_problems({**expected, "PyAirtableNoSuchAlert": "0"}, prometheus.rules()) == [
        f"alert rules not loaded in Prometheus: PyAirtableNoSuchAlert {hint}"
    ]
    # The config changed since the rules were written (the error ratio's limit, an SLO budget):
    # those rules, loaded and healthy, are named; the others pass.
    changed = config.model_copy(
        update={
            "traffic": config.traffic.model_copy(
                update={"gate": config.traffic.gate.model_copy(update={"max_error_ratio": 0.05})}
            ),
            "slo_classes": {**config.slo_classes, "ai": 1500},
        }
    )
    assert loaded_rule_problems(expected_rules(changed), prometheus.rules()) == [
        "alert rules loaded in Prometheus from another config (their expression, `for` or labels are "
        f'not what the migration config gives now): {ERROR_RATIO_ALERT}, {LATENCY_ALERT}{{slo_class="ai"}} '
        f"{hint}"
    ]
    urls = [entry["url"] for entry in prometheus.alertmanagers()]
    assert urls == [f"http://{lab.host}:{lab.alertmanager_port}/api/v2/alerts"]


@pytest.mark.lab
def test_monitoring_proves_alerting_and_the_receiver_got_the_test_alert(lab: LabSettings) -> None:  # noqa: F811
    wait_until_prometheus_settled(lab)
    operator = monitoring(ALERTMANAGER, lab)

    planned = run_context("plan")
    assert operator.execute(planned) == {"mode": "plan"}  # type: ignore[arg-type]
    posted = requests.get(
        f"http://{lab.host}:{lab.alertmanager_port}/api/v2/alerts",
        params={"filter": f'migration_run="{planned["run_id"]}"'},
        timeout=5,
    ).json()
    assert posted == []  # plan mode posted nothing

    ctx = run_context()
    summary = operator.execute(ctx)  # type: ignore[arg-type]
    alerting = summary["alerting"]
    assert alerting["test_alert"]["migration_run"] == ctx["run_id"]
    assert alerting["integrations"]["webhook"]["delivered"] >= 1
    assert alerting["integrations"]["webhook"]["failed"] == 0
    assert alerting["rules_healthy"] == alerting["rules"] == 6 and alerting["alertmanagers"] == 1

    # The receiver really got it (another alert's notification may have been the one counted first).
    deadline = time.monotonic() + 10
    while True:
        ours = [
            alert
            for notification in received_notifications(lab)
            for alert in notification["alerts"]
            if alert["labels"].get("migration_run") == ctx["run_id"]
        ]
        if ours or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [alert["labels"]["alertname"] for alert in ours] == [TEST_ALERT_NAME]
    assert ours[0]["status"] == "firing" and ours[0]["labels"]["migration_try"] == "1"


@pytest.fixture
def broken_alertmanager(
    lab: LabSettings,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """A second, real Alertmanager whose only route is a webhook on a port nobody listens on; yields
    the id of the Airflow connection to it.

    The port is held by a socket bound and never listening: every connection to it is refused, and
    no other process can take it meanwhile (a merely free port was once bound by another test's
    process between two attempts, which then answered the webhook)."""
    (alertmanager_port,) = free_ports(1)
    refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    refusing.bind((lab.host, 0))
    nobody_port = refusing.getsockname()[1]
    settings = replace(
        lab, alertmanager_port=alertmanager_port, alert_receiver_port=nobody_port, data_dir=tmp_path
    )
    component = Alertmanager()
    component.prepare(settings)
    process = start_detached(component, settings)
    try:
        wait_until_answers(component, settings, process)
        connection = {"conn_type": "http", "host": lab.host, "port": alertmanager_port, "schema": "http"}
        monkeypatch.setenv("AIRFLOW_CONN_BROKEN_ALERTMANAGER", json.dumps(connection))
        yield "broken_alertmanager"
    finally:
        terminate(process.pid)
        refusing.close()


@pytest.mark.lab
def test_a_broken_alert_route_fails_monitoring_naming_the_integration(
    lab: LabSettings,  # noqa: F811
    broken_alertmanager: str,
) -> None:
    wait_until_prometheus_settled(lab)
    ctx = run_context()
    with pytest.raises(AirflowFailException) as failure:
        monitoring(broken_alertmanager, lab).execute(ctx)  # type: ignore[arg-type]
    message = str(failure.value)
    assert message.startswith("monitoring: alerting does not work end to end:")
    assert (
        "webhook: 1 notification(s) failed since the test alert, 0 delivered (" in message
        and "attempts failed; Alertmanager's log says why)" in message
    ), message
    assert "rules not loaded" not in message  # the lab's Prometheus is fine: only the route is named
    figures = ctx["ti"].pushed["figures"]["alerting"]["integrations"]["webhook"]
    assert figures["failed"] == 1 and figures["delivered"] == 0
    assert figures["failed_attempts"] == figures["attempts"] >= 1
