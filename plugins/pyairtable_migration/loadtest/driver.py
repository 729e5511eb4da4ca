"""Drive production at a set rate, one `hey` process per service side by side, and judge the answers.

Why hey: a maintained load generator in Debian (Go, a binary of its own, so the load does not share
the interpreter of the Airflow task that starts it), with a rate per worker (`-q`), so the rate is
the configured one and not "as fast as it goes". Its summary is read rather than its CSV, because
the CSV leaves out the requests that got no answer (refused, timed out), which count as failures.
Each service's percentiles are its own; a class's figure is its worst service's.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Past the run's duration: the last requests' timeout and the processes' start and exit.
EXIT_MARGIN_SECONDS = 30.0


class LoadTestError(RuntimeError):
    """The load could not be driven (hey missing, exiting in error, or not ending)."""


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 20 samples is the 19th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class Target:
    service: str
    slo_class: str
    url: str


@dataclass(frozen=True)
class Drive:
    """How hard and how long: `rate` requests per second in all, spread evenly over the targets."""

    rate: float
    duration_seconds: float
    connections_per_service: int
    request_timeout_seconds: float
    hey_path: str

    def command(self, target: Target, targets: int) -> list[str]:
        per_service = self.rate / targets
        workers = max(1, min(self.connections_per_service, math.ceil(per_service)))
        return [
            self.hey_path,
            "-z", f"{self.duration_seconds:g}s",
            "-c", str(workers),
            "-q", f"{per_service / workers:.4f}",
            "-t", str(math.ceil(self.request_timeout_seconds)),
            target.url,
        ]  # fmt: skip


@dataclass
class ServiceFigures:
    """What one service answered: counts by HTTP status, transport errors, its p95/p99 in ms."""

    service: str
    slo_class: str
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    p95_ms: float | None = None
    p99_ms: float | None = None
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def failed(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 400) + sum(
            self.errors.values()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo_class": self.slo_class,
            "requests": self.requests,
            "failed": self.failed,
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
        }


_PERCENTILE = re.compile(r"^\s+(\d+)% in ([\d.]+) secs", re.MULTILINE)
_STATUS = re.compile(r"^\s+\[(\d+)\]\s+(\d+) responses", re.MULTILINE)
_SLOWEST = re.compile(r"Slowest:\s+([\d.]+) secs")
_TOTAL = re.compile(r"Total:\s+([\d.]+) secs")


def parse_summary(target: Target, text: str) -> ServiceFigures:
    """hey's summary for one service. With few answers hey prints its upper percentiles as
    "0% in 0.0000 secs"; the slowest answer then stands for them (never better than the truth)."""
    figures = ServiceFigures(target.service, target.slo_class)
    figures.statuses = {int(code): int(n) for code, n in _STATUS.findall(text)}
    errors_part = text.split("Error distribution:", 1)[1] if "Error distribution:" in text else ""
    for count, message in re.findall(r"^\s+\[(\d+)\]\s+(.+)$", errors_part, re.MULTILINE):
        figures.errors[_error_kind(message)] = figures.errors.get(_error_kind(message), 0) + int(count)
    latencies = {int(label): round(float(value) * 1000, 1) for label, value in _PERCENTILE.findall(text)}
    slowest = _SLOWEST.search(text)
    answered = sum(figures.statuses.values())
    if answered:
        fallback = round(float(slowest.group(1)) * 1000, 1) if slowest else None
        figures.p95_ms = latencies.get(95, fallback)
        figures.p99_ms = latencies.get(99, fallback)
    total = _TOTAL.search(text)
    figures.seconds = float(total.group(1)) if total else 0.0
    return figures


def _error_kind(message: str) -> str:
    """A transport error without its URL: the same failure on every request counts as one kind."""
    return message.rsplit(": ", 1)[-1].strip()[:120]


def drive(targets: Sequence[Target], settings: Drive) -> dict[str, ServiceFigures]:
    """Every target at its share of the rate for the duration, all at once; hey's summaries read."""
    if not targets:
        raise LoadTestError("no service to drive")
    started: dict[str, subprocess.Popen[str]] = {}
    try:
        for target in targets:
            try:
                started[target.service] = subprocess.Popen(
                    settings.command(target, len(targets)),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            except OSError as exc:
                raise LoadTestError(f"cannot run {settings.hey_path} (Debian package hey): {exc}") from None
        deadline = time.monotonic() + settings.duration_seconds + settings.request_timeout_seconds
        deadline += EXIT_MARGIN_SECONDS
        figures = {}
        for target in targets:
            process = started[target.service]
            try:
                out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise LoadTestError(f"hey for {target.service} did not end in time") from None
            if process.returncode != 0:
                raise LoadTestError(
                    f"hey for {target.service} exited {process.returncode}: {err.strip()[-300:]}"
                )
            figures[target.service] = parse_summary(target, out)
        return figures
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@dataclass
class Verdict:
    figures: dict[str, Any]
    problems: list[str]


def judge(
    measured: Mapping[str, ServiceFigures],
    budgets_ms: Mapping[str, int],
    max_error_ratio: float,
    settings: Drive,
) -> Verdict:
    """Fails a service whose answers failed above the ratio or whose p95 is not below its class's
    budget (each named with its figure); reports the rate reached against the one offered."""
    problems = []
    for name, service in sorted(measured.items()):
        budget = budgets_ms[service.slo_class]
        ratio = service.failed / service.requests if service.requests else 1.0
        if not service.requests:
            problems.append(f"{name}: no request completed")
        elif ratio > max_error_ratio:
            kinds = [f"HTTP {code}" for code in sorted(service.statuses) if not 200 <= code < 400]
            kinds += sorted(service.errors)
            problems.append(
                f"{name}: {ratio:.1%} of {service.requests} requests failed ({'; '.join(kinds)}), "
                f"limit {max_error_ratio:.1%}"
            )
        if service.p95_ms is not None and service.p95_ms >= budget:
            problems.append(f"{name}: p95 {service.p95_ms:.0f} ms >= {budget} ms ({service.slo_class})")
    requests = sum(s.requests for s in measured.values())
    failed = sum(s.failed for s in measured.values())
    classes: dict[str, dict[str, float | None]] = {}
    for service in measured.values():
        worst = classes.setdefault(service.slo_class, {"p95_ms": None, "p99_ms": None})
        for key in ("p95_ms", "p99_ms"):
            value = getattr(service, key)
            if value is not None and (worst[key] is None or value > (worst[key] or 0)):
                worst[key] = round(value, 1)
    figures = {
        "offered_rate": settings.rate,
        "reached_rate": round(requests / settings.duration_seconds, 1),
        "duration_seconds": settings.duration_seconds,
        "requests": requests,
        "failed": failed,
        "error_ratio": round(failed / requests, 5) if requests else None,
        "max_error_ratio": max_error_ratio,
        "slo_classes": classes,
        "services": {name: service.to_dict() for name, service in sorted(measured.items())},
    }
    return Verdict(figures, problems)
