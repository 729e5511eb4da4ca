"""Preflight for the traffic phase: the DNS records and the Prometheus gate, checked, not changed.

Each check collects every problem it finds and fails once, listing all of them, so the on-call
engineer fixes the configuration or the environment in one pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException
from botocore.exceptions import BotoCoreError, ClientError

from pyairtable_migration.hooks.prometheus import (
    PrometheusHook,
    PrometheusQueryRefused,
    PrometheusUnavailable,
    render_query,
)
from pyairtable_migration.hooks.route53 import ttls_of, weights_of
from pyairtable_migration.links import ErrorRatioGraphLink, HostedZoneLink, P99GraphLink
from pyairtable_migration.operators.traffic import TrafficOperator


def _refuse(what: str, problems: list[str]) -> AirflowFailException:
    return AirflowFailException(
        f"{what}: {len(problems)} problem(s), nothing changed:\n  - " + "\n  - ".join(problems)
    )


class CheckDnsOperator(TrafficOperator):
    """The hosted zone exists, and every configured record has both environments' weighted sets.

    Read only. Refuses a missing hosted zone or an unknown record by name, every problem at once.
    """

    ui_color = "#dbe9f6"

    def execute(self, context: Context) -> dict[str, Any]:
        identifiers = (self.staging_set_identifier, self.production_set_identifier)
        if context["params"]["mode"] == "plan":
            self.log.info(
                "Plan: would check hosted zone %s and weighted sets %s of %s (read only)",
                self.hosted_zone,
                ", ".join(identifiers),
                ", ".join(self.records),
            )
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


class CheckPrometheusOperator(BaseOperator):
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

    def __init__(
        self,
        *,
        prometheus_conn_id: str,
        error_ratio_query: str,
        p99_query: str,
        prometheus_labels: Mapping[str, str],
        window: str = "30s",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prometheus_conn_id = prometheus_conn_id
        self.error_ratio_query = error_ratio_query
        self.p99_query = p99_query
        self.prometheus_labels = dict(prometheus_labels)
        self.window = window

    def execute(self, context: Context) -> dict[str, Any]:
        templates = {"error_ratio_query": self.error_ratio_query, "p99_query": self.p99_query}
        if context["params"]["mode"] == "plan":
            self.log.info(
                "Plan: would check Prometheus (%s) answers %s for %s (read only)",
                self.prometheus_conn_id,
                ", ".join(templates),
                self.prometheus_labels,
            )
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
