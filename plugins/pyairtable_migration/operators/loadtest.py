"""The load test before the last weight step: production driven at the seed's rate across every
service, judged per service and SLO class (the engine is loadtest/driver.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import Context

from pyairtable_migration.loadtest.driver import Drive, LoadTestError, Target, drive, judge
from pyairtable_migration.operators.base import MigrationOperator, bulleted, fail


class LoadTestOperator(MigrationOperator):
    """Drives `rate` requests/s for `duration_seconds` at production's ingress, spread over
    `services`; fails, naming each service and its figure, above `max_error_ratio` or at a p95 not
    below its class's budget. It moves no user: a failure leaves the weights where they are.

    :param url_template: a service's URL, with `{service}` and `{path}` (its health path)
    :param services: service -> (SLO class, health path)
    :param slo_classes: SLO class -> p95 budget in milliseconds
    """

    template_fields: Sequence[str] = ("url_template",)
    ui_color = "#fde2c8"

    url_template: str
    services: Mapping[str, Sequence[str]]
    slo_classes: Mapping[str, int]
    rate: float
    duration_seconds: float
    max_error_ratio: float
    connections_per_service: int
    request_timeout_seconds: float
    hey_path: str

    def targets(self) -> list[Target]:
        return [
            Target(name, slo_class, self.url_template.format(service=name, path=path))
            for name, (slo_class, path) in sorted(self.services.items())
        ]

    def execute(self, context: Context) -> dict[str, Any]:
        settings = Drive(
            self.rate,
            self.duration_seconds,
            self.connections_per_service,
            self.request_timeout_seconds,
            self.hey_path,
        )
        if self.planned(
            context,
            f"drive {settings.rate:g} requests/s for {settings.duration_seconds:g}s at "
            f"{self.url_template} over {len(self.services)} services with {self.hey_path}: under "
            f"{self.max_error_ratio:.1%} failed and each p95 below its class's budget",
        ):
            return {"mode": "plan"}
        try:
            measured = drive(self.targets(), settings)
        except LoadTestError as exc:
            raise fail(f"load test: {exc}") from None
        verdict = judge(measured, self.slo_classes, self.max_error_ratio, settings)
        figures = verdict.figures
        self.log.info(
            "Offered %s requests/s for %ss; reached %s/s, %d requests, %d failed; worst per class: %s",
            figures["offered_rate"],
            figures["duration_seconds"],
            figures["reached_rate"],
            figures["requests"],
            figures["failed"],
            figures["slo_classes"],
        )
        if verdict.problems:
            context["ti"].xcom_push(key="figures", value=figures)
            raise fail(bulleted("load test: production is not ready for every user", verdict.problems))
        return figures
