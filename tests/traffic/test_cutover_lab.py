"""The traffic phase of the real DAG on a lab, under load: users really move with the weights.

Each run is `dag.test()` of the DAG built from the configuration (short cutover TTL and bake, a
fast gate), every task outside the traffic phase marked success, against a private lab (moto,
the Kubernetes emulator with real pod servers, Prometheus scraping them each second). A load
worker process sends requests through the weighted edge the whole time and records where each
one landed, so shares and failures are measured, not inferred.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from lab.migration_config import lab_config
from lab.route53 import find_zone_id, moto_client
from lab.settings import LabSettings
from pyairtable_migration.builder import DAG_ID, build_migration_dag
from pyairtable_migration.config import MigrationConfig
from pyairtable_migration.links import HostedZoneLink, P99GraphLink
from pyairtable_migration.operators.loadtest import LoadTestOperator
from pyairtable_migration.plan import LOAD_TEST_TASK
from tests.dagrun import Responder, prepare_orm, run_id_at, task_state, xcom
from tests.traffic.driver import make_context, run_operator
from tests.traffic.lablib import (
    CONFIG,
    NOT_TRAFFIC,
    PRODUCTION,
    PUBLIC_SERVICES,
    STAGING,
    DnsMonitor,
    Requests,
    clock_to_epoch,
    cutover_config,
    deploy_production,
    load,
    private_lab,
    read_dns,
    set_dns,
    task_states,
    wait_until_production_answers,
)
from tests.validation.test_checks import context as check_context
from tests.watchdog import helper_thread

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("airflow_db"), pytest.mark.timeout(300)]

TTL = 2  # the cutover TTL
OLD_TTL = 4  # what the records have before the cutover starts
BAKE = 6
WATCH = 3  # the watch after 100 %: three gate samples
# Requests/s through the weighted edge while the healthy cutover's split is measured. At 200 the split's
# check failed once in CI (25 % measured 31.1 %): a client keeps its answer for a TTL, so fewer requests
# are fewer independent samples than counted.
SPLIT_RATE = 450
# Every other cutover's rate: a gate needs production's errors and a revert needs requests after it,
# not a precise split (the load's CPU is a large part of this module's on two cores).
RATE = 150
STEPS = [10, 25, 50, 75, 100]
# A client's cached answer is at most TTL old once the edge's view (re-read every 0.5 s) has seen
# the change; after this much time since a change every request follows the new weights.
SETTLED = TTL + 0.8
APPROVAL_TIMEOUT = 3  # seconds an approval waits for an answer in the timeout test


@pytest.fixture(scope="module")
def traffic_lab() -> Iterator[LabSettings]:
    with private_lab() as settings:
        deploy_production(settings)
        yield settings


def dns_now(settings: LabSettings) -> dict[str, tuple[int, int]]:
    client = moto_client(settings)
    return read_dns(client, find_zone_id(client, CONFIG.dns.hosted_zone))


@dataclass
class Cutover:
    run: Any
    states: dict[str, str]
    monitor: DnsMonitor
    requests: Requests
    output: str


def run_cutover(
    settings: LabSettings,
    capfd: pytest.CaptureFixture[str] | None = None,
    during: Callable[[DnsMonitor, str], object] | None = None,
    answers: Sequence[tuple[str, str | None]] = (),
    mark_success: str = NOT_TRAFFIC,
    config: MigrationConfig | None = None,
    rate: float = RATE,
    **conf: Any,
) -> Cutover:
    """dag.test() of the cutover under load; `during(monitor, run_id)` runs beside it, and each of `answers`
    (task id, choice; None: nobody answers, the scheduler's timeout sweep does) is given to that
    Human-in-the-loop task of this run when it asks."""
    dag = build_migration_dag(config or cutover_config(TTL))
    run_conf = {
        "mode": "apply",
        "require_approvals": False,
        "bake_seconds": BAKE,
        "watch_seconds": WATCH,
        **conf,
    }
    logical_date = datetime.now(UTC)
    prepare_orm()
    stop = threading.Event()
    helpers = []
    for task_id, choice in answers:
        responder = Responder(DAG_ID, run_id_at(logical_date), task_id, choice)
        helpers.append(helper_thread(functools.partial(responder.answer, stop), f"answer {task_id}"))
    with DnsMonitor(settings) as monitor, load(settings, rate=rate) as measured:
        time.sleep(1)
        if during:
            run_id = run_id_at(logical_date)
            helpers.append(helper_thread(lambda: during(monitor, run_id), "during the cutover"))
        try:
            run = dag.test(
                run_conf=run_conf,
                mark_success_pattern=mark_success,
                logical_date=logical_date,
                run_after=logical_date,
            )
            time.sleep(SETTLED + 1)
        finally:
            stop.set()
            for helper in helpers:
                helper.join(timeout=30)
    output = capfd.readouterr().out if capfd else ""
    return Cutover(run, task_states(run), monitor, measured[0], output)


@pytest.fixture(scope="module")
def healthy_cutover(traffic_lab: LabSettings) -> Cutover:
    set_dns(traffic_lab, production=0, ttl=OLD_TTL)
    deploy_production(traffic_lab)
    return run_cutover(traffic_lab, rate=SPLIT_RATE)


def test_a_healthy_cutover_under_load_follows_every_weight_and_fails_no_request(
    healthy_cutover: Cutover, traffic_lab: LabSettings
) -> None:
    cutover = healthy_cutover
    traffic = {k: v for k, v in cutover.states.items() if k.startswith("traffic.")}
    assert traffic == {
        **{f"traffic.shift_to_{w}": "success" for w in STEPS},
        "traffic.lower_ttl": "success",
        "traffic.approve_100": "skipped",  # approvals off for this run
        "traffic.watch": "success",
        "traffic.finalize": "success",
        "traffic.undo": "skipped",  # nothing failed: the way back is there to clear, not taken
    }
    assert cutover.run.state == "success"
    requests = cutover.requests
    assert requests.failures() == [], [requests.statuses[i] for i in requests.failures()[:5]]

    # The old TTL was waited out before the first shift.
    lowered = next(at for at, _, ttl in cutover.monitor.changes if ttl == TTL)
    changes = cutover.monitor.weight_changes()
    assert [weight for _, weight in changes] == [0, *STEPS]
    assert changes[1][0] - lowered >= OLD_TTL

    # Once the TTL has run out after a change, the share reaching production is the weight. A step's
    # window ends when its task ended (its bake done; the next change comes after), not when the
    # monitor saw the next change: on a busy machine its thread, sharing this process with
    # dag.test(), sees changes late, and the next weight's answers would count for this one.
    ended = {ti.task_id: ti.end_date.timestamp() for ti in cutover.run.get_task_instances() if ti.end_date}
    # Each request lands on production with probability weight/100; the share of `count` of them
    # may stray from the weight by chance, by three standard deviations at most (5 points at least:
    # the load worker's clients each keep an answer for a TTL), however many requests a loaded machine
    # managed to send in the window.
    shares, allowed = {}, {}
    for at, weight in changes[1:]:
        ends = ended[f"traffic.shift_to_{weight}"] if weight != STEPS[-1] else requests.times[-1]
        share, count = requests.production_share(at + SETTLED, ends)
        assert count >= 100, (weight, count)
        shares[weight] = round(share, 1)
        allowed[weight] = max(5.0, 3 * 100 * math.sqrt(weight / 100 * (1 - weight / 100) / count))
    print(f"production share per step once TTLs ran out: {shares} (allowed deviation {allowed})")
    assert all(abs(shares[w] - w) <= allowed[w] for w in STEPS), (shares, allowed)
    # The hosted zone's console link was stored as the task ended, as the UI reads it.
    assert xcom(cutover.run, "traffic.shift_to_10", HostedZoneLink().xcom_key).startswith(
        "https://us-east-1.console.aws.amazon.com/route53/v2/hostedzones#ListRecordSets/"
    )
    assert "/graph?g0.expr=" in xcom(cutover.run, "traffic.shift_to_10", P99GraphLink().xcom_key)
    # Finalize: production 100 / staging 0 kept, TTL restored.
    assert dns_now(traffic_lab) == {
        PRODUCTION.set_identifier: (100, CONFIG.dns.final_ttl_seconds),
        STAGING.set_identifier: (0, CONFIG.dns.final_ttl_seconds),
    }


def test_rerunning_a_step_whose_weights_are_right_changes_nothing(
    healthy_cutover: Cutover, traffic_lab: LabSettings
) -> None:
    before = dns_now(traffic_lab)
    step = build_migration_dag(cutover_config(TTL)).get_task("traffic.shift_to_100")
    context = make_context(bake_seconds=2)
    step.render_template_fields(context)  # type: ignore[arg-type]
    with DnsMonitor(traffic_lab) as monitor, load(traffic_lab, rate=200) as measured:
        outcome = run_operator(step, context)
    assert outcome.value["change_id"] is None and outcome.value["changed"] == []
    assert outcome.value["gate"]["status"] == "passed"
    assert len(monitor.changes) == 1 and dns_now(traffic_lab) == before
    requests = measured[0]
    assert requests.failures() == []
    assert requests.production_share(0, float("inf"))[0] == 100


def test_production_answering_5xx_trips_the_gate_and_traffic_returns_to_staging(
    traffic_lab: LabSettings, capfd: pytest.CaptureFixture[str]
) -> None:
    set_dns(traffic_lab, production=0, ttl=TTL)
    deploy_production(traffic_lab)

    def break_production_at_25(monitor: DnsMonitor, run_id: str) -> None:
        deadline = time.monotonic() + 120
        while monitor.first_time(25) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        deploy_production(traffic_lab, suffix="-5xx")

    try:
        cutover = run_cutover(
            traffic_lab,
            capfd,
            during=break_production_at_25,
            traffic_steps=[10, 25, 100],
            bake_seconds=15,
        )
    finally:
        deploy_production(traffic_lab)
    states = cutover.states
    assert states["traffic.shift_to_10"] == "success"
    assert states["traffic.shift_to_25"] == "failed"
    assert states["traffic.shift_to_100"] == states["traffic.watch"] == "upstream_failed"
    assert states["traffic.finalize"] == "upstream_failed"
    assert states["traffic.undo"] == "success"  # the phase failed: its undo ran (a no-op after the revert)
    # validation.report, the DAG's leaf, fails a real run that has a failed task; this test marks
    # every non-traffic task success without running it, so the failed step is what it checks.
    reverted = assert_tripped_and_reverted(cutover, traffic_lab, 25)
    # Production then served only clients still holding a cached answer, so its last request falls
    # within the records' TTL of the revert (a margin for a busy machine).
    last_on_production = cutover.requests.last_at(PRODUCTION.set_identifier)
    assert last_on_production is not None
    assert last_on_production - reverted <= TTL + 10, (reverted, last_on_production)


def assert_tripped_and_reverted(cutover: Cutover, settings: LabSettings, weight: int) -> float:
    """The gate tripped at `weight` % on the error ratio, every record is back on staging, and after
    the trip (its third breaching sample) the one weight change is the revert: nothing shifted
    forward. Returns when the revert was seen."""
    assert f"gate tripped at {weight} %: 3 consecutive breaching samples of production" in cutover.output
    # Production answers only 500s now, yet a sample's rate window may still hold requests from
    # before the bad image: a ratio of 1 or under it on a loaded machine.
    assert re.search(r"error ratio [\d.]+ > max 0\.01", cutover.output), cutover.output[-3000:]
    assert "Traffic reverted to staging (production 0 / staging 100" in cutover.output
    assert dns_now(settings) == {PRODUCTION.set_identifier: (0, TTL), STAGING.set_identifier: (100, TTL)}
    tripped = tripped_at(cutover.output)
    after_trip = [(at, moved_to) for at, moved_to in cutover.monitor.weight_changes() if at >= tripped]
    assert [moved_to for _, moved_to in after_trip] == [0], after_trip
    return float(after_trip[0][0])


def test_production_failing_during_the_watch_puts_every_user_back_on_staging(
    traffic_lab: LabSettings, capfd: pytest.CaptureFixture[str]
) -> None:
    """After 100 %, the watch keeps the gate on production; production starts answering 5xx (a bad
    release, a dependency gone) and the watch trips: every user back on staging within the cutover
    TTL, the watch failed as a breach, and finalize never ran (the TTL stays the cutover's)."""
    set_dns(traffic_lab, production=0, ttl=TTL)
    deploy_production(traffic_lab)

    def break_production_once_watched(monitor: DnsMonitor, run_id: str) -> None:
        # Once 100 % has passed its own gate, the watch is next. (Its deferral is no state to wait
        # for: dag.test() shows it `deferred` only for an instant, then `queued` while its trigger
        # runs in line.)
        deadline = time.monotonic() + 240
        while task_state(DAG_ID, run_id, "traffic.shift_to_100") != "success":
            assert time.monotonic() < deadline, "traffic.shift_to_100 never succeeded"
            time.sleep(0.1)
        deploy_production(traffic_lab, suffix="-5xx")

    try:
        cutover = run_cutover(
            traffic_lab,
            capfd,
            during=break_production_once_watched,
            traffic_steps=[50, 100],
            bake_seconds=3,
            watch_seconds=60,
        )
    finally:
        deploy_production(traffic_lab)
    states = cutover.states
    assert states["traffic.shift_to_100"] == "success", states
    assert states["traffic.watch"] == "failed" and states["traffic.finalize"] == "upstream_failed", states
    reverted = assert_tripped_and_reverted(cutover, traffic_lab, 100)
    share, count = cutover.requests.production_share(reverted + SETTLED, float("inf"))
    assert count > 0 and share == 0, (share, count)


def lab_load_test(settings: LabSettings) -> LoadTestOperator:
    """The lab's load test (its config's rate, duration, connections and budgets) over the services
    this lab runs in production, at production's ingress."""
    config = lab_config(settings)
    load_test = config.traffic.load_test
    assert load_test is not None
    return LoadTestOperator(
        task_id=LOAD_TEST_TASK,
        url_template=load_test.url_template,
        services={
            name: (config.deployable[name].slo_class, config.deployable[name].health_path)
            for name in PUBLIC_SERVICES
        },
        slo_classes=dict(config.slo_classes),
        rate=load_test.rate,
        duration_seconds=load_test.duration_seconds,
        max_error_ratio=load_test.max_error_ratio,
        connections_per_service=load_test.connections_per_service,
        request_timeout_seconds=load_test.request_timeout_seconds,
        hey_path=load_test.hey_path,
    )


def test_the_load_test_at_production_passes_healthy_pods_and_names_a_5xx_and_a_slow_service(
    traffic_lab: LabSettings,
) -> None:
    deploy_production(traffic_lab)
    wait_until_production_answers(traffic_lab)  # an earlier test's faulty pods may still be draining
    healthy = lab_load_test(traffic_lab).execute(check_context())  # type: ignore[arg-type]
    assert healthy["failed"] == 0 and set(healthy["services"]) == set(PUBLIC_SERVICES), healthy
    assert all(figures["requests"] > 0 for figures in healthy["services"].values()), healthy

    deploy_production(traffic_lab, faults={"web-bff": "-5xx", "auth-frontend": "-slow"})
    context = check_context()
    try:
        with pytest.raises(AirflowFailException) as refused:
            lab_load_test(traffic_lab).execute(context)  # type: ignore[arg-type]
    finally:
        deploy_production(traffic_lab)
    message = str(refused.value)
    # Most, not all: the old pods may still answer the first requests while the faulty ones roll out.
    assert re.search(r"web-bff: [\d.]+% of \d+ requests failed \(HTTP 500\)", message), message
    budget = lab_config(traffic_lab).slo_classes[CONFIG.deployable["auth-frontend"].slo_class]
    assert "auth-frontend: p95 " in message and f">= {budget} ms" in message, message
    assert "api-gateway" not in message, message
    figures = context["ti"].pushed["figures"]["services"]
    assert figures["api-gateway"]["failed"] == 0, figures
    assert figures["auth-frontend"]["p95_ms"] >= budget, figures


def tripped_at(output: str) -> float:
    """When the gate tripped: the time of the last breaching sample in the failure message."""
    line = next(line for line in output.splitlines() if "gate tripped at" in line)
    return clock_to_epoch(re.findall(r"(\d\d:\d\d:\d\d\.\d\d\d): ", line)[-1])


def test_an_approval_nobody_answers_times_out_to_reject_traffic_back_on_staging_100_never_runs(
    traffic_lab: LabSettings, capfd: pytest.CaptureFixture[str]
) -> None:
    """Approvals before 50 and 100 %, assigned to one engineer: 50 % is approved (who and when
    recorded), nobody answers for 100 %, and once its timeout passes the scheduler's sweep applies
    the default answer: Reject puts traffic back on staging, and 100 % never runs."""
    set_dns(traffic_lab, production=0, ttl=TTL)
    config = cutover_config(
        TTL,
        approval_before=[50, 100],
        approvers=[{"id": "7", "name": "oncall"}],
        timeout_seconds=APPROVAL_TIMEOUT,
    )
    cutover = run_cutover(
        traffic_lab,
        capfd,
        answers=[("traffic.approve_50", "Approve"), ("traffic.approve_100", None)],
        config=config,
        require_approvals=True,
        traffic_steps=[50, 100],
    )
    states = cutover.states
    assert states["traffic.approve_50"] == states["traffic.shift_to_50"] == "success", states
    approved = xcom(cutover.run, "traffic.approve_50")
    assert (approved["approved"], approved["by"], approved["timed_out"]) == (True, "oncall", False)
    assert datetime.fromisoformat(approved["answered_at"]) >= cutover.run.start_date
    assert states["traffic.approve_100"] == "failed"
    assert states["traffic.shift_to_100"] == "upstream_failed"
    nobody = f"nobody (no answer within {APPROVAL_TIMEOUT:g} s: the timeout's default)"
    assert f"100 % rejected by {nobody}: traffic is back on staging" in cutover.output
    assert "Who may answer: oncall (7)" in cutover.output
    assert assigned_users(cutover.run, "traffic.approve_100") == [{"id": "7", "name": "oncall"}]
    assert [w for _, w in cutover.monitor.weight_changes()] == [0, 50, 0], "100 % was never set"
    requests = cutover.requests
    assert requests.failures() == []
    reverted = cutover.monitor.weight_changes()[-1][0]
    assert requests.production_share(reverted + SETTLED, float("inf"))[0] == 0


def assigned_users(run: Any, task_id: str) -> Any:
    """Who the approval was assigned to, as Airflow recorded it for the Required Actions page."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == run.dag_id,
                TaskInstance.run_id == run.run_id,
                TaskInstance.task_id == task_id,
            )
        )
        assert ti is not None, task_id
        detail = session.get(HITLDetail, ti.id)
        assert detail is not None, task_id
        return detail.assigned_users
