"""The traffic phase: weighted Route53 records move users from staging to production.

    lower_ttl -> shift_to_10 -> 25 -> 50 -> 75 -> approve_100 -> shift_to_100 -> watch -> finalize

Every operator reads the records first and writes only what differs, all public records in one
change batch, so clearing and re-running any task is safe. Waiting (INSYNC, the old TTL, the
bake) is deferred to triggers. In plan mode every task logs what it would do and changes nothing;
it does not even connect, so a plan runs anywhere.

A weight step sets production = weight and staging = 100 - weight, waits INSYNC, bakes for the
run's `bake_seconds` while TrafficGateTrigger samples production's error ratio and p99; when the
gate trips, production goes to 0 / staging to 100 at once (the trigger writes it the moment it
trips, the resumed step re-asserts it), and the step fails with the measured values.

The traffic preflight (CheckDnsOperator, CheckPrometheusOperator) reads only: each collects every
problem it finds and fails once, listing all of them, so the configuration or the environment is
fixed in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperatorLink, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from pyairtable_migration.dns.weights import ChangeResult, Records, ttls_of, weights_of
from pyairtable_migration.links import ErrorRatioGraphLink, HostedZoneLink, P99GraphLink
from pyairtable_migration.notifications import GateBreached, gate_figures
from pyairtable_migration.operators.approval import Answer, MigrationApprovalOperator
from pyairtable_migration.operators.base import (
    DEFERRAL_MARGIN,
    MigrationOperator,
    PhaseUndo,
    WritersReader,
    bulleted,
    fail,
    run_clear_number,
    run_mode,
)
from pyairtable_migration.triggers.traffic import Route53ChangeTrigger, TrafficGateTrigger

if TYPE_CHECKING:
    # The AWS and HTTP clients load when a task uses them: parsing the DAG file, which every task
    # process does, stays free of boto3 and aiohttp.
    from pyairtable_migration.hooks.route53 import Route53WeightsHook

ROUTE53_FIELDS = (
    "aws_conn_id",
    "hosted_zone",
    "records",
    "staging_set_identifier",
    "production_set_identifier",
)


def _comment(context: Context, what: str) -> str:
    """A change batch's comment: which run made it, and why."""
    return f"pyairtable-migration {context.get('run_id') or ''}: {what}"


class Route53Targets:
    """The weighted records every traffic operator works on, and the moves they share.

    A mixin (not a BaseOperator) so the approval operator, an ApprovalOperator, shares it too.
    """

    aws_conn_id: str
    hosted_zone: str
    records: list[str]
    staging_set_identifier: str
    production_set_identifier: str
    region_name: str | None
    insync_timeout_seconds: float
    log: Any
    defer: Callable[..., NoReturn]

    def _init_targets(
        self,
        *,
        aws_conn_id: str,
        hosted_zone: str,
        records: Sequence[str],
        staging_set_identifier: str,
        production_set_identifier: str,
        region_name: str | None = None,
        insync_timeout_seconds: float = 600.0,
        **others: Any,
    ) -> dict[str, Any]:
        """Keep the Route53 arguments (the one list of them) and return the others, for the
        operator's own base."""
        self.aws_conn_id = aws_conn_id
        self.hosted_zone = hosted_zone
        self.records = list(records)
        self.staging_set_identifier = staging_set_identifier
        self.production_set_identifier = production_set_identifier
        self.region_name = region_name
        self.insync_timeout_seconds = insync_timeout_seconds
        return others

    def route53(self) -> Route53WeightsHook:
        from pyairtable_migration.hooks.route53 import Route53WeightsHook

        return Route53WeightsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def wanted_weights(self, production: int) -> dict[str, int]:
        return {self.production_set_identifier: production, self.staging_set_identifier: 100 - production}

    def describe_weights(self, production: int) -> str:
        production_id, staging_id = self.production_set_identifier, self.staging_set_identifier
        return f"{production_id} {production} / {staging_id} {100 - production}"

    def read(self, context: Context) -> tuple[Route53WeightsHook, str, Records]:
        """The hook, the zone id and every configured weighted record, logged as observed."""
        hook = self.route53()
        zone_id = hook.hosted_zone_id(self.hosted_zone)
        HostedZoneLink.persist(context, zone_id)
        records = hook.require_records(
            zone_id, self.records, (self.staging_set_identifier, self.production_set_identifier)
        )
        for name, by_id in sorted(records.items()):
            self.log.info(
                "Observed %s: %s",
                name,
                ", ".join(f"{i} weight {r.weight} TTL {r.ttl}" for i, r in sorted(by_id.items())),
            )
        return hook, zone_id, records

    def require_all_on_production(self, records: Records, refusing: str, fix: str) -> None:
        """Fail, changing nothing, unless every record is at production 100 / staging 0; the message
        names each record that is not (`not <refusing>: ...; <fix>`)."""
        wanted = self.wanted_weights(100)
        wrong = [
            f"{r.key} weight {r.weight} (expected {wanted[r.set_identifier]})"
            for by_id in records.values()
            for r in by_id.values()
            if r.set_identifier in wanted and r.weight != wanted[r.set_identifier]
        ]
        if wrong:
            raise fail(f"not {refusing}: traffic is not fully on production ({'; '.join(wrong)}); {fix}")

    def log_change(self, result: ChangeResult, what: str) -> None:
        if result.change_id is None:
            self.log.info("%s: every record already so, nothing changed", what)
            return
        self.log.info("%s: change %s (one batch):", what, result.change_id)
        for line in result.described:
            self.log.info("  changed %s", line)

    def revert_to_staging(self, context: Context, why: str) -> ChangeResult:
        """Production 0, staging 100 on every record, in one batch (nothing when already so)."""
        hook, zone_id, records = self.read(context)
        result = hook.set_weights(
            zone_id,
            records,
            self.wanted_weights(0),
            comment=_comment(context, f"back to staging ({why})")[:256],
        )
        self.log_change(result, f"Traffic back to staging ({self.describe_weights(0)})")
        return result

    def insync_timeout(self, hold_seconds: float = 0.0) -> timedelta:
        return timedelta(seconds=self.insync_timeout_seconds + hold_seconds) + DEFERRAL_MARGIN

    def defer_until_insync(
        self, change_id: str | None, carry: dict[str, Any], method_name: str, hold_seconds: float = 0.0
    ) -> NoReturn:
        """Resume `method_name` once the change is INSYNC (then held); `carry` comes back in the event."""
        self.defer(
            trigger=Route53ChangeTrigger(
                aws_conn_id=self.aws_conn_id,
                change_id=change_id,
                region_name=self.region_name,
                timeout_seconds=self.insync_timeout_seconds,
                hold_seconds=hold_seconds,
                carry=carry,
            ),
            method_name=method_name,
            timeout=self.insync_timeout(hold_seconds),
        )

    def fail_once_insync(
        self,
        context: Context,
        revert_change_id: str | None,
        carry: dict[str, Any],
        fail: Callable[[Context, Mapping[str, Any]], NoReturn],
    ) -> NoReturn:
        """After a revert, `fail` once it is INSYNC, so the task fails with users back on staging.

        At once when the revert changed nothing: there is no change to wait for.
        """
        if revert_change_id is None:
            fail(context, {"status": "insync", "insync_seconds": 0.0, "carry": carry})
        self.defer_until_insync(revert_change_id, carry, fail.__name__)


class TrafficOperator(Route53Targets, MigrationOperator):
    """Base of the Route53 operators: the weighted records, by name and set identifier.

    :param aws_conn_id: the `aws` connection (endpoint_url in its extra for a non-AWS Route53)
    :param hosted_zone: the public zone, e.g. `pyairtable.example.com.`
    :param records: every public record moved by the cutover, each with one weighted set per
        environment
    :param staging_set_identifier: SetIdentifier of staging's weighted record sets
    :param production_set_identifier: SetIdentifier of production's
    :param region_name: AWS region of the client (Route53 is global; None uses the connection's)
    :param insync_timeout_seconds: longest wait for a change to be INSYNC
    """

    template_fields: Sequence[str] = ROUTE53_FIELDS
    operator_extra_links: Collection[BaseOperatorLink] = (HostedZoneLink(),)
    ui_color = "#fde9c9"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**self._init_targets(**kwargs))

    def finish_once_insync(
        self, summary: dict[str, Any], change_id: str | None, hold_seconds: float = 0.0
    ) -> dict[str, Any]:
        """`summary` once the change is INSYNC (from execute_complete); at once when nothing waits."""
        if change_id is None and hold_seconds <= 0:
            return summary
        self.defer_until_insync(change_id, {"summary": summary}, "execute_complete", hold_seconds)

    def confirmed_summary(self, event: Mapping[str, Any], unconfirmed: str) -> dict[str, Any]:
        """On resume: the summary `finish_once_insync` carried, or fail with `unconfirmed`."""
        summary: dict[str, Any] = event["carry"]["summary"]
        if event["status"] != "insync":
            raise fail(f"{unconfirmed}: {event.get('message')}")
        return summary


class LowerTtlOperator(TrafficOperator):
    """Lower every cutover record's TTL, then wait out the old TTL before the first shift.

    Clients may hold an answer for as long as its old TTL, so the first weight change reaches
    all of them only after that. Only TTLs above `cutover_ttl_seconds` are lowered (a lower TTL
    is left alone). The wait is max(old TTL) of every record, counted from INSYNC.

    Re-run rule (idempotency): when nothing is lowered now (an earlier try did it), the wait is
    max(current TTL). An earlier try that was interrupted mid-wait may have lowered the TTL less
    than the old TTL ago; clients still holding such an older answer only make the first step's
    share lag behind its weight (both environments serve), they never reach a wrong address.
    The change comment records the old TTLs; so does the XCom summary.
    """

    template_fields: Sequence[str] = (*ROUTE53_FIELDS, "cutover_ttl_seconds")

    cutover_ttl_seconds: int

    def execute(self, context: Context) -> dict[str, Any]:
        cutover = int(self.cutover_ttl_seconds)
        if run_mode(context) == "plan":
            self.log.info(
                "Plan: would lower the TTL of %s to %d s where higher, then wait out the old TTL",
                ", ".join(self.records),
                cutover,
            )
            return {"mode": "plan", "cutover_ttl_seconds": cutover}
        hook, zone_id, records = self.read(context)
        old = {r.key: r.ttl for by_id in records.values() for r in by_id.values()}
        old_max = max((ttl for ttl in old.values() if ttl is not None), default=0)
        result = hook.set_ttl(
            zone_id,
            records,
            cutover,
            comment=_comment(context, f"TTL to {cutover}s for the cutover; old TTL max {old_max}s"),
            only_lower=True,
        )
        self.log_change(result, f"TTL lowered to {cutover} s")
        # Nothing lowered now means nothing changed: the current TTLs are the old ones.
        wait = old_max
        if result.change_id is not None:
            self.log.info("Waiting out the old TTL: %d s from INSYNC", wait)
        else:
            self.log.info(
                "TTLs were already at most %d s (lowered by an earlier try): waiting max(current TTL) = %d s",
                cutover,
                wait,
            )
        summary = {
            "mode": "apply",
            "zone_id": zone_id,
            "change_id": result.change_id,
            "changed": result.described,
            "old_ttls": old,
            "wait_seconds": wait,
        }
        return self.finish_once_insync(summary, result.change_id, hold_seconds=wait)

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> dict[str, Any]:
        summary = self.confirmed_summary(event, "TTL change not confirmed")
        self.log.info(
            "TTL change INSYNC after %.1f s; old TTL (%d s) waited out: clients now follow the weights",
            event["insync_seconds"],
            summary["wait_seconds"],
        )
        return summary


class ShiftTrafficOperator(WritersReader, TrafficOperator):
    """One weight step: production `weight` %, staging the rest; INSYNC; bake; gate.

    Skipped when `weight` is not in the run's `traffic_steps`. The gate samples production's
    error ratio and p99 every `sample_seconds` during the bake; `consecutive_breaches` breaching
    samples in a row put traffic back on staging (one batch, written by the trigger at the trip
    and re-asserted here), wait INSYNC, and fail the task with the measured values. No data for
    the whole bake, or Prometheus down, fails the task without shifting further (traffic stays
    where it is; clear the task to gate again, or run the traffic rollback).

    :param weight: production's weight at this step, 1..100
    :param bake_seconds: how long to watch production (template: the run's `bake_seconds` param)
    :param prometheus_conn_id: the `http` connection to Prometheus
    :param error_ratio_query: PromQL template with `$selector` and `$window`
    :param p99_query: PromQL template with `$selector` and `$window`
    :param prometheus_labels: production's labels, the gate's `$selector`
    :param max_error_ratio: a sample above this is a breach
    :param max_p99_seconds: a sample above this is a breach
    :param sample_seconds: seconds between samples
    :param consecutive_breaches: breaching samples in a row that trip the gate
    :param window: the PromQL range (`$window`), e.g. `30s`
    :param source_conn_id / target_conn_id / poolers: the writers' topology; with
        `require_writers_on_target` the step refuses, before any change, unless every pooler sends
        writers to the target (cleared after a rollback, it would send users to production while
        writes go to staging)
    """

    template_fields: Sequence[str] = (
        *ROUTE53_FIELDS,
        "source_conn_id",
        "target_conn_id",
        "poolers",
        "weight",
        "bake_seconds",
        "prometheus_conn_id",
        "error_ratio_query",
        "p99_query",
        "prometheus_labels",
        "max_error_ratio",
        "max_p99_seconds",
        "sample_seconds",
        "consecutive_breaches",
        "window",
    )
    operator_extra_links = (
        HostedZoneLink(),
        ErrorRatioGraphLink(),
        P99GraphLink(),
    )

    weight: int
    bake_seconds: float | str
    prometheus_conn_id: str
    error_ratio_query: str
    p99_query: str
    prometheus_labels: Mapping[str, str]
    max_error_ratio: float
    max_p99_seconds: float
    sample_seconds: float
    consecutive_breaches: int
    window: str = "30s"
    require_writers_on_target: bool = True

    def gate_queries(self) -> dict[str, str]:
        from pyairtable_migration.hooks.prometheus import render_query

        return {
            "error_ratio": render_query(self.error_ratio_query, self.prometheus_labels, self.window),
            "p99": render_query(self.p99_query, self.prometheus_labels, self.window),
        }

    def gate_limits(self) -> dict[str, float]:
        return {"error_ratio": float(self.max_error_ratio), "p99": float(self.max_p99_seconds)}

    def refuse_unless_writers_on_target(self) -> None:
        """Users may reach production only while production's writes reach the one primary: the
        topology's answer, read from every pooler, must be `target`."""
        if not self.require_writers_on_target:
            return
        found = self.writers_now()
        self.log.info("Writers' topology: %s", found.describe())
        if found.where == "target":
            return
        message = (
            f"not moving users to production ({self.describe_weights(int(self.weight))}): "
            f"{found.describe()}; the writers must be on the target first (the switchover has not "
            "run, or a rollback moved them back); nothing changed"
        )
        if any(endpoint.unreachable for endpoint in found.seen):
            raise AirflowException(message)  # a pooler that did not answer: the retry reads again
        raise fail(message)

    def execute(self, context: Context) -> dict[str, Any]:
        weight = int(self.weight)
        steps = list(context["params"]["traffic_steps"])
        if weight not in steps:
            self.log.info("Skipped: %d %% is not among this run's traffic steps %s", weight, steps)
            raise AirflowSkipException(f"{weight} % is not among this run's traffic steps {steps}")
        bake = float(self.bake_seconds)
        limits = self.gate_limits()
        if run_mode(context) == "plan":
            self.log.info(
                "Plan: would set %s on %s in one batch, wait INSYNC, bake %g s and gate on production: "
                "error ratio <= %g, p99 <= %g s, sampled every %g s, %d consecutive breaches revert to "
                "staging",
                self.describe_weights(weight),
                ", ".join(self.records),
                bake,
                limits["error_ratio"],
                limits["p99"],
                float(self.sample_seconds),
                int(self.consecutive_breaches),
            )
            for name, query in self.gate_queries().items():
                self.log.info("Plan: gate query %s: %s", name, query)
            return {"mode": "plan", "weight": weight, "bake_seconds": bake}
        self.refuse_unless_writers_on_target()
        hook, zone_id, records = self.read(context)
        before = weights_of(records)
        result = hook.set_weights(
            zone_id,
            records,
            self.wanted_weights(weight),
            comment=_comment(context, f"production {weight} %"),
        )
        self.log_change(result, f"Weights {self.describe_weights(weight)}")
        step = {
            "weight": weight,
            "zone_id": zone_id,
            "change_id": result.change_id,
            "changed": result.described,
            "weights_before": before,
        }
        self.defer_to_gate(step, result.change_id, bake)

    def defer_to_gate(self, step: dict[str, Any], change_id: str | None, bake: float) -> NoReturn:
        """Wait INSYNC for `change_id` (if any), then gate production for `bake` seconds on the
        triggerer; `step` comes back in the event."""
        self.defer(
            trigger=TrafficGateTrigger(
                weight=int(self.weight),
                aws_conn_id=self.aws_conn_id,
                change_id=change_id,
                prometheus_conn_id=self.prometheus_conn_id,
                queries=self.gate_queries(),
                limits=self.gate_limits(),
                bake_seconds=bake,
                sample_seconds=float(self.sample_seconds),
                consecutive_breaches=int(self.consecutive_breaches),
                region_name=self.region_name,
                insync_timeout_seconds=self.insync_timeout_seconds,
                revert={
                    "hosted_zone": self.hosted_zone,
                    "records": self.records,
                    "weights": self.wanted_weights(0),
                },
                carry={"step": step},
            ),
            method_name="execute_complete",
            timeout=self.insync_timeout(bake),
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> Any:
        step: dict[str, Any] = event["carry"]["step"]
        status = event["status"]
        self.log.info("Gate: %s", event.get("message"))
        if status == "passed":
            return {
                **step,
                "gate": {k: event[k] for k in ("status", "samples", "complete_samples", "peaks", "limits")},
            }
        if status != "breached":
            raise fail(
                f"{event.get('message')}. Traffic stays at {self.describe_weights(int(self.weight))}; "
                "clear this task to gate again once Prometheus answers, or run the traffic rollback."
            )
        # The trigger reverted at the trip already; re-assert it (a no-op then), in case it could not.
        reverted = event.get("reverted") or {}
        if reverted.get("change_id"):
            self.log.info("The gate trigger put traffic back on staging: change %s", reverted["change_id"])
        elif reverted.get("error"):
            self.log.warning("The gate trigger could not revert (%s); reverting now", reverted["error"])
        revert = self.revert_to_staging(context, f"gate tripped at {self.weight} %")
        revert_change_id = revert.change_id or reverted.get("change_id")
        carry = {
            "step": step,
            "gate": {k: event[k] for k in ("message", "peaks", "limits", "breaching_samples")},
            "revert_change_id": revert_change_id,
        }
        self.fail_once_insync(context, revert_change_id, carry, self.fail_after_revert)

    def fail_after_revert(self, context: Context, event: Mapping[str, Any]) -> NoReturn:
        gate, revert_change_id = event["carry"]["gate"], event["carry"]["revert_change_id"]
        confirmed = (
            f"INSYNC after {event['insync_seconds']:.1f} s"
            if event["status"] == "insync"
            else f"NOT confirmed INSYNC ({event.get('message')})"
        )
        reverted = f"{self.describe_weights(0)}, change {revert_change_id or 'none needed'}, {confirmed}"
        # GateBreached: the failure notice is told as a breach, with the gate's figures.
        raise GateBreached(
            f"{gate['message']}. Traffic reverted to staging ({reverted}).",
            gate_figures(int(self.weight), gate, f"back on staging ({reverted})"),
        )


class WatchProductionOperator(ShiftTrafficOperator):
    """The watch after the cutover: the gate keeps sampling production at 100 % for `bake_seconds`
    (the run's `watch_seconds`; the seed's checklist watches for 4 hours), deferred on the triggerer.

    It runs before `finalize`, while the records still carry the cutover TTL, so the revert a breach
    makes reaches every user within that TTL, not the restored one. A breach puts every user back on
    staging, waits INSYNC and fails the task as a gate breach (the failure notice says so, with the
    figures); writers stay where they are (the switchover's pooler serves both environments). Refuses,
    changing nothing, unless every record is at production 100 / staging 0. 0 seconds skips it.
    A triggerer restarted meanwhile starts the watch over: it then watches longer, never shorter.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        watch = float(self.bake_seconds)
        if watch <= 0:
            raise AirflowSkipException("watch_seconds is 0: no watch after the cutover")
        limits = self.gate_limits()
        if self.planned(
            context,
            f"check {self.describe_weights(100)} on {', '.join(self.records)} and gate production for "
            f"{watch:g} s: error ratio <= {limits['error_ratio']:g}, p99 <= {limits['p99']:g} s, "
            f"{int(self.consecutive_breaches)} consecutive breaches put every user back on staging",
        ):
            return {"mode": "plan", "watch_seconds": watch}
        _, zone_id, records = self.read(context)
        self.require_all_on_production(
            records,
            "watching",
            "a rollback or a breach moved it (clear traffic.shift_to_100 to move users again)",
        )
        self.log.info("Watching production at 100 %% for %g s before the TTL goes back up", watch)
        self.defer_to_gate({"weight": 100, "zone_id": zone_id, "watch_seconds": watch}, None, watch)


class TrafficApprovalOperator(Route53Targets, MigrationApprovalOperator):
    """A person approves the next weight; a rejection puts traffic back on staging and fails.

    Skipped (logged: approvals off) when the run's `require_approvals` is false; in plan mode it
    only says what it would ask. The failed task stops the next step (it never runs) and marks
    the run failed: the cutover did not complete.

    :param weight: the weight being approved (for the question)
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, *ROUTE53_FIELDS, "weight")
    operator_extra_links = (HostedZoneLink(),)

    def __init__(self, *, weight: int, **kwargs: Any) -> None:
        kwargs = self._init_targets(**kwargs)
        kwargs.setdefault("subject", f"Shift {weight} % of PyAirtable traffic to production?")
        kwargs.setdefault(
            "body",
            f"Every earlier weight step passed its gate. **Approve** sets production to {weight} % "
            f"on {', '.join(self.records)}. **Reject** puts all traffic back on staging "
            f"({self.describe_weights(0)}) and stops the cutover.",
        )
        super().__init__(**kwargs)
        self.weight = weight

    def plan_summary(self) -> dict[str, Any]:
        return {"mode": "plan", "weight": self.weight}

    def approved(self, context: Context, answer: Answer) -> dict[str, Any]:
        self.log.info("Approved by %s: %s %% may proceed", answer.by, self.weight)
        return {"approved": True, **answer.summary(), "weight": self.weight}

    def rejected(self, context: Context, answer: Answer) -> NoReturn:
        self.log.info("Rejected by %s: putting traffic back on staging", answer.by)
        revert = self.revert_to_staging(context, f"{self.weight} % rejected by {answer.by}")
        carry = {"who": answer.by, "revert_change_id": revert.change_id}
        self.fail_once_insync(context, revert.change_id, carry, self.fail_after_rejection)

    def fail_after_rejection(self, context: Context, event: Mapping[str, Any]) -> NoReturn:
        who, revert_change_id = event["carry"]["who"], event["carry"]["revert_change_id"]
        confirmed = "INSYNC" if event["status"] == "insync" else f"NOT confirmed ({event.get('message')})"
        raise fail(
            f"{self.weight} % rejected by {who}: traffic is back on staging ({self.describe_weights(0)}, "
            f"change {revert_change_id or 'none needed'}, {confirmed}); the cutover stops here."
        )


class FinalizeTrafficOperator(TrafficOperator):
    """After 100 %: restore the TTL; staging's record stays at weight 0 as the way back.

    Refuses unless every record is at production 100 / staging 0. The staging record is kept
    (never deleted here); `retention_seconds` is reported as how long to keep it.
    """

    template_fields: Sequence[str] = (*ROUTE53_FIELDS, "final_ttl_seconds", "retention_seconds")

    final_ttl_seconds: int
    retention_seconds: int

    def execute(self, context: Context) -> dict[str, Any]:
        final_ttl, retention = int(self.final_ttl_seconds), int(self.retention_seconds)
        # Which clear of the run this ran in: traffic.undo tells a clear of its own from a re-run.
        cleared = run_clear_number(context)
        if run_mode(context) == "plan":
            self.log.info(
                "Plan: would check %s on %s, restore TTL %d s, and keep staging's records at weight 0 "
                "for %d s as the way back",
                self.describe_weights(100),
                ", ".join(self.records),
                final_ttl,
                retention,
            )
            return {
                "mode": "plan",
                "final_ttl_seconds": final_ttl,
                "retention_seconds": retention,
                "clear_number": cleared,
            }
        hook, zone_id, records = self.read(context)
        self.require_all_on_production(records, "finalizing", "run the 100 % step first")
        result = hook.set_ttl(
            zone_id,
            records,
            final_ttl,
            comment=_comment(context, f"cutover done, TTL back to {final_ttl}s"),
        )
        self.log_change(result, f"TTL restored to {final_ttl} s")
        keep_until = datetime.now(UTC) + timedelta(seconds=retention)
        self.log.info(
            "Staging's weighted records stay at weight 0 as the way back; keep them for %d s "
            "(until %s UTC), then delete them by hand",
            retention,
            keep_until.strftime("%Y-%m-%d %H:%M"),
        )
        summary = {
            "mode": "apply",
            "zone_id": zone_id,
            "change_id": result.change_id,
            "changed": result.described,
            "weights": weights_of(records),
            "final_ttl_seconds": final_ttl,
            "staging_kept_until": keep_until.isoformat(timespec="seconds"),
            "clear_number": cleared,
        }
        return self.finish_once_insync(summary, result.change_id)

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> dict[str, Any]:
        summary = self.confirmed_summary(event, "TTL change not confirmed")
        self.log.info("TTL change INSYNC after %.1f s", event["insync_seconds"])
        return summary


class TrafficRollbackOperator(TrafficOperator):
    """Put every user back on staging: production 0, staging 100 in one batch, then INSYNC.

    A no-op (logged) when the records are already so. Used by the rollback path.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        if run_mode(context) == "plan":
            self.log.info(
                "Plan: would set %s on %s in one batch and wait INSYNC",
                self.describe_weights(0),
                ", ".join(self.records),
            )
            return {"mode": "plan"}
        result = self.revert_to_staging(context, "rollback")
        summary = {"mode": "apply", "change_id": result.change_id, "changed": result.described}
        return self.finish_once_insync(summary, result.change_id)

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> dict[str, Any]:
        summary = self.confirmed_summary(event, "rollback change not confirmed INSYNC")
        self.log.info("Rollback INSYNC after %.1f s: every user is on staging", event["insync_seconds"])
        return summary


class TrafficUndoOperator(PhaseUndo, TrafficRollbackOperator):
    """The migration's own way back for users: clear this task to put every user on staging.

    Hangs beside the traffic phase (after `finalized_by`, trigger rule `all_done`, upstream of
    nothing). It acts by itself when a traffic step failed in the run (a belt to the step's own
    revert) and is skipped on a healthy run. Cleared on its own later (the run reset, as the UI's
    Clear does), it puts every record at production 0 / staging 100 and waits INSYNC; cleared
    together with the phase (a step cleared with downstream), it stays skipped (`PhaseUndo`).
    Writers stay where they are: both environments write through the one pooler, so users may go
    back at any time.

    :param finalized_by: the phase's last task; it records the run's clear number in its result
    """

    acts_on_failure = True
    not_asked = "the traffic phase did not fail (clear this task alone to put every user back on staging)"

    def execute(self, context: Context) -> dict[str, Any]:
        self.log.info("Putting every user back on staging: %s", self.undo_or_skip(context))
        return super().execute(context)


# --- preflight: the DNS records and the Prometheus gate, checked, not changed -------------------


def _refuse(what: str, problems: list[str]) -> AirflowFailException:
    return fail(bulleted(f"{what}: {len(problems)} problem(s), nothing changed", problems))


class CheckDnsOperator(TrafficOperator):
    """The hosted zone exists, and every configured record has both environments' weighted sets.

    Read only. Refuses a missing hosted zone or an unknown record by name, every problem at once.
    """

    ui_color = "#dbe9f6"

    def execute(self, context: Context) -> dict[str, Any]:
        identifiers = (self.staging_set_identifier, self.production_set_identifier)
        from botocore.exceptions import BotoCoreError, ClientError

        if self.planned(
            context,
            f"check hosted zone {self.hosted_zone} and weighted sets {', '.join(identifiers)} of "
            f"{', '.join(self.records)} (read only)",
        ):
            return {"mode": "plan"}
        hook = self.route53()
        try:
            zone_id = hook.find_hosted_zone_id(self.hosted_zone)
            if zone_id is None:
                raise _refuse(
                    "DNS preflight",
                    [f"hosted zone {self.hosted_zone} not found (connection {self.aws_conn_id})"],
                )
            HostedZoneLink.persist(context, zone_id)
            records = hook.weighted_records(zone_id, self.records)
        except (ClientError, BotoCoreError) as exc:
            raise _refuse(
                "DNS preflight", [f"Route53 (connection {self.aws_conn_id}) did not answer: {exc}"]
            ) from exc
        problems = []
        for name, by_id in sorted(records.items()):
            if not by_id:
                problems.append(
                    f"record {name} not found in hosted zone {self.hosted_zone} (no weighted set)"
                )
                continue
            problems.extend(
                f"record {name} has no weighted set {identifier!r} (has: {', '.join(sorted(by_id))})"
                for identifier in identifiers
                if identifier not in by_id
            )
            types = {str(r.raw.get("Type")) for r in by_id.values()}
            if len(types) > 1:
                problems.append(f"record {name}: weighted sets differ in type ({', '.join(sorted(types))})")
        if problems:
            raise _refuse("DNS preflight", problems)
        weights, ttls = weights_of(records), ttls_of(records)
        for name in sorted(records):
            self.log.info("Record %s: weights %s, TTLs %s", name, weights[name], ttls[name])
        self.log.info(
            "DNS preflight passed: zone %s (%s), %d records", self.hosted_zone, zone_id, len(weights)
        )
        return {"mode": "apply", "zone_id": zone_id, "weights": weights, "ttls": ttls}


class CheckPrometheusOperator(MigrationOperator):
    """Prometheus answers every gate query, rendered for production as the gate will run it.

    Read only. A query Prometheus refuses (syntax, unknown function) or that cannot be rendered
    is named with Prometheus's reason; Prometheus not answering is named once. No series yet is
    fine here: production has no traffic before the cutover.

    :param prometheus_conn_id: the `http` connection to Prometheus
    :param queries: name -> PromQL template with `$selector` and `$window`
    :param prometheus_labels: production's labels (`$selector`)
    :param window: the PromQL range (`$window`)
    """

    template_fields: Sequence[str] = (
        "prometheus_conn_id",
        "error_ratio_query",
        "p99_query",
        "prometheus_labels",
        "window",
    )
    operator_extra_links = (ErrorRatioGraphLink(), P99GraphLink())
    ui_color = "#dbe9f6"

    prometheus_conn_id: str
    error_ratio_query: str
    p99_query: str
    prometheus_labels: Mapping[str, str]
    window: str = "30s"

    def execute(self, context: Context) -> dict[str, Any]:
        templates = {"error_ratio_query": self.error_ratio_query, "p99_query": self.p99_query}
        from pyairtable_migration.hooks.prometheus import (
            PrometheusHook,
            PrometheusQueryRefused,
            PrometheusUnavailable,
            render_query,
        )

        if self.planned(
            context,
            f"check Prometheus ({self.prometheus_conn_id}) answers {', '.join(templates)} for "
            f"{self.prometheus_labels} (read only)",
        ):
            return {"mode": "plan"}
        hook = PrometheusHook(self.prometheus_conn_id)
        problems: list[str] = []
        values: dict[str, float | None] = {}
        for name, template in templates.items():
            try:
                query = render_query(template, self.prometheus_labels, self.window)
            except (KeyError, ValueError) as exc:
                problems.append(f"{name}: cannot be rendered (use $selector and $window only): {exc}")
                continue
            try:
                values[name] = hook.instant_value(query)
            except PrometheusQueryRefused as exc:
                problems.append(f"{name}: {exc} — query: {query}")
            except PrometheusUnavailable as exc:
                problems.append(str(exc))
                break
            else:
                shown = "no series yet" if values[name] is None else f"{values[name]:.4g}"
                self.log.info("%s answers: %s", name, shown)
        if problems:
            raise _refuse("Prometheus preflight", problems)
        self.log.info("Prometheus preflight passed: every gate query answers")
        return {"mode": "apply", "values": values}
