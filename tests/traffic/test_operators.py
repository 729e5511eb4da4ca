"""The traffic operators, built by the real plan and builder, run as a worker and triggerer would
(execute, defer, trigger, resume) against our moto and a scripted Prometheus."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred

from lab.synthetic_graph import real_document
from pyairtable_migration.builder import build_migration_dag
from pyairtable_migration.config import parse_config
from pyairtable_migration.hooks.prometheus import PrometheusHook
from pyairtable_migration.links import ErrorRatioGraphLink, HostedZoneLink, P99GraphLink
from pyairtable_migration.operators.traffic import TrafficRollbackOperator
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
from tests.traffic.driver import Outcome, first_event, make_context, run_operator


def unit_config(**gate: Any) -> Any:
    """The real configuration pointed at our moto and scripted Prometheus, with short durations."""
    document = real_document()
    document["dns"].update(aws_conn_id=AWS_CONN, cutover_ttl_seconds=1, final_ttl_seconds=300)
    document["traffic"]["gate"].update({"prometheus_conn_id": PROMETHEUS_CONN, "sample_seconds": 0.2, **gate})
    # No pooler here; the writers' guard is tested in tests/rollback.
    document["traffic"]["require_writers_on_target"] = False
    return parse_config(yaml.safe_dump(document))


def task(task_id: str, **gate: Any) -> Any:
    return build_migration_dag(unit_config(**gate)).get_task(task_id)


def run(task_id: str, context: dict[str, Any] | None = None, **gate: Any) -> Outcome:
    operator = task(task_id, **gate)
    context = context or make_context()
    operator.render_template_fields(context)
    return run_operator(operator, context)


TRAFFIC_TASKS = [
    "traffic.lower_ttl",
    "traffic.shift_to_10",
    "traffic.approve_100",
    "traffic.shift_to_100",
    "traffic.watch",
    "traffic.finalize",
    "preflight.check_dns",
    "preflight.check_prometheus",
]


@pytest.mark.parametrize("task_id", TRAFFIC_TASKS)
def test_plan_mode_changes_nothing_and_connects_to_nothing(
    task_id: str, zone: Zone, fake_prometheus: FakePrometheus
) -> None:
    outcome = run(task_id, make_context(mode="plan"))
    assert outcome.value["mode"] == "plan"
    assert outcome.deferrals == []
    assert zone.change_calls == [] and zone.weights() == all_at(0)
    assert fake_prometheus.queries == []


def test_lower_ttl_lowers_every_record_then_waits_out_the_old_ttl(zone: Zone) -> None:
    zone.set(0, ttl=2)
    started = time.monotonic()
    outcome = run("traffic.lower_ttl")
    assert time.monotonic() - started >= 2, "the old TTL (2 s) is waited out"
    assert {ttl for by_id in zone.read().values() for _, ttl in by_id.values()} == {1}
    assert len(zone.change_calls) == 1 and len(outcome.value["changed"]) == 6
    assert outcome.value["wait_seconds"] == 2
    assert "old TTL max 2s" in zone.change_calls[0]["ChangeBatch"]["Comment"]
    assert outcome.value["old_ttls"][f"{RECORDS[0]} [{STAGING}]"] == 2

    again = run("traffic.lower_ttl")
    assert again.value["change_id"] is None and len(zone.change_calls) == 1
    assert again.value["wait_seconds"] == 1, "nothing lowered now: wait max(current TTL)"


def test_a_step_sets_both_weights_bakes_and_passes_then_a_rerun_changes_nothing(
    zone: Zone, fake_prometheus: FakePrometheus
) -> None:
    started = time.monotonic()
    outcome = run("traffic.shift_to_25", make_context(bake_seconds=1))
    assert time.monotonic() - started >= 1, "the bake lasts bake_seconds (the run's param)"
    assert zone.weights() == all_at(25)
    assert len(zone.change_calls) == 1 and len(zone.change_calls[0]["ChangeBatch"]["Changes"]) == 6
    assert outcome.value["gate"]["status"] == "passed"
    assert outcome.value["weights_before"] == all_at(0)
    assert any('namespace="pyairtable-production"' in q for q in fake_prometheus.queries)

    again = run("traffic.shift_to_25", make_context(bake_seconds=0.5))
    assert again.value["change_id"] is None and again.value["changed"] == []
    assert len(zone.change_calls) == 1, "weights already right: no change sent"
    assert again.value["gate"]["status"] == "passed", "the gate still runs"


def test_a_step_left_out_of_the_run_is_skipped(zone: Zone) -> None:
    with pytest.raises(
        AirflowSkipException, match=r"25 % is not among this run's traffic steps \[10, 50, 100\]"
    ):
        run("traffic.shift_to_25", make_context(traffic_steps=[10, 50, 100]))
    assert zone.change_calls == []


def test_a_breach_reverts_to_staging_and_fails_with_the_values(
    zone: Zone, fake_prometheus: FakePrometheus
) -> None:
    zone.set(25, ttl=300)
    fake_prometheus.error_ratio = 0.42
    fake_prometheus.p99 = 0.031
    with pytest.raises(AirflowFailException) as caught:
        run("traffic.shift_to_50", make_context(bake_seconds=30))
    message = str(caught.value)
    assert "gate tripped at 50 %: 3 consecutive breaching samples" in message
    assert "error ratio 0.42 > max 0.01" in message and "p99 0.031 s" in message
    assert "Traffic reverted to staging (production 0 / staging 100" in message
    assert zone.weights() == all_at(0)
    assert len(zone.change_calls) == 2, "the shift, then the revert: one batch each"


def test_the_step_reverts_itself_when_the_trigger_could_not(zone: Zone) -> None:
    zone.set(50, ttl=60)
    step = task("traffic.shift_to_50")
    context = make_context()
    breached = {
        "status": "breached",
        "message": "gate tripped at 50 %: 3 consecutive breaching samples of production: ...",
        "peaks": {},
        "limits": {},
        "breaching_samples": [],
        "reverted": {"error": "EndpointConnectionError: Route53 unreachable"},
        "carry": {"step": {"weight": 50}},
    }
    with pytest.raises(TaskDeferred) as deferred:
        step.execute_complete(context, breached)
    assert zone.weights() == all_at(0)
    with pytest.raises(AirflowFailException, match="Traffic reverted to staging"):
        step.fail_after_revert(context, asyncio.run(first_event(deferred.value.trigger)).payload)


def test_the_watch_gates_production_at_100_and_changes_nothing_while_it_is_healthy(
    zone: Zone, fake_prometheus: FakePrometheus
) -> None:
    zone.set(100, ttl=60)
    started = time.monotonic()
    outcome = run("traffic.watch", make_context(watch_seconds=1))
    assert time.monotonic() - started >= 1, "the watch lasts watch_seconds (the run's param)"
    assert outcome.value["gate"]["status"] == "passed" and outcome.value["watch_seconds"] == 1
    assert zone.change_calls == [] and zone.weights() == all_at(100)
    assert any('namespace="pyairtable-production"' in q for q in fake_prometheus.queries)


def test_a_breach_during_the_watch_puts_every_user_back_on_staging(
    zone: Zone, fake_prometheus: FakePrometheus
) -> None:
    zone.set(100, ttl=60)
    fake_prometheus.error_ratio = 0.3
    with pytest.raises(AirflowFailException) as caught:
        run("traffic.watch", make_context(watch_seconds=30))
    assert "gate tripped at 100 %: 3 consecutive breaching samples" in str(caught.value)
    assert "Traffic reverted to staging (production 0 / staging 100" in str(caught.value)
    assert zone.weights() == all_at(0) and len(zone.change_calls) == 1


def test_the_watch_refuses_unless_every_user_is_on_production_and_0_seconds_skips_it(zone: Zone) -> None:
    zone.set(50, ttl=60)
    with pytest.raises(
        AirflowFailException, match=r"not watching: traffic is not fully on production \("
    ) as caught:
        run("traffic.watch")
    assert f"{RECORDS[0]} [{STAGING}] weight 50 (expected 0)" in str(caught.value)
    with pytest.raises(AirflowSkipException, match="watch_seconds is 0: no watch after the cutover"):
        run("traffic.watch", make_context(watch_seconds=0))
    assert zone.change_calls == [] and zone.weights() == all_at(50)


@pytest.mark.parametrize("why", ["no data", "prometheus down"])
def test_no_data_or_prometheus_down_fails_without_shifting(
    why: str, zone: Zone, fake_prometheus: FakePrometheus
) -> None:
    zone.set(10, ttl=300)
    gate = {"prometheus_conn_id": DOWN_PROMETHEUS_CONN} if why == "prometheus down" else {}
    fake_prometheus.error_ratio = fake_prometheus.p99 = None
    with pytest.raises(AirflowFailException) as caught:
        run("traffic.shift_to_25", make_context(bake_seconds=0.5), **gate)
    expected = "did not answer during the whole bake" if gate else "had no data for production"
    assert expected in str(caught.value)
    assert "Traffic stays at production 25 / staging 75" in str(caught.value)
    assert zone.weights() == all_at(25), "fail safe: stays at the step, never further"


def approval_event(choice: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "chosen_options": [choice],
        "params_input": {},
        "responded_at": datetime.now(UTC),
        "responded_by_user": {"id": "7", "name": "oncall"},
    }


def test_approval_is_skipped_when_approvals_are_off(zone: Zone) -> None:
    with pytest.raises(AirflowSkipException, match="approvals off"):
        run("traffic.approve_100", make_context(require_approvals=False))


def test_a_rejection_puts_traffic_back_on_staging_and_fails(zone: Zone) -> None:
    zone.set(75, ttl=60)
    approval = task("traffic.approve_100")
    context = make_context()
    with pytest.raises(AirflowFailException, match="100 % rejected by oncall: traffic is back on staging"):
        try:
            approval.execute_complete(context, approval_event("Reject"))
        except TaskDeferred as deferred:  # wait INSYNC, then fail
            event = asyncio.run(first_event(deferred.trigger)).payload
            getattr(approval, deferred.method_name)(context, event)
    assert zone.weights() == all_at(0)

    given = approval_event("Approve")
    approved = approval.execute_complete(context, given)
    assert approved == {
        "approved": True,
        "by": "oncall",
        "answered_at": given["responded_at"].isoformat(),
        "timed_out": False,
        "weight": 100,
    }


def test_finalize_refuses_before_100_then_restores_the_ttl(zone: Zone) -> None:
    zone.set(75, ttl=1)
    with pytest.raises(AirflowFailException, match="not finalizing: traffic is not fully on production"):
        run("traffic.finalize")
    assert zone.change_calls == []

    zone.set(100, ttl=1)
    outcome = run("traffic.finalize")
    assert zone.weights() == all_at(100), "staging stays, at weight 0"
    assert {ttl for by_id in zone.read().values() for _, ttl in by_id.values()} == {300}
    assert outcome.value["staging_kept_until"]
    assert run("traffic.finalize").value["change_id"] is None


def rollback() -> TrafficRollbackOperator:
    return TrafficRollbackOperator(
        task_id="rollback_traffic",
        aws_conn_id=AWS_CONN,
        hosted_zone=ZONE,
        records=RECORDS,
        staging_set_identifier=STAGING,
        production_set_identifier=PRODUCTION,
    )


def test_rollback_puts_everyone_on_staging_and_is_a_noop_when_already_there(zone: Zone) -> None:
    zone.set(50, ttl=60)
    outcome = run_operator(rollback(), make_context())
    assert zone.weights() == all_at(0)
    assert len(outcome.value["changed"]) == 6 and len(outcome.deferrals) == 1
    again = run_operator(rollback(), make_context())
    assert again.value["change_id"] is None and again.deferrals == []
    assert len(zone.change_calls) == 1


def test_dns_preflight_passes_and_names_every_problem_at_once(
    zone: Zone, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = make_context()
    assert run("preflight.check_dns", context).value["weights"] == all_at(0)
    assert context["ti"].xcom[HostedZoneLink.key] == zone.zone_id

    unknown = f"apii.{ZONE}"
    operator = task("preflight.check_dns")
    operator.records = [*RECORDS, unknown]
    operator.production_set_identifier = "prod"
    with pytest.raises(AirflowFailException) as caught:
        run_operator(operator, make_context())
    message = str(caught.value)
    assert f"record {unknown} not found in hosted zone {ZONE}" in message
    assert all(f"record {name} has no weighted set 'prod'" in message for name in RECORDS)
    assert "4 problem(s), nothing changed" in message

    operator = task("preflight.check_dns")
    operator.hosted_zone = "pyairtable.example.org."
    with pytest.raises(AirflowFailException, match=r"hosted zone pyairtable\.example\.org\. not found"):
        run_operator(operator, make_context())
    assert zone.change_calls == []


def test_prometheus_preflight_names_a_refused_query_and_a_down_prometheus(
    zone: Zone, fake_prometheus: FakePrometheus
) -> None:
    assert run("preflight.check_prometheus").value["values"] == {"error_ratio_query": 0.0, "p99_query": 0.05}
    fake_prometheus.refuse = "histogram_quantile"
    with pytest.raises(AirflowFailException) as caught:
        run("preflight.check_prometheus")
    assert "p99_query: Prometheus refused the query (bad_data): 1:1: parse error" in str(caught.value)
    assert "error_ratio_query" not in str(caught.value)
    with pytest.raises(
        AirflowFailException, match=r"Prometheus \(traffic_test_prometheus_down\) did not answer"
    ):
        run("preflight.check_prometheus", prometheus_conn_id=DOWN_PROMETHEUS_CONN)


def test_extra_links(zone: Zone, fake_prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch) -> None:
    operator = task("traffic.shift_to_10")
    assert {link.name for link in operator.operator_extra_links} == {
        "Route53 hosted zone",
        "Prometheus: production error ratio",
        "Prometheus: production p99",
    }
    base = PrometheusHook(PROMETHEUS_CONN).base()
    error_link = ErrorRatioGraphLink().get_link(operator, ti_key=None)  # type: ignore[arg-type]
    assert error_link.startswith(f"{base}/graph?g0.expr=")
    assert "pyairtable-production" in error_link and "%24selector" not in error_link
    assert P99GraphLink().get_link(operator, ti_key=None).count("histogram_quantile") == 1  # type: ignore[arg-type]
    monkeypatch.setattr("pyairtable_migration.links.XCom.get_value", lambda **_: "Z42")
    assert HostedZoneLink().get_link(operator, ti_key=None).endswith("#ListRecordSets/Z42")  # type: ignore[arg-type]
    assert len({link.xcom_key for link in operator.operator_extra_links}) == 3


def test_extra_links_survive_serialization_without_a_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 3.3 stores each link's URL in XCom when the task ends (task runner `finalize`) and
    the UI reads it back by name: the serialized task keeps the names, no plugin registers them."""
    from airflow.serialization.serialized_objects import DagSerialization

    # Whether links are loaded is a class attribute the last SerializedDagModel.dag read set (a
    # scheduler-side read of an earlier test sets False); the API server reads with True.
    monkeypatch.setattr(DagSerialization, "_load_operator_extra_links", True)
    dag = build_migration_dag(unit_config())
    served = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    assert set(served.get_task("traffic.shift_to_50").extra_links) == {
        "Route53 hosted zone",
        "Prometheus: production error ratio",
        "Prometheus: production p99",
    }
    assert set(served.get_task("preflight.check_prometheus").extra_links) == {
        "Prometheus: production error ratio",
        "Prometheus: production p99",
    }
