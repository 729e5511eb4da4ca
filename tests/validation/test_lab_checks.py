"""Validation checks against the lab's real Prometheus, Kubernetes emulator and PostgreSQL."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from kubernetes import client as k8s

from lab.settings import LabSettings
from pyairtable_migration.hooks.bluegreen import BlueGreenHook
from pyairtable_migration.hooks.prometheus import PrometheusHook
from pyairtable_migration.operators.validation import (
    LatencySloOperator,
    MonitoringOperator,
)
from tests.lab.conftest import kube_api, lab  # noqa: F401
from tests.services.support import BlueGreenService
from tests.validation.test_checks import SLO_CLASSES, context

PRODUCTION = "pyairtable-production"
PROMETHEUS = "pyairtable_prometheus"


def test_monitoring_sees_the_lab_targets(lab: LabSettings) -> None:  # noqa: F811
    # A lab started moments ago: Prometheus finds the pods (service discovery) and scrapes each
    # within seconds; the check is about what it reports once every pod has been scraped.
    prometheus, deadline = PrometheusHook(PROMETHEUS), time.monotonic() + 60
    while True:
        health = [
            t["health"] for t in prometheus.targets() if t["labels"].get("namespace") == "pyairtable-staging"
        ]
        if health and "unknown" not in health:
            break
        assert time.monotonic() < deadline, f"Prometheus has not scraped every staging pod: {health}"
        time.sleep(0.5)
    staging = MonitoringOperator(
        task_id="monitoring",
        prometheus_conn_id=PROMETHEUS,
        prometheus_labels={"namespace": "pyairtable-staging"},
    )
    summary = staging.execute(context())  # type: ignore[arg-type]
    assert summary["targets"] > 0 and summary["down"] == []
    nowhere = MonitoringOperator(
        task_id="monitoring",
        prometheus_conn_id=PROMETHEUS,
        prometheus_labels={"namespace": "no-such-namespace"},
    )
    with pytest.raises(AirflowFailException, match="no target labelled"):
        nowhere.execute(context())  # type: ignore[arg-type]


@pytest.fixture
def slow_web_bff(kube_api: k8s.ApiClient) -> Iterator[BlueGreenService]:  # noqa: F811
    service = BlueGreenService(PRODUCTION, name="web-bff", replicas=1, progress_deadline_seconds=60)
    try:
        yield service
    finally:
        apps, core = k8s.AppsV1Api(kube_api), k8s.CoreV1Api(kube_api)
        for color in ("blue", "green"):
            with contextlib.suppress(k8s.ApiException):
                apps.delete_namespaced_deployment(f"web-bff-{color}", PRODUCTION)
        for name in ("web-bff", "web-bff-preview"):
            with contextlib.suppress(k8s.ApiException):
                core.delete_namespaced_service(name, PRODUCTION)


def test_a_slow_image_in_production_fails_its_slo_class(
    lab: LabSettings,  # noqa: F811
    slow_web_bff: BlueGreenService,
) -> None:
    version = "1.8.0-slow"
    slow_web_bff.deploy(version)
    slow_web_bff.wait_rollout(version)
    slow_web_bff.promote(version)
    hook = BlueGreenHook("pyairtable_kubernetes", PRODUCTION)
    operator = LatencySloOperator(
        task_id="latency_slos",
        prometheus_conn_id=PROMETHEUS,
        services={"web-bff": "business"},
        slo_classes=SLO_CLASSES,
        prometheus_labels={"namespace": PRODUCTION},
        window="1m",
    )
    prometheus = PrometheusHook(PROMETHEUS)
    deadline = time.monotonic() + 45
    # Real requests through the production Service (~0.8 s each) until Prometheus, scraping every
    # second, has seen the counters grow (a rate needs two scrapes of an increasing counter).
    while True:
        status, _seconds, reason = hook.proxy_get("web-bff", "/health", 5)
        assert status == 200, reason
        if prometheus.instant_value(operator.rendered_query()) is not None:
            break
        assert time.monotonic() < deadline, "Prometheus never had web-bff's latency"
    ctx: dict[str, Any] = context()
    with pytest.raises(AirflowFailException, match=r"web-bff: p95 \d+(\.\d+)? ms >= 500 ms \(business\)"):
        operator.execute(ctx)  # type: ignore[arg-type]
    figures = ctx["ti"].pushed["figures"]["services"]["web-bff"]
    assert figures["verdict"] == "breached" and figures["p95_ms"] >= 500
