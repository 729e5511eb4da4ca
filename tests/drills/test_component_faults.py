"""Fault drills on real lab components: a part of the lab fails mid-phase, and the migration copes.

  1. The source PostgreSQL restarts during the initial copy (on the database tests' own pair):
     the lost connections disable the subscription (disable_on_error), the wait finds no
     conflicting row and enables it again, the copy completes, both sides end equal, and no write
     the database acknowledged is lost.
  2. moto (the lab's Route53) restarts mid traffic phase and comes back without the hosted zone:
     the next step fails naming what is missing; once the zone is seeded, clearing it succeeds.
  3. Prometheus stops while a weight step bakes: with no sample at all the gate fails safe and
     traffic is not shifted forward; once Prometheus is back, clearing the step passes. Prometheus
     lost after the bake's first sample fails the gate too: a bake that ends blind is no data.
The traffic drills run on a private traffic lab (moto, the Kubernetes emulator, Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from botocore.exceptions import EndpointConnectionError

from lab.loadgen import LoadGenerator
from lab.processes import State, start_detached, wait_until_answers
from lab.route53 import Moto
from lab.settings import LabSettings
from lab.supervisor import restart_component, start_component, stop_component
from pyairtable_migration.builder import build_migration_dag
from pyairtable_migration.config import MigrationConfig
from pyairtable_migration.dns.weights import RecordsNotFound
from pyairtable_migration.hooks.prometheus import PrometheusHook
from pyairtable_migration.operators.traffic import ShiftTrafficOperator
from tests.database.pair import Pair
from tests.database.runner import run_fast, run_task
from tests.database.test_migration import wait_until
from tests.traffic.driver import first_event, make_context, run_operator
from tests.traffic.lablib import CONFIG, PRODUCTION, STAGING, cutover_config, load, set_dns
from tests.traffic.test_cutover_lab import TTL, dns_now

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

DB_RATE = 200  # commits/s through PgBouncer while the source restarts
RATE = 150  # requests/s through the weighted edge: production needs traffic for the gate to see
BAKE = 6


# --- 1. the source PostgreSQL restarts during the initial copy --------------------------------------


def target_count(pair: Pair, query: str, name: str) -> int:
    """The count `query` reads on the target for `name` (its one parameter); 0 when it finds no row."""
    rows = pair.query("target", query, (name,))
    return int(rows[0][0]) if rows else 0


def copied_rows(pair: Pair, table: str) -> int:
    """Rows the target's initial copy of `table` has read so far (0 when no copy is running)."""
    query = "SELECT tuples_processed FROM pg_stat_progress_copy WHERE relid = to_regclass(%s)"
    return target_count(pair, query, table)


def sync_states(pair: Pair) -> dict[str, str]:
    return dict(pair.query("target", "SELECT srrelid::regclass::text, srsubstate FROM pg_subscription_rel"))


def sync_errors(pair: Pair, subscription: str) -> int:
    query = "SELECT sync_error_count FROM pg_stat_subscription_stats WHERE subname = %s"
    return target_count(pair, query, subscription)


@pytest.fixture
def fresh_pair(pair: Pair) -> Pair:
    """The pair as the database phase finds it: no replication yet, the target empty."""
    pair.reset()
    return pair


def restart_the_source_during_the_initial_copy(pair: Pair, config: MigrationConfig) -> None:
    """Run the phase up to create_subscription, then restart the source PostgreSQL (pg_ctl stop
    -m fast, start again on its port and data directory) while `records` is being copied."""
    run_task(config, "database.copy_schema")
    run_task(config, "database.create_publication")
    assert run_task(config, "database.create_subscription")["action"] == "created"
    wait_until(
        lambda: sync_states(pair).get("records") == "d" and copied_rows(pair, "records") > 0,
        timeout=120,
        what="the initial copy of records under way",
    )
    restart_component("postgres-source", pair.settings)
    # The restart cut the copy: its worker failed, and records is not ready.
    assert sync_states(pair)["records"] != "r"
    wait_until(
        lambda: sync_errors(pair, config.database.subscription) > 0,
        timeout=60,
        what="the interrupted copy counted as a table sync error",
    )


def test_replication_resumes_by_itself_after_a_source_restart_during_the_initial_copy_losing_nothing(
    fresh_pair: Pair, config: MigrationConfig, tmp_path: Path
) -> None:
    pair, ledger = fresh_pair, tmp_path / "ledger.log"
    load_generator = LoadGenerator(
        dsn=pair.app_dsn(), db_rate=DB_RATE, ledger_path=ledger, edge=None, http_rate=0
    )
    load_generator.start()
    try:
        restart_the_source_during_the_initial_copy(pair, config)
        commits_at_restart = load_generator.report()["db_commits"]
        # The copy of records starts again and every table becomes ready; the lag gate passes.
        assert run_task(config, "database.wait_initial_sync")["tables"] == 11
        assert set(sync_states(pair).values()) == {"r"}
        # The restart's lost connections disabled the subscription (disable_on_error); the wait
        # found no conflicting row and enabled it again by itself.
        assert pair.query("target", "SELECT subenabled FROM pg_subscription") == [(True,)]
        assert run_fast(config, "database.lag_gate")["passed"] is True
        # Writers reconnected through PgBouncer and keep committing after the restart.
        wait_until(
            lambda: load_generator.report()["db_commits"] > commits_at_restart + DB_RATE,
            timeout=60,
            what="commits after the restart",
        )
    finally:
        figures = load_generator.stop()
    # Writes failed while the source was down (each failure reported to its writer); only
    # acknowledged ones are in the ledger, and every one of them must be on the target.
    print(f"writes across the restart: {figures['db_commits']} committed, {figures['db_failures']} failed")
    validation = run_task(config, "database.validate_data")
    assert validation["passed"] is True and validation["rows"] >= pair.records
    report = pair.ledger_report("target", ledger)
    assert report.checked == figures["db_commits"] and report.lost == 0, report.summary()


# --- the traffic lab -------------------------------------------------------------------------------


def shift_step(weight: int) -> ShiftTrafficOperator:
    """The DAG's weight step (short cutover TTL, a gate sampling each second over 5 s)."""
    step = build_migration_dag(cutover_config(TTL)).get_task(f"traffic.shift_to_{weight}")
    assert isinstance(step, ShiftTrafficOperator)
    return step


def weights(settings: LabSettings) -> dict[str, int]:
    return {identifier: weight for identifier, (weight, _) in dns_now(settings).items()}


def at(production: int) -> dict[str, int]:
    return {PRODUCTION.set_identifier: production, STAGING.set_identifier: 100 - production}


def run_step(weight: int) -> Any:
    step = shift_step(weight)
    context = make_context(bake_seconds=BAKE)
    step.render_template_fields(context)  # type: ignore[arg-type]
    return run_operator(step, context).value


def wait_for_gate_data(step: ShiftTrafficOperator) -> None:
    """Until Prometheus answers every gate query with a value (it has scraped production's traffic)."""
    prometheus = PrometheusHook(step.prometheus_conn_id)
    queries = step.gate_queries().values()

    def answered() -> bool:
        try:
            return all(prometheus.instant_value(query) is not None for query in queries)
        except Exception:
            return False

    wait_until(answered, timeout=90, what="Prometheus answering the gate queries")


# --- 2. moto restarts mid traffic phase --------------------------------------------------------------


def start_moto_without_its_seed(settings: LabSettings) -> None:
    """Start the lab's moto as a restarted moto comes up: empty, no hosted zone.

    (start_component would seed it at once; the drill is the step meeting the empty Route53.)
    """
    moto = Moto()
    process = start_detached(moto, settings)
    state = State(settings)
    state.pids[moto.name] = process.pid
    state.save()
    wait_until_answers(moto, settings, process)


def test_a_moto_restart_fails_the_next_step_clearly_and_a_clear_after_seeding_completes_it(
    traffic_lab: LabSettings,
) -> None:
    set_dns(traffic_lab, production=10, ttl=TTL)
    with load(traffic_lab, rate=RATE):
        wait_for_gate_data(shift_step(25))
        assert run_step(25)["gate"]["status"] == "passed"
    assert weights(traffic_lab) == at(25)

    # moto goes down: the next step cannot reach Route53 and says where it tried.
    stop_component("moto", traffic_lab)
    with pytest.raises(EndpointConnectionError) as down:
        run_step(50)
    assert f"{traffic_lab.host}:{traffic_lab.moto_port}" in str(down.value)

    # moto is back, empty: the step fails naming the hosted zone it did not find.
    start_moto_without_its_seed(traffic_lab)
    with pytest.raises(RecordsNotFound) as missing:
        run_step(50)
    assert str(missing.value) == f"hosted zone {CONFIG.dns.hosted_zone} not found"

    # The lab seeds the zone again (staging 100 / production 0); clearing the step completes it.
    pid = start_component("moto", traffic_lab)
    assert weights(traffic_lab) == at(0)
    with load(traffic_lab, rate=RATE):  # a new edge: the old one knew the lost zone's id
        summary = run_step(50)
    assert summary["gate"]["status"] == "passed"
    assert summary["weights_before"] == {name: at(0) for name in CONFIG.dns.records}
    assert weights(traffic_lab) == at(50)
    assert start_component("moto", traffic_lab) == pid  # the seed ran on the running moto


# --- 3. Prometheus stops while a step bakes ----------------------------------------------------------


def run_with_fault_before_the_bake(
    step: ShiftTrafficOperator, context: dict[str, Any], fault: Callable[[], None]
) -> Any:
    """Run the step; once it has moved the weights and deferred to its gate, `fault` happens,
    then the gate bakes and the step resumes on its event (as the triggerer and a worker would)."""
    try:
        step.execute(context)  # type: ignore[arg-type]
    except TaskDeferred as deferred:
        fault()
        event = asyncio.run(first_event(deferred.trigger))
        return getattr(step, deferred.method_name)(context, event=event.payload)
    raise AssertionError("the step did not defer to its gate")


@contextlib.contextmanager
def step_to_50_under_load(traffic_lab: LabSettings) -> Iterator[tuple[ShiftTrafficOperator, dict[str, Any]]]:
    """Production at 25 %, and the 50 % step rendered for a bake of BAKE seconds; inside, load runs
    through the edge and Prometheus already answers the step's gate queries."""
    set_dns(traffic_lab, production=25, ttl=TTL)
    step = shift_step(50)
    context = make_context(bake_seconds=BAKE)
    step.render_template_fields(context)  # type: ignore[arg-type]
    with load(traffic_lab, rate=RATE):
        wait_for_gate_data(step)
        yield step, context


def test_prometheus_down_while_a_step_bakes_fails_the_gate_safe_and_a_clear_passes_once_it_is_back(
    traffic_lab: LabSettings,
) -> None:
    with step_to_50_under_load(traffic_lab) as (step, context):
        try:
            with pytest.raises(AirflowFailException) as failed:
                run_with_fault_before_the_bake(
                    step, context, lambda: stop_component("prometheus", traffic_lab)
                )
            message = str(failed.value)
            assert "Prometheus did not answer during the whole bake" in message, message
            assert "production's health at 50 % is unknown, so traffic is not shifted forward" in message
            assert "Traffic stays at production 50 / staging 50" in message
            # Traffic stays at the step's own weight; the step failed, so the DAG's next step
            # (trigger rule none_failed) never runs: production goes no further.
            assert weights(traffic_lab) == at(50)
        finally:
            start_component("prometheus", traffic_lab)
        wait_for_gate_data(step)
        summary = run_step(50)
    assert summary["gate"]["status"] == "passed" and summary["change_id"] is None
    assert weights(traffic_lab) == at(50)


def gate_queries_answered(settings: LabSettings) -> float:
    """How many instant queries Prometheus has answered (its own counter)."""
    text = requests.get(f"http://{settings.host}:{settings.prometheus_port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
    )


def test_prometheus_lost_after_the_bakes_first_sample_still_fails_the_gate_safe(
    traffic_lab: LabSettings,
) -> None:
    with step_to_50_under_load(traffic_lab) as (step, context):
        before = gate_queries_answered(traffic_lab)
        stop = threading.Event()

        def stop_after_the_first_sample() -> None:
            # One sample is one query per gate query; production had data, so that sample is complete.
            while not stop.is_set():
                with contextlib.suppress(requests.RequestException):
                    if gate_queries_answered(traffic_lab) >= before + len(step.gate_queries()):
                        stop_component("prometheus", traffic_lab)
                        return
                stop.wait(0.05)

        watcher = threading.Thread(target=stop_after_the_first_sample, daemon=True)
        watcher.start()
        try:
            with pytest.raises(AirflowFailException, match="the bake ended blind"):
                run_operator(step, context)
        finally:
            stop.set()
            watcher.join(timeout=30)
            start_component("prometheus", traffic_lab)
    assert weights(traffic_lab) == at(50)
