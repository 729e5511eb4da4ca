"""Blue-green deployment on Kubernetes as data: the objects, their names, how to read their state.

Per service, in one namespace:
  - Deployments `<svc>-blue` and `<svc>-green` (labels app, color, version; selector app, color);
  - the active Service `<svc>` and the preview Service `<svc>-preview`, each selecting one color.

Around them, the platform objects of kubernetes/platform_objects.py (ServiceAccount, autoscaler,
disruption budget, NetworkPolicy); a Deployment's pods run as the service's account with the
configured securityContext.

Every decision is taken from the cluster as it is now (`BlueGreenState`), never from what an
earlier task said, so a task cleared and re-run on its own still does the right thing. No client
here (hooks/bluegreen.py owns it): DAG files and trigger payloads import this without loading the
Kubernetes libraries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyairtable_migration.kubernetes.platform_objects import Workload

COLORS = ("blue", "green")
SERVICE_PORT = 80
PORT_NAME = "http"
MANAGED_BY = ("app.kubernetes.io/managed-by", "pyairtable-migration")
# Written on the active Service by promote: where it came from and when, for rollback and retire.
PREVIOUS_COLOR_ANNOTATION = "pyairtable.io/previous-color"
PROMOTED_AT_ANNOTATION = "pyairtable.io/promoted-at"
ROLLED_BACK_FROM_ANNOTATION = "pyairtable.io/rolled-back-from"
# Written on a Deployment by retire: how many replicas it had, so rollback can restore them.
RETIRED_REPLICAS_ANNOTATION = "pyairtable.io/retired-replicas"

Manifest = dict[str, Any]


class StateChanged(Exception):
    """A compare-and-set write lost a race (409): read the state again and decide again."""


class BlueGreenError(Exception):
    """The cluster refused a request, with what was asked and the API's own reason."""


def other_color(color: str) -> str:
    return COLORS[1] if color == COLORS[0] else COLORS[0]


def deployment_name(service: str, color: str) -> str:
    return f"{service}-{color}"


def preview_name(service: str) -> str:
    return f"{service}-preview"


def image_tag(image: str) -> str:
    """`ghcr.io/org/name:1.8.0-slow` -> `1.8.0-slow` (config images always carry a tag)."""
    return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"


@dataclass(frozen=True)
class ServiceSpec:
    """What the configuration says one deployable service should be."""

    name: str
    image: str
    replicas: int
    port: int
    health_path: str
    secret: str | None = None
    progress_deadline_seconds: int = 600
    # The platform around the Deployments; None: a bare Deployment (no account, no securityContext).
    workload: Workload | None = None

    def replicas_after(self, current: int) -> int:
        """The replicas an existing Deployment keeps on re-apply: its autoscaler's, not the config's."""
        return self.workload.replicas_after(current, self.replicas) if self.workload else self.replicas

    def selector(self, color: str) -> dict[str, str]:
        return {"app": self.name, "color": color}

    def labels(self, color: str) -> dict[str, str]:
        return {**self.selector(color), "version": image_tag(self.image)}

    def deployment(self, color: str, namespace: str, replicas: int | None = None) -> Manifest:
        """The complete Deployment of one color; a replace with it corrects any drift.

        `replicas`: what an existing Deployment keeps (replicas_after); a new one starts with the config's.
        """
        container: Manifest = {
            "name": self.name,
            "image": self.image,
            "ports": [{"name": PORT_NAME, "containerPort": self.port}],
            "env": [
                {"name": "SERVICE_NAME", "value": self.name},
                {"name": "HEALTH_PATH", "value": self.health_path},
            ],
            "readinessProbe": {"httpGet": {"path": self.health_path, "port": self.port}, "periodSeconds": 5},
        }
        if self.secret:
            container["envFrom"] = [{"secretRef": {"name": self.secret}}]
        pod: Manifest = {"containers": [container]}
        if self.workload is not None:
            container["securityContext"] = self.workload.security_context.container()
            pod = {
                "serviceAccountName": self.name,
                "automountServiceAccountToken": False,
                "securityContext": self.workload.security_context.pod(),
                **pod,
            }
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": deployment_name(self.name, color),
                "namespace": namespace,
                "labels": {**self.labels(color), MANAGED_BY[0]: MANAGED_BY[1]},
            },
            "spec": {
                "replicas": self.replicas if replicas is None else replicas,
                "progressDeadlineSeconds": self.progress_deadline_seconds,
                "revisionHistoryLimit": 2,
                "selector": {"matchLabels": self.selector(color)},
                "template": {"metadata": {"labels": self.labels(color)}, "spec": pod},
            },
        }

    def service(
        self, name: str, color: str, namespace: str, role: str, annotations: Mapping[str, str]
    ) -> Manifest:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app": self.name, "role": role, MANAGED_BY[0]: MANAGED_BY[1]},
                "annotations": dict(annotations),
            },
            "spec": {
                "selector": self.selector(color),
                "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": self.port}],
            },
        }


def fingerprint(deployment: Mapping[str, Any], with_replicas: bool = True) -> str:
    """The fields this hook manages, so server-side defaults never look like drift."""
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    containers = pod.get("containers") or []

    def ours(labels: Mapping[str, str] | None) -> dict[str, str]:
        return {k: v for k, v in (labels or {}).items() if k in ("app", "color", "version")}

    managed = {
        "labels": ours(metadata.get("labels")),
        "selector": (spec.get("selector") or {}).get("matchLabels"),
        "template_labels": ours((template.get("metadata") or {}).get("labels")),
        "progress_deadline": spec.get("progressDeadlineSeconds"),
        "service_account": pod.get("serviceAccountName"),
        "automount_token": pod.get("automountServiceAccountToken"),
        "pod_security": pod.get("securityContext"),
        "containers": [
            {
                "name": c.get("name"),
                "image": c.get("image"),
                "ports": [(p.get("name"), p.get("containerPort")) for p in c.get("ports") or []],
                "env": [(e.get("name"), e.get("value")) for e in c.get("env") or []],
                "env_from": [(s.get("secretRef") or {}).get("name") for s in c.get("envFrom") or []],
                "probe": (
                    ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path"),
                    ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("port"),
                ),
                "security": c.get("securityContext"),
            }
            for c in containers
        ],
    }
    if with_replicas:
        managed["replicas"] = spec.get("replicas")
    return json.dumps(managed, sort_keys=True)


@dataclass(frozen=True)
class RolloutStatus:
    """A Deployment's rollout as `kubectl rollout status` judges it (zero counts read as 0)."""

    desired: int
    generation: int
    observed_generation: int
    total: int
    updated: int
    ready: int
    available: int
    progressing_reason: str = ""
    progressing_message: str = ""

    @classmethod
    def of(cls, deployment: Mapping[str, Any]) -> RolloutStatus:
        spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
        progressing: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
        )
        return cls(
            desired=int(spec.get("replicas", 1) or 0),
            generation=int((deployment.get("metadata") or {}).get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            total=int(status.get("replicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            progressing_reason=str(progressing.get("reason") or ""),
            progressing_message=str(progressing.get("message") or ""),
        )

    @property
    def done(self) -> bool:
        """The controller saw the latest spec and every replica is updated, ready and available."""
        return (
            self.observed_generation >= self.generation
            and self.updated == self.desired
            and self.ready == self.desired
            and self.available == self.desired
            and self.total == self.desired
        )

    @property
    def deadline_exceeded(self) -> bool:
        """The controller's own verdict, once it has seen the current spec (an older one may linger)."""
        return (
            self.progressing_reason == "ProgressDeadlineExceeded"
            and self.observed_generation >= self.generation
        )

    @property
    def progress(self) -> tuple[int, ...]:
        """Changes whenever the rollout moves; the progress deadline counts from the last change."""
        return (self.observed_generation, self.total, self.updated, self.ready, self.available)

    def describe(self) -> str:
        text = (
            f"{self.ready}/{self.desired} ready, {self.updated}/{self.desired} updated, "
            f"{self.available}/{self.desired} available, {self.total} total, "
            f"generation {self.generation} (observed {self.observed_generation})"
        )
        if self.progressing_reason:
            text += f"; Progressing: {self.progressing_reason}"
        return text


def describe_pods(pods: list[Mapping[str, Any]]) -> list[str]:
    """One line per pod: its phase, every condition that is not True, and waiting containers."""
    lines = []
    for pod in pods:
        status = pod.get("status") or {}
        problems = [
            f"{c.get('type')}={c.get('status')}"
            + (f" {c.get('reason')}" if c.get("reason") else "")
            + (f" ({c.get('message')})" if c.get("message") else "")
            for c in status.get("conditions") or []
            if c.get("status") != "True"
        ]
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting")
            if waiting:
                problems.append(
                    f"container {container.get('name')} waiting: {waiting.get('reason')}"
                    + (f" ({waiting.get('message')})" if waiting.get("message") else "")
                )
        name = (pod.get("metadata") or {}).get("name")
        lines.append(
            f"pod {name} {status.get('phase', 'Unknown')}: " + ("; ".join(problems) or "all conditions True")
        )
    return lines


class ReadObject:
    """What a Deployment and a Service as read share: the resourceVersion every write is
    compare-and-set against, and the annotations promote and retire leave."""

    manifest: Manifest

    @property
    def resource_version(self) -> str:
        return str(self.manifest["metadata"].get("resourceVersion", ""))

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.manifest["metadata"].get("annotations") or {})


@dataclass(frozen=True)
class Members:
    """A workers' Deployment as read, outside any color: its replicas and annotations (the consumer
    groups' members, kafka_mirror/consumers.py)."""

    replicas: int
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ColorState(ReadObject):
    """One color's Deployment as read."""

    color: str
    manifest: Manifest

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def image(self) -> str | None:
        containers = self.manifest["spec"]["template"]["spec"].get("containers") or []
        return str(containers[0].get("image")) if containers else None

    @property
    def replicas(self) -> int:
        return int(self.manifest["spec"].get("replicas", 1) or 0)

    @property
    def rollout(self) -> RolloutStatus:
        return RolloutStatus.of(self.manifest)

    def matches(self, spec: ServiceSpec, namespace: str, with_replicas: bool = True) -> bool:
        wanted = spec.deployment(self.color, namespace, spec.replicas_after(self.replicas))
        return fingerprint(self.manifest, with_replicas) == fingerprint(wanted, with_replicas)

    def describe(self) -> str:
        return f"{self.name} ({self.image}, {self.rollout.describe()})"


@dataclass(frozen=True)
class ServiceState(ReadObject):
    """A Service as read: its selector's color and the annotations promote wrote."""

    name: str
    manifest: Manifest

    @property
    def selector(self) -> dict[str, str]:
        return dict(self.manifest["spec"].get("selector") or {})

    @property
    def color(self) -> str | None:
        return self.selector.get("color")


@dataclass(frozen=True)
class BlueGreenState:
    """Everything about one service in one namespace, read in three requests."""

    service: str
    namespace: str
    colors: dict[str, ColorState] = field(default_factory=dict)
    active: ServiceState | None = None
    preview: ServiceState | None = None

    @property
    def active_color(self) -> str | None:
        return self.active.color if self.active is not None else None

    def target_color(self, spec: ServiceSpec) -> str:
        """The color that runs (or is to run) the configured version.

        The active color when it already runs it (the replica count aside: that is the
        autoscaler's); otherwise the other color. On a first deploy, a color already running
        the version (a deploy that ran before), else blue.
        """
        active = self.active_color
        if active in COLORS:
            current = self.colors.get(active)
            if current is not None and current.matches(spec, self.namespace, with_replicas=False):
                return active
            return other_color(active)
        for color in COLORS:
            existing = self.colors.get(color)
            if existing is not None and existing.matches(spec, self.namespace, with_replicas=False):
                return color
        return COLORS[0]

    def summary(self) -> dict[str, Any]:
        return {
            "active_color": self.active_color,
            "preview_color": self.preview.color if self.preview is not None else None,
            "colors": {
                color: {"image": state.image, "replicas": state.replicas, "ready": state.rollout.ready}
                for color, state in sorted(self.colors.items())
            },
        }

    def describe(self) -> str:
        colors = "; ".join(state.describe() for _, state in sorted(self.colors.items())) or "no deployments"
        active = (
            f"service {self.service} selects {self.active_color}"
            if self.active
            else f"no service {self.service}"
        )
        return f"{active}; {colors}"
