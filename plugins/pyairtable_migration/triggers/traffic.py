"""The traffic phase's waiting: a Route53 change until INSYNC, and a weight step's bake and gate.

Both run on the triggerer, so no worker slot is held while DNS propagates or production bakes.
The clients are the project's synchronous hooks, called in a thread (`asyncio.to_thread`): the
triggerer's event loop is never blocked, and connections resolve as in any task. One deliberate
exception to "triggers only wait": when the gate trips, TrafficGateTrigger writes the revert to
staging itself (see its docstring), because the resumed task may wait for a free worker slot.
Events carry what the operator needs on resume (`carry`), since `dag.test()` drops a deferral's
kwargs.

The gate's rule lives in `Gate`, a plain class, so it is tested without a triggerer:
  - a sample is a breach when any value is above its limit (error ratio, p99 seconds);
  - `consecutive` breaching samples in a row trip the gate, at once (the bake stops there);
  - a healthy sample (every value present, none above its limit) resets the streak;
  - a sample without a value (no series, NaN) or with Prometheus not answering neither breaches
    nor resets: missing data never counts as healthy;
  - a bake with no complete sample at all, or whose last `consecutive_breaches` samples are all
    incomplete (Prometheus gone mid-bake), is `no_data`: fail safe, never shift forward on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import TriggerEvent

from pyairtable_migration.triggers.base import MigrationTrigger, trigger_fields

if TYPE_CHECKING:
    # The clients load in the triggerer, where the triggers run: the operators that defer to these
    # triggers are imported by the DAG file in every task process, which stays free of boto3 and aiohttp.
    from pyairtable_migration.hooks.prometheus import PrometheusHook
    from pyairtable_migration.hooks.route53 import Route53WeightsHook

MAX_POLL_SECONDS = 10.0
UNITS = {"error_ratio": "", "p99": " s"}
LABELS = {"error_ratio": "error ratio", "p99": "p99"}


def _format(name: str, value: float | None) -> str:
    label = LABELS.get(name, name)
    return f"{label} no data" if value is None else f"{label} {value:.4g}{UNITS.get(name, '')}"


@dataclass
class GateSample:
    """One look at production: every gate query's value (None: no series), or why there is none."""

    at: str
    values: dict[str, float | None]
    breaches: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and all(value is not None for value in self.values.values())

    def describe(self, limits: Mapping[str, float]) -> str:
        if self.error:
            return f"{self.at}: {self.error}"
        parts = []
        for name, value in self.values.items():
            text = _format(name, value)
            if name in self.breaches:
                text += f" > max {limits[name]:g}{UNITS.get(name, '')}"
            parts.append(text)
        return f"{self.at}: {', '.join(parts)}"


class Gate:
    """Consecutive-breach gate over a bake's samples (rules in the module docstring)."""

    def __init__(self, limits: Mapping[str, float], consecutive: int) -> None:
        self.limits = dict(limits)
        self.consecutive = consecutive
        self.samples: list[GateSample] = []
        self.streak: list[GateSample] = []

    def add(self, sample: GateSample) -> bool:
        """Record a sample; True when the gate trips."""
        if sample.error is None:
            sample.breaches = [
                name
                for name, value in sample.values.items()
                if value is not None and value > self.limits[name]
            ]
        self.samples.append(sample)
        if sample.breaches:
            self.streak.append(sample)
        elif sample.complete:
            self.streak = []
        return self.tripped

    @property
    def tripped(self) -> bool:
        return len(self.streak) >= self.consecutive

    def blind_ending(self) -> list[GateSample]:
        """The bake's final samples, when the last `consecutive` of them all lack a complete answer.

        Healthy samples early in a bake say nothing about production once Prometheus stops
        answering: a gate that cannot see at the end must not pass.
        """
        last = self.samples[-self.consecutive :]
        return last if last and not any(s.complete for s in last) else []

    def peaks(self) -> dict[str, float | None]:
        peaks: dict[str, float | None] = {}
        for name in self.limits:
            seen = [value for s in self.samples if (value := s.values.get(name)) is not None]
            peaks[name] = max(seen) if seen else None
        return peaks

    def verdict(self, weight: int) -> dict[str, Any]:
        """The event payload: status passed / breached / no_data, the samples that decided it."""
        complete = [s for s in self.samples if s.complete]
        errors = [s.error for s in self.samples if s.error]
        summary = {
            "weight": weight,
            "samples": len(self.samples),
            "complete_samples": len(complete),
            "peaks": self.peaks(),
            "limits": self.limits,
        }
        if self.tripped:
            deciding = self.streak[-self.consecutive :]
            return {
                **summary,
                "status": "breached",
                "breaching_samples": [asdict(s) for s in deciding],
                "message": (
                    f"gate tripped at {weight} %: {len(deciding)} consecutive breaching samples of "
                    "production: " + "; ".join(s.describe(self.limits) for s in deciding)
                ),
            }
        if not complete:
            if errors and len(errors) == len(self.samples):
                why = f"Prometheus did not answer during the whole bake ({errors[-1]})"
            else:
                last = self.samples[-1].describe(self.limits) if self.samples else "no sample taken"
                why = (
                    "Prometheus had no data for production during the whole bake "
                    f"({len(self.samples)} samples; last {last})"
                )
            return {
                **summary,
                "status": "no_data",
                "errors": errors[-3:],
                "message": f"{why}: production's health at {weight} % is unknown, so traffic is not "
                "shifted forward (fail safe)",
            }
        blind = self.blind_ending()
        if blind:
            return {
                **summary,
                "status": "no_data",
                "errors": errors[-3:],
                "message": f"the bake ended blind: the last {len(blind)} samples had no complete answer "
                f"({blind[-1].error or blind[-1].describe(self.limits)}): production's health at {weight} % "
                "now is unknown, so traffic is not shifted forward (fail safe)",
            }
        peaks = self.peaks()
        return {
            **summary,
            "status": "passed",
            "message": (
                f"gate passed at {weight} %: {len(complete)} complete samples of {len(self.samples)}; "
                f"peaks {', '.join(_format(n, v) for n, v in peaks.items())}"
            ),
        }


async def wait_insync(
    hook: Route53WeightsHook, change_id: str, timeout_seconds: float, poll_seconds: float
) -> float:
    """Poll get_change with backoff (poll_seconds doubling to 10 s) until INSYNC; seconds waited."""
    started = time.monotonic()
    delay = poll_seconds
    while await asyncio.to_thread(hook.change_status, change_id) != "INSYNC":
        if time.monotonic() - started > timeout_seconds:
            raise TimeoutError(f"Route53 change {change_id} not INSYNC after {timeout_seconds:.0f} s")
        await asyncio.sleep(delay)
        delay = min(MAX_POLL_SECONDS, delay * 2)
    return time.monotonic() - started


@trigger_fields
class Route53ChangeTrigger(MigrationTrigger):
    """Waits until a Route53 change is INSYNC, then optionally holds `hold_seconds` more.

    The hold is how the TTL step waits out the old TTL: it starts only once every Route53 name
    server answers with the new TTL. `carry` comes back in the event: what the operator needs
    when it resumes (not in the deferral's kwargs, which `dag.test()` drops).
    """

    aws_conn_id: str | None
    change_id: str | None
    region_name: str | None = None
    timeout_seconds: float = 600.0
    poll_seconds: float = 1.0
    hold_seconds: float = 0.0
    carry: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.carry = self.carry or {}  # None (the old default) still means nothing to carry

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from pyairtable_migration.hooks.route53 import Route53WeightsHook

        insync_seconds = 0.0
        if self.change_id:
            hook = Route53WeightsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
            try:
                insync_seconds = await wait_insync(
                    hook, self.change_id, self.timeout_seconds, self.poll_seconds
                )
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                yield TriggerEvent(
                    {"status": "error", "change_id": self.change_id, "message": message, "carry": self.carry}
                )
                return
            self.log.info("Route53 change %s INSYNC after %.1f s", self.change_id, insync_seconds)
        if self.hold_seconds > 0:
            self.log.info("Holding %.1f s", self.hold_seconds)
            await asyncio.sleep(self.hold_seconds)
        yield TriggerEvent(
            {
                "status": "insync",
                "change_id": self.change_id,
                "insync_seconds": round(insync_seconds, 3),
                "held_seconds": self.hold_seconds,
                "carry": self.carry,
            }
        )


@trigger_fields
class TrafficGateTrigger(MigrationTrigger):
    """One weight step after its change: wait INSYNC, then bake while sampling the gate queries.

    Yields one event: `passed`, `breached` (as soon as the gate trips), `no_data`, or
    `route53_error`. The operator resumes on it: reverts and fails on a breach.

    With `revert` given, the trigger itself puts traffic back on staging the moment the gate
    trips, before yielding: resuming the operator waits for a scheduler loop and a free worker
    slot, and production must not keep receiving users meanwhile. The operator then re-asserts
    the revert (a no-op when done) and fails. This is the one write a trigger makes here.

    :param queries: name -> rendered PromQL (names are the keys of `limits`)
    :param limits: name -> the largest healthy value
    :param revert: {"hosted_zone", "records", "weights": {set identifier: weight}} to set on a trip
    :param carry: returned in the event, for the operator's resume
    """

    weight: int
    aws_conn_id: str | None
    change_id: str | None
    prometheus_conn_id: str
    queries: dict[str, str]
    limits: dict[str, float]
    bake_seconds: float
    sample_seconds: float
    consecutive_breaches: int
    region_name: str | None = None
    insync_timeout_seconds: float = 600.0
    poll_seconds: float = 1.0
    revert: dict[str, Any] | None = None
    carry: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        # The trigger's own copies: the caller's mappings may change after the deferral.
        self.queries = dict(self.queries)
        self.limits = dict(self.limits)
        self.carry = self.carry or {}  # None (the old default) still means nothing to carry

    def revert_now(self) -> dict[str, Any]:
        """Put traffic back on staging (runs in a thread); what was done, or why it was not."""
        from pyairtable_migration.hooks.route53 import Route53WeightsHook

        if not self.revert:
            return {}
        try:
            hook = Route53WeightsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
            zone_id = hook.hosted_zone_id(self.revert["hosted_zone"])
            weights = self.revert["weights"]
            records = hook.require_records(zone_id, self.revert["records"], weights)
            result = hook.set_weights(
                zone_id, records, weights, comment=f"pyairtable-migration: gate tripped at {self.weight} %"
            )
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"change_id": result.change_id, "changed": result.described}

    def sample(self, prometheus: PrometheusHook) -> GateSample:
        """Query every gate query once (runs in a thread)."""
        from pyairtable_migration.hooks.prometheus import PrometheusQueryError

        at = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        values: dict[str, float | None] = {}
        try:
            for name, query in self.queries.items():
                values[name] = prometheus.instant_value(query)
        except PrometheusQueryError as exc:
            return GateSample(at, {name: values.get(name) for name in self.queries}, error=str(exc))
        return GateSample(at, values)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from pyairtable_migration.hooks.prometheus import PrometheusHook
        from pyairtable_migration.hooks.route53 import Route53WeightsHook

        insync_seconds = 0.0
        if self.change_id:
            route53 = Route53WeightsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
            try:
                insync_seconds = await wait_insync(
                    route53, self.change_id, self.insync_timeout_seconds, self.poll_seconds
                )
            except Exception as exc:
                yield TriggerEvent(
                    {
                        "status": "route53_error",
                        "weight": self.weight,
                        "message": f"the weight change {self.change_id} did not reach INSYNC: "
                        f"{type(exc).__name__}: {exc}",
                        "carry": self.carry,
                    }
                )
                return
            self.log.info("Weights for %d %% INSYNC after %.1f s", self.weight, insync_seconds)
        prometheus = PrometheusHook(self.prometheus_conn_id)
        gate = Gate(self.limits, self.consecutive_breaches)
        ends = time.monotonic() + self.bake_seconds
        self.log.info(
            "Baking %g s at %d %%, a sample every %g s, %d consecutive breaches trip",
            self.bake_seconds,
            self.weight,
            self.sample_seconds,
            self.consecutive_breaches,
        )
        while True:
            sample = await asyncio.to_thread(self.sample, prometheus)
            tripped = gate.add(sample)
            self.log.info("Sample %s", sample.describe(self.limits))
            if tripped:
                break
            remaining = ends - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(self.sample_seconds, remaining))
        verdict = gate.verdict(self.weight)
        if gate.tripped:
            verdict["reverted"] = await asyncio.to_thread(self.revert_now)
            self.log.warning("Gate tripped; traffic back to staging at once: %s", verdict["reverted"])
        yield TriggerEvent({**verdict, "insync_seconds": round(insync_seconds, 3), "carry": self.carry})
