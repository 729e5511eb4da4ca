"""The services phase: one blue-green step per operator, per service.

deploy -> wait_rollout -> smoke_test -> promote -> retire_old_color, and rollback on demand.

Each task reads the cluster first and decides from what it finds (`BlueGreenState.target_color`):
the color that runs the configured version is the active one when it already does, otherwise the
idle one. So a task cleared and re-run on its own, in any order, lands on the same objects, and a
second run with the same image changes nothing. In run param `mode == "plan"` every task reads
what it can, logs what it would change, and changes nothing; it succeeds even without a cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import Context

from pyairtable_migration.kubernetes.bluegreen import (
    PREVIOUS_COLOR_ANNOTATION,
    PROMOTED_AT_ANNOTATION,
    RETIRED_REPLICAS_ANNOTATION,
    ROLLED_BACK_FROM_ANNOTATION,
    BlueGreenError,
    BlueGreenState,
    ServiceSpec,
    StateChanged,
    deployment_name,
    other_color,
    preview_name,
)
from pyairtable_migration.kubernetes.platform_objects import Workload
from pyairtable_migration.links import ServiceDashboardLink
from pyairtable_migration.loadtest.driver import percentile
from pyairtable_migration.operators.base import (
    MigrationOperator,
    PhaseUndo,
    fail,
    run_clear_number,
    run_mode,
)
from pyairtable_migration.triggers.rollout import DeploymentRolloutTrigger, RollbackWindowTrigger

if TYPE_CHECKING:
    from pyairtable_migration.hooks.bluegreen import BlueGreenHook

COMPARE_AND_SET_ATTEMPTS = 3
T = TypeVar("T")


class BlueGreenOperator(MigrationOperator):
    """What every blue-green step knows about its service, and how it reads the cluster."""

    template_fields: Sequence[str] = (
        "service_name",
        "namespace",
        "kubernetes_conn_id",
        "image",
        "replicas",
        "port",
        "health_path",
        "service_secret",
        "progress_deadline_seconds",
        "dashboard_url_template",
        "min_replicas",
        "max_replicas",
        "target_cpu_utilization",
        "min_available",
        "max_unavailable",
        "public",
        "dependents",
        "ingress_namespace",
        "monitoring_namespace",
        "security_context",
    )
    operator_extra_links = (ServiceDashboardLink(),)
    ui_color = "#e3f1e1"

    service_name: str
    namespace: str
    kubernetes_conn_id: str
    image: str
    replicas: int
    port: int = 8080
    health_path: str = "/health"
    service_secret: str | None = None
    progress_deadline_seconds: int = 600
    dashboard_url_template: str = ""
    min_replicas: int | None = None
    max_replicas: int = 10
    target_cpu_utilization: int = 70
    min_available: int | str | None = 1
    max_unavailable: int | str | None = None
    public: bool = False
    dependents: Sequence[str] = ()
    ingress_namespace: str = "ingress-nginx"
    monitoring_namespace: str = "monitoring"
    security_context: Mapping[str, Any] | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The color this task acted on, for the dashboard link (set once the cluster is read).
        self.dashboard_color: str | None = None

    @cached_property
    def hook(self) -> BlueGreenHook:
        from pyairtable_migration.hooks.bluegreen import BlueGreenHook  # loads the Kubernetes client

        return BlueGreenHook(self.kubernetes_conn_id, self.namespace)

    @property
    def spec(self) -> ServiceSpec:
        return ServiceSpec(
            name=self.service_name,
            image=self.image,
            replicas=int(self.replicas),
            port=int(self.port),
            health_path=self.health_path,
            secret=self.service_secret or None,
            progress_deadline_seconds=int(self.progress_deadline_seconds),
            workload=self.workload,
        )

    @property
    def workload(self) -> Workload:
        replicas = int(self.replicas)
        return Workload.of(
            self.service_name,
            int(self.port),
            {
                "min_replicas": int(self.min_replicas) if self.min_replicas is not None else replicas,
                "max_replicas": max(int(self.max_replicas), replicas),
                "target_cpu_utilization": int(self.target_cpu_utilization),
                "min_available": self.min_available,
                "max_unavailable": self.max_unavailable,
                "public": bool(self.public),
                "dependents": self.dependents,
                "ingress_namespace": self.ingress_namespace,
                "monitoring_namespace": self.monitoring_namespace,
                "security_context": self.security_context or None,
            },
        )

    def observe(self, mode: str) -> BlueGreenState | None:
        """Read the service's objects; in plan mode a cluster that cannot be read is reported, not fatal."""
        try:
            state = self.hook.read_state(self.service_name)
        except Exception as exc:
            if mode == "plan":
                self.log.warning(
                    "Plan: cannot read namespace %s (%s: %s); describing the change as if it were empty",
                    self.namespace,
                    type(exc).__name__,
                    exc,
                )
                return None
            if isinstance(exc, BlueGreenError):
                raise fail(str(exc)) from None
            raise
        self.log.info("Observed in %s: %s", self.namespace, state.describe())
        return state

    def target(self, state: BlueGreenState | None) -> str:
        color = state.target_color(self.spec) if state is not None else "blue"
        self.dashboard_color = color
        return color

    def compare_and_set(self, mode: str, attempt: Callable[[BlueGreenState], T]) -> T:
        """Run `attempt` on fresh state; a lost race (409) reads again and decides again."""
        for number in range(1, COMPARE_AND_SET_ATTEMPTS + 1):
            state = self.observe(mode)
            assert state is not None  # apply mode raises instead of returning None
            try:
                return attempt(state)
            except StateChanged as exc:
                if number == COMPARE_AND_SET_ATTEMPTS:
                    raise fail(
                        f"{exc}; the objects kept changing under this task ({number} attempts)"
                    ) from None
                self.log.warning("Changed while deciding (%s); reading again (attempt %d)", exc, number + 1)
            except BlueGreenError as exc:
                raise fail(str(exc)) from None
        raise AssertionError("unreachable")

    def longest_rollout_seconds(self) -> float:
        """The most a rollout that keeps moving can take: the trigger's deadline is on progress,
        and each replica moves three counters (updated, ready, available), each within it."""
        return float(self.progress_deadline_seconds) * (3 * int(self.replicas) + 1)

    def summary(self, color: str | None, **extra: Any) -> dict[str, Any]:
        return {
            "service": self.service_name,
            "namespace": self.namespace,
            "color": color,
            "deployment": deployment_name(self.service_name, color) if color else None,
            **extra,
        }


class BlueGreenDeployOperator(BlueGreenOperator):
    """Create or update the color that is to run the configured image; point the preview Service at it.

    Beside it, the service's platform objects (kubernetes/platform_objects.py): its ServiceAccount,
    NetworkPolicy, the namespace's default deny, the color's HorizontalPodAutoscaler and the
    PodDisruptionBudget, each created or corrected only when it differs. An existing Deployment keeps
    the replicas its autoscaler gave it (within min..max): the deploy never fights the HPA.

    The active color is found from the active Service's selector (none on a first deploy). A Secret
    named by `service_secret` must exist: containers load their environment from it (envFrom), so
    no password is ever written into a Deployment.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        mode = run_mode(context)
        if mode == "plan":
            return self._plan(self.observe(mode))
        self._require_secret()
        return self.compare_and_set(mode, self._apply)

    def _require_secret(self) -> None:
        if not self.service_secret:
            return
        try:
            keys = self.hook.secret_keys(self.service_secret)
        except BlueGreenError as exc:
            raise fail(str(exc)) from None
        if keys is None:
            raise fail(
                f"secret {self.service_secret} not found in namespace {self.namespace}: create it with the "
                "services' environment (DATABASE_URL, ...) before deploying; this DAG never copies secrets"
            )
        self.log.info(
            "Secret %s provides keys %s (values not read)", self.service_secret, ", ".join(keys) or "none"
        )

    def _plan(self, state: BlueGreenState | None) -> dict[str, Any]:
        spec = self.spec
        color = self.target(state)
        name = deployment_name(spec.name, color)
        current = state.colors.get(color) if state is not None else None
        if current is None:
            self.log.info("Plan: would create deployment %s (%s x%d)", name, spec.image, spec.replicas)
            action = "create"
        elif current.matches(spec, self.namespace):
            self.log.info(
                "Plan: deployment %s already runs %s x%d: nothing to change", name, spec.image, spec.replicas
            )
            action = "none"
        else:
            self.log.info(
                "Plan: would update deployment %s from %s x%d to %s x%d",
                name,
                current.image,
                current.replicas,
                spec.image,
                spec.replicas,
            )
            action = "update"
        preview = state.preview if state is not None else None
        if preview is None or preview.color != color:
            self.log.info(
                "Plan: would point service %s at %s (now %s)",
                preview_name(spec.name),
                color,
                preview.color if preview is not None else "absent",
            )
        if self.service_secret:
            self.log.info("Plan: containers would load their environment from secret %s", self.service_secret)
        for manifest in self.workload.objects(name, self.namespace):
            self.log.info(
                "Plan: would create or correct %s %s", manifest["kind"], manifest["metadata"]["name"]
            )
        return self.summary(color, mode="plan", image=spec.image, action=action)

    def _apply_platform(self, color: str) -> dict[str, str]:
        """The platform objects around `<svc>-<color>`: kind/name -> created | updated | unchanged."""
        actions = {}
        for manifest in self.workload.objects(deployment_name(self.service_name, color), self.namespace):
            what = f"{manifest['kind']}/{manifest['metadata']['name']}"
            action, written = self.hook.apply_object(manifest)
            actions[what] = action
            self.log.info(
                "%s %s (resourceVersion %s)", what, action, written["metadata"].get("resourceVersion")
            )
        return actions

    def _apply(self, state: BlueGreenState) -> dict[str, Any]:
        spec = self.spec
        color = self.target(state)
        current = state.colors.get(color)
        if color == state.active_color:
            self.log.info("The active color %s already runs %s", color, spec.image)
        platform = self._apply_platform(color)
        action, deployment = self.hook.apply_deployment(spec, color, current)
        version = deployment["metadata"].get("resourceVersion")
        replicas = deployment["spec"].get("replicas")
        if action == "unchanged":
            self.log.info(
                "Deployment %s already matches (%s x%s): unchanged",
                deployment_name(spec.name, color),
                spec.image,
                replicas,
            )
        else:
            before = f"{current.image} x{current.replicas}" if current is not None else "absent"
            self.log.info(
                "Deployment %s %s: %s -> %s x%s (resourceVersion %s)",
                deployment_name(spec.name, color),
                action,
                before,
                spec.image,
                replicas,
                version,
            )
        preview_before = state.preview.color if state.preview is not None else None
        if preview_before != color:
            self.hook.point_service(spec, preview_name(spec.name), "preview", color, state.preview)
            self.log.info(
                "Service %s now selects %s (was %s)",
                preview_name(spec.name),
                color,
                preview_before or "absent",
            )
        else:
            self.log.info("Service %s already selects %s", preview_name(spec.name), color)
        return self.summary(
            color,
            mode="apply",
            image=spec.image,
            replicas=replicas,
            action=action,
            active_color=state.active_color,
            preview_changed=preview_before != color,
            platform=platform,
        )


class BlueGreenRolloutOperator(BlueGreenOperator):
    """Wait until the deployed color's rollout is complete, on the triggerer (deferrable).

    Complete: observedGeneration caught up and every replica updated, ready and available. No
    progress for `progress_deadline_seconds` fails the task with the pods' conditions.
    """

    poll_seconds: float = 2
    deferrable: bool = True

    def execute(self, context: Context) -> dict[str, Any]:
        mode = run_mode(context)
        state = self.observe(mode)
        color = self.target(state)
        name = deployment_name(self.service_name, color)
        current = state.colors.get(color) if state is not None else None
        if mode == "plan":
            now = current.rollout.describe() if current is not None else "not deployed yet"
            self.log.info(
                "Plan: would wait until %s has %d replica(s) updated, ready and available (now: %s); "
                "no progress for %d s fails",
                name,
                self.replicas,
                now,
                self.progress_deadline_seconds,
            )
            return self.summary(color, mode="plan")
        if current is None:
            raise fail(f"deployment {name} does not exist: run deploy first")
        if current.rollout.done:
            self.log.info("%s is rolled out: %s", name, current.rollout.describe())
            return self.summary(color, mode="apply", ready=current.rollout.ready, waited_seconds=0.0)
        self.log.info("Waiting for %s: %s", name, current.rollout.describe())
        trigger = DeploymentRolloutTrigger(
            kubernetes_conn_id=self.kubernetes_conn_id,
            namespace=self.namespace,
            deployment=name,
            pod_selector=f"app={self.service_name},color={color}",
            progress_deadline_seconds=float(self.progress_deadline_seconds),
            poll_seconds=float(self.poll_seconds),
        )
        if self.deferrable:
            self.defer_to(trigger, self.longest_rollout_seconds(), {"color": color})
        event = asyncio.run(_first_event(trigger))
        return self.execute_complete(context, event, color)

    def execute_complete(
        self, context: Context, event: Mapping[str, Any], color: str | None = None
    ) -> dict[str, Any]:
        color = color or _color_of(event)
        self.dashboard_color = color
        self.raise_on_failure(event, f"rollout of {deployment_name(self.service_name, color)}")
        self.log.info("%s (waited %.1f s)", event.get("message"), event.get("seconds", 0.0))
        rollout = event.get("rollout") or {}
        return self.summary(
            color, mode="apply", ready=rollout.get("ready"), waited_seconds=event.get("seconds")
        )


def _color_of(event: Mapping[str, Any]) -> str:
    """The color of the Deployment a rollout event is about (`<svc>-<color>`).

    Resume kwargs are not always handed back with the event (dag.test() drops them), so the
    event itself says which Deployment it watched.
    """
    return str(event.get("deployment", "")).rsplit("-", 1)[-1]


async def _first_event(trigger: DeploymentRolloutTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise RuntimeError("the rollout trigger ended without an event")


class BlueGreenSmokeTestOperator(BlueGreenOperator):
    """Requests through the preview Service: no errors, and p95 under the service's SLO class."""

    template_fields: Sequence[str] = (*BlueGreenOperator.template_fields, "slo_class", "slo_ms", "requests")

    slo_class: str
    slo_ms: float
    requests: int = 20
    timeout_seconds: float = 5

    def execute(self, context: Context) -> dict[str, Any]:
        mode = run_mode(context)
        state = self.observe(mode)
        color = self.target(state)
        preview = preview_name(self.service_name)
        if mode == "plan":
            self.log.info(
                "Plan: would GET %s %d times through service %s (color %s): no errors, p95 < %s ms (%s)",
                self.health_path,
                self.requests,
                preview,
                color,
                self.slo_ms,
                self.slo_class,
            )
            return self.summary(color, mode="plan", slo_ms=self.slo_ms)
        assert state is not None
        if state.preview is None or state.preview.color != color:
            raise fail(
                f"service {preview} selects {state.preview.color if state.preview else 'nothing'}, "
                f"not {color} (the color running {self.image}): re-run deploy"
            )
        current = state.colors.get(color)
        if current is None or not current.rollout.done:
            raise fail(
                f"{deployment_name(self.service_name, color)} is not rolled out "
                f"({current.rollout.describe() if current else 'absent'}): re-run wait_rollout"
            )
        answers = [
            self.hook.proxy_get(preview, self.health_path, self.timeout_seconds)
            for _ in range(int(self.requests))
        ]
        milliseconds = [seconds * 1000 for _, seconds, _ in answers]
        p50, p95 = percentile(milliseconds, 0.5), percentile(milliseconds, 0.95)
        errors = [(status, reason) for status, _, reason in answers if not 200 <= status < 300]
        figures = f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(milliseconds):.1f} ms"
        self.log.info(
            "%d GET %s through %s (%s): %d error(s); %s; SLO %s < %s ms",
            len(answers),
            self.health_path,
            preview,
            color,
            len(errors),
            figures,
            self.slo_class,
            self.slo_ms,
        )
        if errors:
            statuses = sorted({status for status, _ in errors})
            first = errors[0][1] or f"HTTP {errors[0][0]}"
            raise fail(
                f"smoke test of {self.service_name} ({color}, {self.image}) through {preview}: "
                f"{len(errors)}/{len(answers)} requests failed (HTTP {statuses}; first: {first}); "
                f"{figures}; the active Service is unchanged"
            )
        if p95 >= float(self.slo_ms):
            raise fail(
                f"smoke test of {self.service_name} ({color}, {self.image}) through {preview}: "
                f"p95 {p95:.1f} ms breaches the {self.slo_class} SLO of {self.slo_ms} ms ({figures}); "
                "the active Service is unchanged"
            )
        return self.summary(
            color,
            mode="apply",
            requests=len(answers),
            errors=0,
            p50_ms=round(p50, 1),
            p95_ms=round(p95, 1),
            slo_ms=self.slo_ms,
        )


class BlueGreenPromoteOperator(BlueGreenOperator):
    """Switch the active Service's selector to the new color (compare-and-set on resourceVersion).

    Creates the Service on a first deploy. Refuses when the new color is not fully rolled out.
    Records the color it came from and when, for rollback and for the retire window.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        mode = run_mode(context)
        if mode == "plan":
            state = self.observe(mode)
            color = self.target(state)
            before = state.active_color if state is not None else None
            if before == color:
                self.log.info(
                    "Plan: service %s already selects %s: nothing to change", self.service_name, color
                )
            else:
                self.log.info(
                    "Plan: would switch service %s from %s to %s",
                    self.service_name,
                    before or "absent (create it)",
                    color,
                )
            return self.summary(color, mode="plan", previous_color=before)
        return self.compare_and_set(mode, self._apply)

    def _apply(self, state: BlueGreenState) -> dict[str, Any]:
        color = self.target(state)
        name = deployment_name(self.service_name, color)
        current = state.colors.get(color)
        if current is None or not current.rollout.done:
            progress = current.rollout.describe() if current else "absent"
            raise fail(f"refusing to promote {name}: not rolled out ({progress})")
        before = state.active_color
        if before == color:
            self.log.info("Service %s already selects %s: nothing to change", self.service_name, color)
            return self.summary(color, mode="apply", previous_color=before, changed=False)
        annotations = {PROMOTED_AT_ANNOTATION: datetime.now(UTC).isoformat(timespec="seconds")}
        if before:
            annotations[PREVIOUS_COLOR_ANNOTATION] = before
        self.log.info(
            "Before: service %s selector %s (resourceVersion %s)",
            self.service_name,
            state.active.selector if state.active else "absent",
            state.active.resource_version if state.active else "-",
        )
        after = self.hook.point_service(
            self.spec, self.service_name, "active", color, state.active, annotations
        )
        self.log.info(
            "After: service %s selector %s (resourceVersion %s)",
            self.service_name,
            after["spec"].get("selector"),
            after["metadata"].get("resourceVersion"),
        )
        return self.summary(color, mode="apply", previous_color=before, changed=True)


class BlueGreenRetireOperator(BlueGreenOperator):
    """Keep the old color running for the rollback window (a deferrable wait), then scale it to 0.

    The window counts from the promote time recorded on the active Service, so a re-run does not
    wait again. If the active Service changed during the window (a rollback), nothing is retired.
    """

    template_fields: Sequence[str] = (*BlueGreenOperator.template_fields, "rollback_window_seconds")

    rollback_window_seconds: float = 30

    def execute(self, context: Context) -> dict[str, Any]:
        mode = run_mode(context)
        state = self.observe(mode)
        color = self.target(state)
        old = other_color(color)
        if mode == "plan":
            self.log.info(
                "Plan: would keep %s for %s s after promote as the instant way back, then scale it to 0",
                deployment_name(self.service_name, old),
                self.rollback_window_seconds,
            )
            return self.summary(color, mode="plan", retired=None)
        assert state is not None
        if state.active_color != color:
            raise fail(
                f"service {self.service_name} selects {state.active_color or 'nothing'}, not {color} "
                f"(the color running {self.image}): promote first; nothing retired"
            )
        old_state = state.colors.get(old)
        if old_state is None or old_state.replicas == 0:
            self.log.info(
                "No old color to retire: %s is %s",
                deployment_name(self.service_name, old),
                "absent" if old_state is None else "already at 0 replicas",
            )
            return self.summary(color, mode="apply", retired=None)
        until = self._window_end(state)
        remaining = (until - datetime.now(UTC)).total_seconds()
        if remaining > 0:
            self.log.info(
                "Keeping %s (%d replica(s)) until %s (%.1f s more): traffic can go back to it at once",
                old_state.name,
                old_state.replicas,
                until.isoformat(timespec="seconds"),
                remaining,
            )
            self.defer_to(RollbackWindowTrigger(until=until.isoformat()), remaining)
        return self._retire()

    def _window_end(self, state: BlueGreenState) -> datetime:
        promoted = (state.active.annotations if state.active else {}).get(PROMOTED_AT_ANNOTATION)
        try:
            start = datetime.fromisoformat(promoted) if promoted else datetime.now(UTC)
        except ValueError:
            start = datetime.now(UTC)
        return start + timedelta(seconds=float(self.rollback_window_seconds))

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        return self._retire()

    def _retire(self) -> dict[str, Any]:
        """Scale the old color to 0, if the active Service still selects the color running the image."""

        def attempt(state: BlueGreenState) -> dict[str, Any]:
            active = self.target(state)
            if state.active_color != active:
                raise fail(
                    f"service {self.service_name} now selects {state.active_color or 'nothing'}, "
                    f"not {active}: it changed during the rollback window (a rollback?); nothing retired"
                )
            old = state.colors.get(other_color(active))
            if old is None or old.replicas == 0:
                self.log.info("Old color already retired")
                return self.summary(active, mode="apply", retired=None)
            self.hook.scale(old, 0, {RETIRED_REPLICAS_ANNOTATION: str(old.replicas)})
            self.log.info("Scaled %s from %d replica(s) to 0 (recorded for rollback)", old.name, old.replicas)
            return self.summary(active, mode="apply", retired=old.name, retired_replicas=old.replicas)

        return self.compare_and_set("apply", attempt)


class BlueGreenRollbackOperator(BlueGreenOperator):
    """Point the active Service back at the color it had before promote, scaling it up again if needed.

    The previous color is the one promote recorded on the Service (else the other color, if it
    exists). A no-op when the Service already selects it, so it is safe to run any number of times.
    """

    poll_seconds: float = 2
    deferrable: bool = True

    def _previous(self, state: BlueGreenState) -> str | None:
        if state.active is None:
            return None
        recorded = state.active.annotations.get(PREVIOUS_COLOR_ANNOTATION)
        if recorded:
            return recorded
        fallback = other_color(state.active_color or "")
        return fallback if fallback in state.colors else None

    def execute(self, context: Context) -> dict[str, Any]:
        return self.roll_back(context)

    def roll_back(self, context: Context) -> dict[str, Any]:
        """This service back to its previous color (the class docstring); `services.undo` runs it for
        every service in one task."""
        mode = run_mode(context)
        state = self.observe(mode)
        previous = self._previous(state) if state is not None else None
        self.dashboard_color = previous
        if state is None or previous is None:
            self.log.info("Service %s has no previous color to go back to: nothing to do", self.service_name)
            return self.summary(None, mode=mode, changed=False)
        if state.active_color == previous:
            self.log.info("Service %s already selects %s: nothing to do", self.service_name, previous)
            return self.summary(previous, mode=mode, changed=False)
        target = state.colors.get(previous)
        if target is None:
            raise fail(f"cannot roll back {self.service_name} to {previous}: its deployment is gone")
        if mode == "plan":
            self.log.info(
                "Plan: would switch service %s from %s back to %s (%s)",
                self.service_name,
                state.active_color,
                previous,
                target.describe(),
            )
            return self.summary(previous, mode="plan", changed=False)
        if target.replicas == 0:
            self.compare_and_set(mode, lambda fresh: self._scale_up(fresh, previous))
        elif not target.rollout.done:
            self.log.info("%s: %s", target.name, target.rollout.describe())
        else:
            return self._switch(previous)
        trigger = DeploymentRolloutTrigger(
            kubernetes_conn_id=self.kubernetes_conn_id,
            namespace=self.namespace,
            deployment=target.name,
            pod_selector=f"app={self.service_name},color={previous}",
            progress_deadline_seconds=float(self.progress_deadline_seconds),
            poll_seconds=float(self.poll_seconds),
        )
        if self.deferrable:
            self.defer_to(trigger, self.longest_rollout_seconds(), {"previous": previous})
        return self.execute_complete(context, asyncio.run(_first_event(trigger)), previous)

    def scale_up_previous(self) -> None:
        """Give a retired previous color its replicas back without waiting for them: `services.undo`
        does so for every service first, so their rollouts overlap instead of queueing."""
        state = self.observe("apply")
        assert state is not None  # apply mode raises instead of returning None
        previous = self._previous(state)
        if previous is None or state.active_color == previous:
            return
        retired = state.colors.get(previous)
        if retired is not None and retired.replicas == 0:
            self.compare_and_set("apply", lambda fresh: self._scale_up(fresh, previous))

    def _scale_up(self, state: BlueGreenState, previous: str) -> None:
        """Give the previous color back the replicas retire recorded (a controller's status update can
        change it between the read and this write: compare_and_set then reads again)."""
        target = state.colors.get(previous)
        if target is None:
            raise fail(f"cannot roll back {self.service_name} to {previous}: its deployment is gone")
        if target.replicas != 0:
            self.log.info("%s already has %d replica(s)", target.name, target.replicas)
            return
        replicas = int(target.annotations.get(RETIRED_REPLICAS_ANNOTATION) or self.replicas)
        self.hook.scale(target, replicas, {RETIRED_REPLICAS_ANNOTATION: None})
        self.log.info("Scaled %s back up to %d replica(s)", target.name, replicas)

    def execute_complete(
        self, context: Context, event: Mapping[str, Any], previous: str | None = None
    ) -> dict[str, Any]:
        previous = previous or _color_of(event)
        self.dashboard_color = previous
        self.raise_on_failure(event, "cannot roll back")
        return self._switch(previous)

    def _switch(self, previous: str) -> dict[str, Any]:
        def attempt(state: BlueGreenState) -> dict[str, Any]:
            before = state.active_color
            if before == previous:
                self.log.info("Service %s already selects %s", self.service_name, previous)
                return self.summary(previous, mode="apply", changed=False)
            self.log.info(
                "Before: service %s selector %s",
                self.service_name,
                state.active.selector if state.active else None,
            )
            after = self.hook.point_service(
                self.spec,
                self.service_name,
                "active",
                previous,
                state.active,
                {ROLLED_BACK_FROM_ANNOTATION: before or ""},
            )
            self.log.info(
                "After: service %s selector %s (rolled back from %s)",
                self.service_name,
                after["spec"].get("selector"),
                before,
            )
            return self.summary(previous, mode="apply", changed=True, rolled_back_from=before)

        return self.compare_and_set("apply", attempt)


class BlueGreenVerifyOperator(MigrationOperator):
    """The phase's last task: every service's active Service selects a rolled-out color running its image.

    It also ends the phase with `none_failed`, so an infrastructure check that was skipped (an
    external dependency) does not skip everything after the services phase. Its result records the
    run's clear number, which `services.undo` reads.
    """

    template_fields: Sequence[str] = ("namespace", "kubernetes_conn_id", "services")
    ui_color = "#e3f1e1"

    namespace: str
    kubernetes_conn_id: str
    services: Mapping[str, Mapping[str, Any]]

    def execute(self, context: Context) -> dict[str, Any]:
        from pyairtable_migration.hooks.bluegreen import BlueGreenHook  # loads the Kubernetes client

        mode = run_mode(context)
        # Which clear of the run this ran in: services.undo tells a clear of its own from a re-run.
        cleared = run_clear_number(context)
        hook = BlueGreenHook(self.kubernetes_conn_id, self.namespace)
        serving: dict[str, str | None] = {}
        problems: list[str] = []
        try:
            states = hook.read_all_states(sorted(self.services))
        except Exception as exc:
            if mode == "plan":
                self.log.warning("Plan: cannot read namespace %s (%s); nothing verified", self.namespace, exc)
                return {"mode": mode, "verified": False, "clear_number": cleared}
            if isinstance(exc, BlueGreenError):
                raise fail(str(exc)) from None
            raise
        for name, fields in sorted(self.services.items()):
            arguments = {key: value for key, value in fields.items() if key != "workload"}
            workload = fields.get("workload")
            spec = ServiceSpec(
                name=name,
                **arguments,
                workload=Workload.of(name, int(fields["port"]), workload) if workload is not None else None,
            )
            state = states[name]
            color = state.target_color(spec)
            current = state.colors.get(color)
            serving[name] = state.active_color
            if state.active_color != color:
                problems.append(
                    f"{name}: service selects {state.active_color or 'nothing'}, not {color} ({spec.image})"
                )
            elif current is None or not current.rollout.done:
                progress = current.rollout.describe() if current else "absent"
                problems.append(f"{name}: {color} is not rolled out ({progress})")
            else:
                self.log.info("%s: %s serves %s (%s)", name, color, spec.image, current.rollout.describe())
        if problems and mode == "apply":
            raise fail(
                f"{len(problems)} service(s) not serving their version:\n  - " + "\n  - ".join(problems)
            )
        for problem in problems:
            self.log.info("Plan: %s", problem)
        return {"mode": mode, "active_colors": serving, "problems": len(problems), "clear_number": cleared}


class ServicesUndoOperator(PhaseUndo):
    """The migration's own way back for the services: clear this task alone, after the phase ended,
    and every deployable service goes back to its previous color, dependents first.

    Hangs beside the services phase (after `services.verify`, trigger rule `all_done`, upstream of
    nothing). It never acts by itself: when a services step fails, the recovery is to fix the image
    and clear the failed deploy with downstream, and an undo acting then would send the services
    already promoted back while the cleared run goes on. So it acts only when the run was cleared
    after `services.verify` ended, without the phase (`PhaseUndo`, `acts_on_failure` off); a step
    cleared with downstream re-runs verify, and the undo stays skipped. For a phase that did not
    end, the rollback DAG's services scope is the way back.

    Refuses, changing nothing, while any weighted record sends users to production: users leave
    production before what serves them there changes (the rollback's order; clear traffic.undo first).

    One task for every service: a task each would cost the scheduler time in every run. Each
    service's move is the rollback DAG's own step (BlueGreenRollbackOperator), run here in turn with
    its rollout waited for in the task, not deferred: first every retired previous color is scaled
    up, so their rollouts overlap; then, dependents first, each waits for its own and its active
    Service is switched back. A service with no previous color (a first deployment) is left as it
    is, and its result says so.

    :param services: each service's rollback arguments (plan.service_rollback_arguments), dependents first
    :param route53: the weighted records (plan.route53_arguments), read for the users' guard
    """

    template_fields: Sequence[str] = ("services", "route53")
    ui_color = "#e3f1e1"
    not_asked = (
        "not cleared alone after the services phase ended (clear this task alone to send every service "
        "back to its previous color; a failed step is fixed and cleared with downstream)"
    )

    services: Sequence[Mapping[str, Any]]
    route53: Mapping[str, Any]

    def execute(self, context: Context) -> dict[str, Any]:
        why = self.undo_or_skip(context)
        mode = run_mode(context)
        if mode == "plan":
            self.log.info(
                "Plan: would refuse while any of %s sends users to production",
                ", ".join(self.route53["records"]),
            )
        else:
            self.refuse_while_users_on_production(self.route53, "sending the services back")
        self.log.info("Every service back to its previous color, dependents first: %s", why)
        rollbacks = [
            BlueGreenRollbackOperator(
                task_id=f"{self.task_id}.{service['service_name']}", deferrable=False, **service
            )
            for service in self.services
        ]
        if mode == "apply":
            for rollback in rollbacks:
                rollback.scale_up_previous()
        results = {rollback.service_name: rollback.roll_back(context) for rollback in rollbacks}
        changed = [name for name, result in results.items() if result["changed"]]
        self.log.info("%d service(s) switched back: %s", len(changed), ", ".join(changed) or "none")
        return {"mode": mode, "why": why, "changed": changed, "services": results}
