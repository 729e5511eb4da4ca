"""Proof that alerting works end to end: Prometheus has production's rules loaded and healthy and
sends to an Alertmanager, and a test alert posted to that Alertmanager reached its receivers.

Delivery is read from Alertmanager's own counters (`/metrics`), not from a receiver: the receivers
are the team's (PagerDuty, Slack, a webhook) and only Alertmanager sees them all. Per integration it
counts notifications started (`alertmanager_notifications_total`) and given up after their retries
(`alertmanager_notifications_failed_total`), and each attempt (`alertmanager_notification_requests_total`,
`..._requests_failed_total`): an attempt that did not fail is a delivery. A notification that fails
is counted only when Alertmanager stops retrying it (the group's flush timeout, at least 10 s), so
the wait lasts until every integration that started one delivered it or gave up.

The test alert carries the run and the try, so each try's alert is new to Alertmanager (a repeat of
one it already notified would wait for repeat_interval), and resolves by itself a minute later.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from pyairtable_migration.monitoring.alerts import loaded_rule_problems, loaded_rules

TEST_ALERT_NAME = "PyAirtableMigrationTestAlert"
TEST_ALERT_LIFETIME = timedelta(seconds=60)
POLL_SECONDS = 0.5

NOTIFICATIONS = "alertmanager_notifications_total"
FAILED_NOTIFICATIONS = "alertmanager_notifications_failed_total"
REQUESTS = "alertmanager_notification_requests_total"
FAILED_REQUESTS = "alertmanager_notification_requests_failed_total"
COUNTERS = (NOTIFICATIONS, FAILED_NOTIFICATIONS, REQUESTS, FAILED_REQUESTS)


class AlertmanagerUnavailable(RuntimeError):
    """Alertmanager did not answer, or refused a request."""


class AlertmanagerClient(Protocol):
    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None: ...

    def metrics(self) -> str: ...


class RulesSource(Protocol):
    def rules(self) -> list[dict[str, Any]]: ...

    def alertmanagers(self) -> list[dict[str, Any]]: ...


def migration_test_alert(run_id: str, try_number: int, now: datetime) -> dict[str, Any]:
    """The alert Alertmanager's API v2 takes: unique to this run and try, resolving by itself."""

    def timestamp(moment: datetime) -> str:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return {
        "labels": {"alertname": TEST_ALERT_NAME, "migration_run": run_id, "migration_try": str(try_number)},
        "annotations": {
            "summary": "Test alert of the PyAirtable migration's validation.monitoring: nothing is wrong",
            "description": (
                f"Posted by run {run_id} (try {try_number}) to prove alerts reach their receivers; "
                f"it resolves by itself after {TEST_ALERT_LIFETIME.seconds} s."
            ),
        },
        "startsAt": timestamp(now),
        "endsAt": timestamp(now + TEST_ALERT_LIFETIME),
    }


@dataclass(frozen=True)
class IntegrationCounters:
    """Alertmanager's notification counters of one integration (webhook, email, slack, ...)."""

    notifications: float = 0
    failed_notifications: float = 0
    requests: float = 0
    failed_requests: float = 0

    @property
    def delivered(self) -> float:
        return self.requests - self.failed_requests

    @property
    def active(self) -> bool:
        return self.notifications > 0 or self.failed_notifications > 0 or self.requests > 0

    @property
    def settled(self) -> bool:
        """Every notification it worked on since then ended: at least one delivered or given up."""
        return self.delivered > 0 or self.failed_notifications > 0

    def since(self, earlier: IntegrationCounters) -> IntegrationCounters:
        return IntegrationCounters(
            self.notifications - earlier.notifications,
            self.failed_notifications - earlier.failed_notifications,
            self.requests - earlier.requests,
            self.failed_requests - earlier.failed_requests,
        )

    def figures(self) -> dict[str, int]:
        return {
            "notifications": int(self.notifications),
            "delivered": int(self.delivered),
            "failed": int(self.failed_notifications),
            "attempts": int(self.requests),
            "failed_attempts": int(self.failed_requests),
        }


def integration_counters(metrics_text: str) -> dict[str, IntegrationCounters]:
    """Per integration, from Alertmanager's /metrics (summed over any other label, such as a
    failure's reason, which newer Alertmanagers add)."""
    sums: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            integration = sample.labels.get("integration")
            if sample.name in COUNTERS and integration:
                values = sums.setdefault(integration, dict.fromkeys(COUNTERS, 0.0))
                values[sample.name] += sample.value
    return {
        integration: IntegrationCounters(*(values[name] for name in COUNTERS))
        for integration, values in sums.items()
    }


@dataclass(frozen=True)
class Delivery:
    """What Alertmanager's integrations did since the test alert was posted (only those that did anything)."""

    integrations: Mapping[str, IntegrationCounters]
    waited_seconds: float = 0.0

    @property
    def settled(self) -> bool:
        return bool(self.integrations) and all(counters.settled for counters in self.integrations.values())

    def problems(self, timeout_seconds: float) -> list[str]:
        if not self.integrations:
            return [
                f"no notification within {timeout_seconds:g} s of the test alert {TEST_ALERT_NAME}: "
                "Alertmanager's route sends it to no receiver (or its group_wait is longer than the wait)"
            ]
        problems = []
        for name, counters in sorted(self.integrations.items()):
            attempts = f"{int(counters.failed_requests)} of {int(counters.requests)} attempts failed"
            if counters.failed_notifications:
                problems.append(
                    f"{name}: {int(counters.failed_notifications)} notification(s) failed since the test "
                    f"alert, {int(counters.delivered)} delivered ({attempts}; Alertmanager's log says why)"
                )
            elif not counters.settled:
                problems.append(
                    f"{name}: {int(counters.notifications)} notification(s) started, none delivered or "
                    f"failed within {timeout_seconds:g} s ({attempts} so far)"
                )
        return problems

    def figures(self) -> dict[str, Any]:
        return {
            "integrations": {name: self.integrations[name].figures() for name in sorted(self.integrations)},
            "waited_seconds": round(self.waited_seconds, 1),
        }


def delivery_since(
    before: Mapping[str, IntegrationCounters], now: Mapping[str, IntegrationCounters], waited_seconds: float
) -> Delivery:
    changed = {
        name: counters.since(before.get(name, IntegrationCounters())) for name, counters in now.items()
    }
    active = {name: counters for name, counters in changed.items() if counters.active}
    return Delivery(active, waited_seconds)


def prove_delivery(
    alertmanager: AlertmanagerClient,
    alert: Mapping[str, Any],
    timeout_seconds: float,
) -> Delivery:
    """Post the alert, then read the counters until every integration that started a notification
    delivered it or gave up, or until the timeout; the last reading is the answer."""
    before = integration_counters(alertmanager.metrics())
    alertmanager.post_alerts([alert])
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        delivery = delivery_since(before, integration_counters(alertmanager.metrics()), waited)
        if delivery.settled or waited >= timeout_seconds:
            return delivery
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class AlertingCheck:
    """The end-to-end check's outcome: figures for the XCom and the report, and every problem."""

    figures: dict[str, Any]
    problems: list[str] = field(default_factory=list)


def prometheus_problems(
    prometheus: RulesSource, expected_rules: Mapping[str, str], deadline: float
) -> tuple[dict[str, int], list[str]]:
    """Prometheus's side: the expected rules loaded and healthy, and an Alertmanager to send to.
    Read again until right or past the deadline: a Prometheus (re)started moments ago evaluates its
    rules within one interval and finds its Alertmanagers within 5 s (its discovery's pace)."""
    while True:
        groups, alertmanagers = prometheus.rules(), prometheus.alertmanagers()
        problems = loaded_rule_problems(expected_rules, groups)
        if not alertmanagers:
            problems.append("Prometheus sends its alerts to no Alertmanager (`alerting.alertmanagers`)")
        if not problems or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    loaded = loaded_rules(groups)
    figures = {
        "rules": len(expected_rules),
        "rules_healthy": sum((loaded.get(key) or {}).get("health") == "ok" for key in expected_rules),
        "alertmanagers": len(alertmanagers),
    }
    return figures, problems


def check_alerting(
    prometheus: RulesSource,
    alertmanager: AlertmanagerClient,
    expected_rules: Mapping[str, str],
    alert: Mapping[str, Any],
    timeout_seconds: float,
) -> AlertingCheck:
    """Deliver a test alert, then check Prometheus's side within the same wait. Prometheus's own
    errors propagate: without it nothing about monitoring can be said."""
    deadline = time.monotonic() + timeout_seconds
    problems: list[str] = []
    figures: dict[str, Any] = {"test_alert": dict(alert["labels"])}
    try:
        delivery = prove_delivery(alertmanager, alert, timeout_seconds)
    except AlertmanagerUnavailable as exc:
        problems.append(str(exc))
    else:
        figures.update(delivery.figures())
        problems += delivery.problems(timeout_seconds)
    prometheus_figures, prometheus_side = prometheus_problems(prometheus, expected_rules, deadline)
    figures.update(prometheus_figures)
    return AlertingCheck(figures, [*prometheus_side, *problems])
