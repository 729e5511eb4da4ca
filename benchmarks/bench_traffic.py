"""Traffic cutover on a private lab: the load test's rate and error ratio at production's ingress,
failed requests during a healthy 10 -> 100 % shift at the highest steady rate the lab sustains, and
the time from a gate breach to traffic back on staging.

Goals: the load test reaches the seed's 1,000 req/s with < 1 % failed; 0 failed requests at >= 500
req/s; breach -> back on staging <= cutover TTL + 5 s.

    python -m benchmarks.bench_traffic

The traffic operators of the real plan run as a worker and the triggerer would (execute, defer,
trigger, resume), against the lab's moto, Kubernetes emulator (real pod servers) and Prometheus,
started on free ports; a separate process sends the load through the weighted edge.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from benchmarks.table import Figure, at_least, at_most, format_table, note

PHASE = "traffic"
RATES = (500, 750, 1000, 1250, 1500)  # offered req/s, probed in order
PROBE_SECONDS = 6.0
CUTOVER_TTL = 2
OLD_TTL = 4
BAKE = 5.0
BREACH_RATE = 300
LOAD_TEST_RATE = 1000  # the seed's target
LOAD_TEST_SECONDS = 10.0


def load_test(settings: Any) -> tuple[dict[str, Any], list[str]]:
    """The migration's load test (its engine, with hey) at production's ingress, over the services
    this lab runs in production."""
    from pyairtable_migration.loadtest.driver import Drive, Target, drive, judge
    from tests.traffic.lablib import CONFIG, PUBLIC_SERVICES

    ingress = f"http://{settings.production_ingress_host}:{settings.ingress_port}"
    targets = []
    for name in PUBLIC_SERVICES:
        node = CONFIG.deployable[name]
        targets.append(Target(name, node.slo_class, f"{ingress}/{name}{node.health_path}"))
    offered = Drive(LOAD_TEST_RATE, LOAD_TEST_SECONDS, 20, 10, "/usr/bin/hey")
    figures = judge(drive(targets, offered), dict(CONFIG.slo_classes), 0.01, offered).figures
    return figures, [
        f"load test: {figures['offered_rate']:.0f} req/s offered for {LOAD_TEST_SECONDS:g} s over "
        f"{len(targets)} services, {figures['reached_rate']:.0f} req/s reached, {figures['failed']} of "
        f"{figures['requests']} failed; worst per class {figures['slo_classes']}"
    ]


def sustained(settings: Any) -> tuple[float, list[str]]:
    """The highest offered rate served in full (>= 95 %) with no failed request."""
    from tests.traffic.lablib import load, set_dns

    set_dns(settings, production=50, ttl=CUTOVER_TTL)
    best, lines = 0.0, []
    for rate in RATES:
        with load(settings, rate=rate, clients=1000, workers=48) as measured:
            time.sleep(PROBE_SECONDS)
        requests = measured[0]
        middle = requests.between(requests.times[0] + 1, requests.times[-1] - 0.5)
        achieved = len(middle) / max(0.1, requests.times[-1] - requests.times[0] - 1.5)
        failed = len(requests.failures())
        ok = achieved >= 0.95 * rate and failed == 0
        lines.append(
            f"  offered {rate:5d} req/s: served {achieved:6.0f} req/s, {failed} failed, "
            f"p99 {requests.report['http_p99_ms']:.0f} ms {'(sustained)' if ok else ''}"
        )
        if not ok:
            break
        best = rate
    return best, lines


def healthy_shift(settings: Any, rate: float) -> tuple[int, list[str]]:
    from pyairtable_migration.builder import build_migration_dag
    from tests.traffic.driver import make_context, run_operator
    from tests.traffic.lablib import DnsMonitor, cutover_config, load, set_dns

    set_dns(settings, production=0, ttl=OLD_TTL)
    dag = build_migration_dag(cutover_config(CUTOVER_TTL))
    context = make_context(bake_seconds=BAKE, require_approvals=False)
    steps = [f"traffic.shift_to_{w}" for w in (10, 25, 50, 75, 100)]
    started = time.monotonic()
    with DnsMonitor(settings) as monitor, load(settings, rate=rate, clients=1000, workers=48) as measured:
        time.sleep(1)
        for task_id in ["traffic.lower_ttl", *steps, "traffic.finalize"]:
            task = dag.get_task(task_id)
            task.render_template_fields(context)  # type: ignore[arg-type]
            run_operator(task, context)
        time.sleep(CUTOVER_TTL + 1)
    requests = measured[0]
    changes = monitor.weight_changes()
    shares = []
    for (at, weight), (ends, _) in zip(changes[1:], [*changes[2:], (requests.times[-1], 0)], strict=True):
        share, _ = requests.production_share(at + CUTOVER_TTL + 0.8, ends)
        shares.append(f"{weight}%->{share:.1f}")
    return len(requests.failures()), [
        f"healthy 10 -> 100 % shift at {rate:.0f} req/s offered ({requests.rate():.0f} served): "
        f"{len(requests.times)} requests, {len(requests.failures())} failed (goal 0) "
        f"in {time.monotonic() - started:.0f} s",
        f"  share on production once each TTL ran out: {', '.join(shares)}",
    ]


def breach(settings: Any) -> tuple[float, list[str]]:
    from airflow.sdk.exceptions import AirflowFailException

    from pyairtable_migration.builder import build_migration_dag
    from tests.traffic.driver import make_context, run_operator
    from tests.traffic.lablib import (
        PRODUCTION,
        DnsMonitor,
        clock_to_epoch,
        cutover_config,
        deploy_production,
        load,
        set_dns,
    )

    set_dns(settings, production=0, ttl=CUTOVER_TTL)
    deploy_production(settings, suffix="-5xx")
    task = build_migration_dag(cutover_config(CUTOVER_TTL)).get_task("traffic.shift_to_10")
    context = make_context(bake_seconds=60, require_approvals=False)
    task.render_template_fields(context)  # type: ignore[arg-type]
    events: list[Any] = []
    with DnsMonitor(settings) as monitor, load(settings, rate=BREACH_RATE) as measured:
        time.sleep(1)
        try:
            run_operator(task, context, events)
            raise AssertionError("the gate did not trip")
        except AirflowFailException:
            pass
        time.sleep(CUTOVER_TTL + 2)
    deploy_production(settings)
    requests = measured[0]
    gate = next(e for e in events if e.get("status") == "breached")
    tripped = clock_to_epoch(gate["breaching_samples"][-1]["at"])
    shifted = monitor.first_time(10) or 0.0
    reverted = next(at for at, weight in monitor.weight_changes() if at > shifted and weight == 0)
    onset = requests.first_failure_at(PRODUCTION.set_identifier) or 0.0
    last = requests.last_at(PRODUCTION.set_identifier) or 0.0
    return last - tripped, [
        f"breach -> traffic back on staging: {last - tripped:.1f} s (cutover TTL {CUTOVER_TTL} s; "
        f"goal <= {CUTOVER_TTL + 5} s)",
        f"  gate tripped {tripped - onset:.1f} s after production's first 5xx; revert written "
        f"{reverted - tripped:.2f} s after the trip; first 5xx -> staging {last - onset:.1f} s",
    ]


def figures() -> list[Figure]:
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-traffic-airflow-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the figures, not task logs
    from tests.traffic.lablib import deploy_production, private_lab

    with private_lab() as settings:
        deploy_production(settings)
        loaded, lines = load_test(settings)
        note("  " + "\n  ".join(lines))
        result = [
            at_least(
                PHASE,
                "load test: rate reached at production's ingress",
                loaded["reached_rate"],
                "req/s",
                LOAD_TEST_RATE,
            ),
            at_most(PHASE, "load test: requests failed", 100 * (loaded["error_ratio"] or 0), "%", 1),
        ]
        rate, lines = sustained(settings)
        note("  steady rate the lab sustains (weights 50/50, both environments serving):")
        note("\n".join(lines))
        result.append(at_least(PHASE, "steady rate served in full, none failed", rate, "req/s", RATES[0]))
        if rate == 0:
            note(f"  the lab did not sustain {RATES[0]} req/s; shifting at {RATES[0] // 2} req/s instead")
            rate = RATES[0] // 2
        failed, lines = healthy_shift(settings, rate)
        note("  " + "\n  ".join(lines))
        result.append(
            at_most(PHASE, f"failed requests, healthy 10 -> 100 % shift at {rate:,.0f} req/s", failed, "", 0)
        )
        seconds, lines = breach(settings)
        note("  " + "\n  ".join(lines))
        result.append(
            at_most(
                PHASE,
                f"gate breach -> traffic back on staging (TTL {CUTOVER_TTL} s)",
                seconds,
                "s",
                CUTOVER_TTL + 5,
            )
        )
    return result


def main() -> None:
    print(format_table(figures()))


if __name__ == "__main__":
    main()
