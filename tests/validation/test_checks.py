"""The validation checks' decisions, with Prometheus answers and XComs stood in for."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from lab.synthetic_graph import REAL_CONFIG
from pyairtable_migration.config import load_config
from pyairtable_migration.hooks.prometheus import PrometheusHook
from pyairtable_migration.operators.validation import (
    LatencySloOperator,
    MonitoringOperator,
    find_secrets,
    judge_latency,
)
from pyairtable_migration.plan import build_plan

SLO_CLASSES = {"health": 100, "auth": 200, "business": 500, "ai": 2000}


class FakeTI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def context(mode: str = "apply") -> dict[str, Any]:
    return {"params": {"mode": mode}, "ti": FakeTI()}


def vector(values: dict[str, float]) -> dict[str, Any]:
    return {
        "resultType": "vector",
        "result": [{"metric": {"service": s}, "value": [0, str(v)]} for s, v in values.items()],
    }


def latency_operator(**kwargs: Any) -> LatencySloOperator:
    return LatencySloOperator(
        task_id="latency_slos",
        prometheus_conn_id="pyairtable_prometheus",
        services={"web-bff": "business", "auth-service": "auth", "auth-frontend": "health"},
        slo_classes=SLO_CLASSES,
        prometheus_labels={"namespace": "pyairtable-production"},
        window="1m",
        **kwargs,
    )


def test_judge_latency_per_class() -> None:
    results = judge_latency(
        {"a": 0.0995, "b": 0.2, "c": float("nan")}, {"a": "health", "b": "auth", "c": "ai"}, SLO_CLASSES
    )
    assert results["a"]["verdict"] == "met" and results["a"]["p95_ms"] == 99.5
    assert results["b"]["verdict"] == "breached"  # the budget is strict: p95 < 200 ms
    assert results["c"] == {"slo_class": "ai", "budget_ms": 2000, "p95_ms": None, "verdict": "no traffic"}


def test_a_slow_service_fails_naming_the_service_and_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    # What Prometheus answers when web-bff runs a `-slow` image (800 ms added to every request).
    answer = vector({"web-bff": 0.8475, "auth-service": 0.012, "auth-frontend": 0.004})
    queries: list[str] = []

    def fake_get(self: PrometheusHook, endpoint: str, params: dict[str, Any]) -> Any:
        queries.append(params["query"])
        return answer

    monkeypatch.setattr(PrometheusHook, "_get", fake_get)
    ctx = context()
    with pytest.raises(AirflowFailException) as failure:
        latency_operator().execute(ctx)  # type: ignore[arg-type]
    message = str(failure.value)
    assert "web-bff: p95 847.5 ms >= 500 ms (business)" in message
    assert "auth-service" not in message
    assert 'namespace="pyairtable-production"' in queries[0] and "[1m]" in queries[0]
    figures = ctx["ti"].pushed["figures"]
    assert figures["services"]["auth-frontend"] == {
        "slo_class": "health",
        "budget_ms": 100,
        "p95_ms": 4.0,
        "verdict": "met",
    }


def test_a_service_without_traffic_is_reported_and_fails_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = vector({"web-bff": 0.1, "auth-service": 0.01})
    monkeypatch.setattr(PrometheusHook, "_get", lambda self, endpoint, params: answer)
    with pytest.raises(AirflowFailException, match="auth-frontend: no production traffic in the last 1m"):
        latency_operator().execute(context())  # type: ignore[arg-type]
    summary = latency_operator(no_traffic="warn").execute(context())  # type: ignore[arg-type]
    assert summary["no_traffic"] == ["auth-frontend: no production traffic in the last 1m"]
    assert summary["services"]["web-bff"]["p95_ms"] == 100.0


def test_plan_mode_connects_to_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("plan mode must not query Prometheus")

    monkeypatch.setattr(PrometheusHook, "_get", refuse)
    assert latency_operator().execute(context("plan")) == {"mode": "plan"}  # type: ignore[arg-type]
    monitoring = MonitoringOperator(
        task_id="monitoring", prometheus_conn_id="x", prometheus_labels={"namespace": "pyairtable-production"}
    )
    assert monitoring.execute(context("plan")) == {"mode": "plan"}  # type: ignore[arg-type]


def test_monitoring_names_the_down_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    targets = [
        {"labels": {"namespace": "pyairtable-production", "pod": "web-bff-blue-1"}, "health": "up"},
        {
            "labels": {"namespace": "pyairtable-production", "pod": "web-bff-blue-2"},
            "health": "down",
            "lastError": "connection refused",
        },
        {"labels": {"namespace": "pyairtable-staging", "pod": "web-bff-1"}, "health": "down"},
    ]
    monkeypatch.setattr(PrometheusHook, "targets", lambda self: targets)
    operator = MonitoringOperator(
        task_id="monitoring", prometheus_conn_id="x", prometheus_labels={"namespace": "pyairtable-production"}
    )
    with pytest.raises(
        AirflowFailException, match=r"(?s)1 of 2 .*web-bff-blue-2: down \(connection refused\)"
    ):
        operator.execute(context())  # type: ignore[arg-type]
    monkeypatch.setattr(PrometheusHook, "targets", lambda self: targets[:1])
    assert operator.execute(context()) == {"mode": "apply", "targets": 1, "up": 1, "down": []}  # type: ignore[arg-type]


def test_find_secrets_names_where_never_what() -> None:
    found = find_secrets(
        {"pyairtable_source_db": "s3cr3t-pass"},
        {"XCom of a": {"dsn": "postgres://u:s3cr3t-pass@h/db"}, "XCom of b": {"ok": 1}},
    )
    assert found == ["XCom of a: password of connection pyairtable_source_db"]
    assert "s3cr3t" not in " ".join(found)


def test_validation_phase_is_real_operators_ending_in_the_report() -> None:
    plan = build_plan(load_config(REAL_CONFIG))
    steps = {t: s for t, s in plan.steps.items() if s.phase == "validation"}
    assert set(steps) == {
        "validation.latency_slos",
        "validation.data_parity",
        "validation.security",
        "validation.backup",
        "validation.monitoring",
        "validation.report",
    }
    assert all("placeholder" not in s.operator for s in steps.values())
    assert {before for before, after in plan.edges if after == "validation.report"} == set(steps) - {
        "validation.report"
    }
    latency = steps["validation.latency_slos"].arguments
    assert latency["services"]["llm-orchestrator"] == "ai" and latency["slo_classes"]["health"] == 100
