"""The gate's rule (pure) and the triggers that wait and sample (against moto and a scripted
Prometheus)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pyairtable_migration.hooks.route53 import Route53WeightsHook
from pyairtable_migration.triggers.traffic import Gate, GateSample, Route53ChangeTrigger, TrafficGateTrigger
from tests.traffic.conftest import (
    AWS_CONN,
    DOWN_PROMETHEUS_CONN,
    PRODUCTION,
    PROMETHEUS_CONN,
    RECORDS,
    STAGING,
    ZONE,
    FakePrometheus,
    Zone,
    all_at,
)
from tests.traffic.driver import first_event

LIMITS = {"error_ratio": 0.01, "p99": 2.0}
REVERT = {"hosted_zone": ZONE, "records": RECORDS, "weights": {PRODUCTION: 0, STAGING: 100}}


def sample(error_ratio: float | None, p99: float | None, error: str | None = None) -> GateSample:
    return GateSample("12:00:00", {"error_ratio": error_ratio, "p99": p99}, error=error)


def test_consecutive_breaches_trip_and_a_healthy_sample_resets_the_streak() -> None:
    gate = Gate(LIMITS, consecutive=3)
    assert not gate.add(sample(0.5, 0.1))
    assert not gate.add(sample(0.5, 0.1))
    assert not gate.add(sample(0.0, 0.1)), "healthy: the streak starts again"
    assert not gate.add(sample(0.0, 2.5))
    assert not gate.add(sample(0.02, 0.1))
    assert gate.add(sample(0.03, 0.1))
    verdict = gate.verdict(25)
    assert verdict["status"] == "breached"
    assert "gate tripped at 25 %: 3 consecutive breaching samples" in verdict["message"]
    assert "p99 2.5 s > max 2 s" in verdict["message"]
    assert "error ratio 0.03 > max 0.01" in verdict["message"]
    assert verdict["peaks"] == {"error_ratio": 0.5, "p99": 2.5}


def test_a_value_equal_to_its_limit_is_not_a_breach() -> None:
    gate = Gate(LIMITS, consecutive=1)
    assert not gate.add(sample(0.01, 2.0))
    assert gate.verdict(10)["status"] == "passed"


def test_missing_data_neither_resets_nor_counts_as_healthy() -> None:
    gate = Gate(LIMITS, consecutive=2)
    gate.add(sample(0.5, 0.1))
    gate.add(sample(None, None))
    gate.add(sample(None, None, error="Prometheus did not answer"))
    assert gate.add(sample(0.5, None)), "a breach with the other value missing still counts"


def test_no_complete_sample_in_the_whole_bake_is_no_data() -> None:
    gate = Gate(LIMITS, consecutive=3)
    gate.add(sample(None, None))
    gate.add(sample(0.0, None))
    verdict = gate.verdict(50)
    assert verdict["status"] == "no_data"
    assert "no data for production during the whole bake" in verdict["message"]
    assert "not shifted forward" in verdict["message"]

    down = Gate(LIMITS, consecutive=3)
    down.add(sample(None, None, error="Prometheus (x) did not answer: ConnectionError"))
    assert "Prometheus did not answer during the whole bake" in down.verdict(50)["message"]


def test_route53_change_trigger_waits_insync_then_holds(zone: Zone) -> None:
    route53 = Route53WeightsHook(aws_conn_id=AWS_CONN)
    records = route53.require_records(zone.zone_id, RECORDS, (STAGING, PRODUCTION))
    change = route53.set_ttl(zone.zone_id, records, 60, "t")
    started = time.monotonic()
    event = asyncio.run(
        first_event(Route53ChangeTrigger(aws_conn_id=AWS_CONN, change_id=change.change_id, hold_seconds=0.5))
    )
    assert event.payload["status"] == "insync"
    assert time.monotonic() - started >= 0.5


def gate_trigger(
    conn_id: str = PROMETHEUS_CONN, bake: float = 1.0, revert: dict[str, Any] | None = None
) -> TrafficGateTrigger:
    return TrafficGateTrigger(
        weight=25,
        aws_conn_id=AWS_CONN,
        change_id=None,
        prometheus_conn_id=conn_id,
        queries={"error_ratio": "error_ratio_query", "p99": "histogram_quantile(p99)"},
        limits=LIMITS,
        bake_seconds=bake,
        sample_seconds=0.2,
        consecutive_breaches=3,
        revert=revert,
    )


def test_gate_trigger_bakes_the_whole_time_when_healthy(zone: Zone, fake_prometheus: FakePrometheus) -> None:
    started = time.monotonic()
    event = asyncio.run(first_event(gate_trigger(bake=1.0))).payload
    assert time.monotonic() - started >= 1.0
    assert event["status"] == "passed"
    assert event["samples"] >= 5 and event["complete_samples"] == event["samples"]
    assert set(fake_prometheus.queries) == {"error_ratio_query", "histogram_quantile(p99)"}


def test_gate_trigger_stops_at_the_third_breach_and_reverts_at_once(
    zone: Zone, fake_prometheus: FakePrometheus
) -> None:
    zone.set(25, ttl=60)
    fake_prometheus.error_ratio = 0.4
    started = time.monotonic()
    event = asyncio.run(first_event(gate_trigger(bake=30, revert=REVERT))).payload
    assert time.monotonic() - started < 30, "the bake ends when the gate trips, not after its 30 s"
    assert event["status"] == "breached"
    assert event["samples"] == 3
    assert [s["values"]["error_ratio"] for s in event["breaching_samples"]] == [0.4, 0.4, 0.4]
    assert event["reverted"]["change_id"] and len(event["reverted"]["changed"]) == 6
    assert zone.weights() == all_at(0)


def test_a_revert_the_trigger_cannot_make_is_reported_not_raised(
    zone: Zone, fake_prometheus: FakePrometheus
) -> None:
    fake_prometheus.p99 = 9.0
    event = asyncio.run(first_event(gate_trigger(revert={**REVERT, "hosted_zone": "gone.example."}))).payload
    assert event["status"] == "breached"
    assert "hosted zone gone.example. not found" in event["reverted"]["error"]


def test_gate_trigger_fails_safe_when_prometheus_is_down_or_has_no_data(
    zone: Zone, fake_prometheus: FakePrometheus
) -> None:
    down = asyncio.run(first_event(gate_trigger(DOWN_PROMETHEUS_CONN, bake=0.5))).payload
    assert down["status"] == "no_data"
    assert "Prometheus did not answer during the whole bake" in down["message"]

    fake_prometheus.error_ratio = fake_prometheus.p99 = None
    empty = asyncio.run(first_event(gate_trigger(bake=0.5))).payload
    assert empty["status"] == "no_data"
    assert "no data for production" in empty["message"]


def test_a_bake_that_ends_blind_is_no_data_even_after_healthy_samples() -> None:
    gate = Gate(LIMITS, consecutive=2)
    gate.add(sample(0.0, 0.1))
    gate.add(sample(None, None, error="Prometheus (x) did not answer: ConnectionError"))
    gate.add(sample(None, None, error="Prometheus (x) did not answer: ConnectionError"))
    verdict = gate.verdict(50)
    assert verdict["status"] == "no_data", verdict
    assert "ended blind: the last 2 samples" in verdict["message"]
    assert "did not answer" in verdict["message"] and "not shifted forward" in verdict["message"]

    recovered = Gate(LIMITS, consecutive=2)
    for value in (sample(0.0, 0.1), sample(None, None, error="down"), sample(0.0, 0.1)):
        recovered.add(value)
    assert recovered.verdict(50)["status"] == "passed", "one blind sample before a healthy end is fine"
