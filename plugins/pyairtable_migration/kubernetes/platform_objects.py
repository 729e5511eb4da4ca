"""The platform objects around a service's Deployments, as data, and the audit that checks them.

Per service, in production's namespace:
  - ServiceAccount `<svc>` without an automounted token (the pods never call the Kubernetes API);
  - HorizontalPodAutoscaler `<svc>-<color>` (autoscaling/v2, CPU utilisation), one per color
    Deployment;
  - PodDisruptionBudget `<svc>` over the service's pods of both colors;
  - NetworkPolicy `<svc>` admitting, on the service's port, the pods of the services that depend on
    it, Prometheus's namespace, and for a public service the ingress controller's namespace;
and once per namespace the NetworkPolicy `default-deny-ingress` that makes the rest deny.

Why one autoscaler per color, not one retargeted at promote: each HPA owns exactly one
Deployment's replicas for its whole life, so promote, rollback and retire never write an HPA. The
idle color is retired by scaling it to 0, and a real HPA leaves a target at 0 replicas alone
("scaling is disabled"); rollback scales it back up and its HPA resumes. A single HPA moved at
promote would make promote and rollback two writes that must agree, and would leave a rolled-back
color unscaled until someone moved it back.

No client here (hooks/bluegreen.py owns it) and no Airflow: the deploy and the audit both build
their expectations from these functions, so what one writes is what the other checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]

DEFAULT_DENY_POLICY = "default-deny-ingress"
POD_SECURITY_LABEL = "pod-security.kubernetes.io/enforce"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
MANAGED_BY = ("app.kubernetes.io/managed-by", "pyairtable-migration")


@dataclass(frozen=True)
class SecurityContextPolicy:
    """The securityContext every service pod and container runs with (config `platform.security_context`)."""

    run_as_non_root: bool = True
    read_only_root_filesystem: bool = True
    allow_privilege_escalation: bool = False
    drop_capabilities: tuple[str, ...] = ("ALL",)
    seccomp_profile: str = "RuntimeDefault"

    @classmethod
    def of(cls, values: Mapping[str, Any] | None) -> SecurityContextPolicy:
        """From config's `platform.security_context` (or an operator argument); None: the defaults."""
        values = dict(values or {})
        if "drop_capabilities" in values:
            values["drop_capabilities"] = tuple(values["drop_capabilities"])
        return cls(**values)

    def pod(self) -> Manifest:
        return {"runAsNonRoot": self.run_as_non_root, "seccompProfile": {"type": self.seccomp_profile}}

    def container(self) -> Manifest:
        return {
            "runAsNonRoot": self.run_as_non_root,
            "readOnlyRootFilesystem": self.read_only_root_filesystem,
            "allowPrivilegeEscalation": self.allow_privilege_escalation,
            "capabilities": {"drop": list(self.drop_capabilities)},
            "seccompProfile": {"type": self.seccomp_profile},
        }


@dataclass(frozen=True)
class Workload:
    """What the configuration says a service needs around its Deployments (config.workload())."""

    service: str
    port: int = 8080
    min_replicas: int = 2
    max_replicas: int = 10
    target_cpu_utilization: int = 70
    min_available: int | str | None = 1
    max_unavailable: int | str | None = None
    public: bool = False
    dependents: tuple[str, ...] = ()
    ingress_namespace: str = "ingress-nginx"
    monitoring_namespace: str = "monitoring"
    security_context: SecurityContextPolicy = field(default_factory=SecurityContextPolicy)

    @classmethod
    def of(cls, service: str, port: int, values: Mapping[str, Any]) -> Workload:
        """From config.workload() (the operators' arguments)."""
        values = dict(values)
        values["dependents"] = tuple(values.get("dependents") or ())
        values["security_context"] = SecurityContextPolicy.of(values.get("security_context"))
        return cls(service=service, port=port, **values)

    def labels(self) -> dict[str, str]:
        return {"app": self.service, MANAGED_BY[0]: MANAGED_BY[1]}

    def replicas_after(self, current: int, configured: int) -> int:
        """The replicas a re-applied Deployment keeps. Once running, its autoscaler owns them: the
        deploy keeps what it finds, only brought within the autoscaler's range (what the HPA itself
        would do). A retired color (0) starts again with the configured count."""
        if current <= 0:
            return configured
        return min(max(current, self.min_replicas), self.max_replicas)

    def service_account(self, namespace: str) -> Manifest:
        return {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": self.service, "namespace": namespace, "labels": self.labels()},
            "automountServiceAccountToken": False,
        }

    def autoscaler(self, deployment: str, namespace: str) -> Manifest:
        return {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": deployment, "namespace": namespace, "labels": self.labels()},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                "minReplicas": self.min_replicas,
                "maxReplicas": self.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": self.target_cpu_utilization,
                            },
                        },
                    }
                ],
            },
        }

    def disruption_budget(self, namespace: str) -> Manifest:
        bound = (
            {"maxUnavailable": self.max_unavailable}
            if self.max_unavailable is not None
            else {"minAvailable": self.min_available}
        )
        return {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": self.service, "namespace": namespace, "labels": self.labels()},
            "spec": {**bound, "selector": {"matchLabels": {"app": self.service}}},
        }

    def network_policy(self, namespace: str) -> Manifest:
        sources: list[Manifest] = [
            {"podSelector": {"matchLabels": {"app": dependent}}} for dependent in self.dependents
        ]
        admitted = [self.monitoring_namespace, *([self.ingress_namespace] if self.public else [])]
        sources += [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}} for name in admitted]
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": self.service, "namespace": namespace, "labels": self.labels()},
            "spec": {
                "podSelector": {"matchLabels": {"app": self.service}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": self.port}]}],
            },
        }

    def objects(self, deployment: str, namespace: str) -> list[Manifest]:
        """Everything the deploy writes beside one color's Deployment, the ServiceAccount first (its
        pods cannot start without it), the namespace's default deny after the service's own policy."""
        return [
            self.service_account(namespace),
            self.network_policy(namespace),
            default_deny_policy(namespace),
            self.autoscaler(deployment, namespace),
            self.disruption_budget(namespace),
        ]


def default_deny_policy(namespace: str) -> Manifest:
    """Every pod of the namespace denies ingress unless a policy of its own admits it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": DEFAULT_DENY_POLICY,
            "namespace": namespace,
            "labels": {MANAGED_BY[0]: MANAGED_BY[1]},
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def managed_part(manifest: Mapping[str, Any]) -> Manifest:
    """The fields a platform object is written with and checked on: its labels and everything but
    metadata and status (spec, or a ServiceAccount's token setting)."""
    part = {k: v for k, v in manifest.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    part["labels"] = dict((manifest.get("metadata") or {}).get("labels") or {})
    return part


def difference(actual: Any, wanted: Any, path: str = "") -> str | None:
    """The first field where `actual` lacks what `wanted` asks for (`spec.maxReplicas: 5, wanted 10`),
    or None. Fields the server added (defaults, status) are not differences."""
    if isinstance(wanted, Mapping):
        if not isinstance(actual, Mapping):
            return f"{path or '(object)'}: {actual!r}, wanted {dict(wanted)!r}"
        for key, value in wanted.items():
            found = difference(actual.get(key), value, f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(wanted, list):
        if not isinstance(actual, list) or len(actual) != len(wanted):
            return f"{path}: {actual!r}, wanted {wanted!r}"
        for index, (got, value) in enumerate(zip(actual, wanted, strict=True)):
            found = difference(got, value, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if actual == wanted else f"{path}: {actual!r}, wanted {wanted!r}"


def object_difference(actual: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """How an object as read differs from the one wanted, in the fields the migration manages."""
    return difference(managed_part(actual), managed_part(wanted))


def pod_template_difference(deployment: Mapping[str, Any], workload: Workload) -> str | None:
    """A Deployment's pods must run as the service's account, with the configured securityContext."""
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    wanted_pod = {
        "serviceAccountName": workload.service,
        "automountServiceAccountToken": False,
        "securityContext": workload.security_context.pod(),
    }
    found = difference(pod, wanted_pod, "spec.template.spec")
    if found:
        return found
    for index, container in enumerate(pod.get("containers") or []):
        found = difference(
            container.get("securityContext"),
            workload.security_context.container(),
            f"spec.template.spec.containers[{index}].securityContext",
        )
        if found:
            return found
    return None


@dataclass(frozen=True)
class NamespaceObjects:
    """What the audit read from one namespace: the namespace, and every object of the audited kinds."""

    namespace: Manifest | None
    by_kind: Mapping[str, Mapping[str, Manifest]]  # kind -> name -> object

    def get(self, kind: str, name: str) -> Manifest | None:
        return (self.by_kind.get(kind) or {}).get(name)


def audit_problems(
    namespace: str,
    found: NamespaceObjects,
    workloads: Mapping[str, Workload],
    active_colors: Mapping[str, str | None],
    pod_security_level: str = "restricted",
) -> list[str]:
    """One problem per missing or wrong object, each naming the service (or the namespace) and the object."""
    problems: list[str] = []
    labels = ((found.namespace or {}).get("metadata") or {}).get("labels") or {}
    if found.namespace is None:
        problems.append(f"namespace {namespace}: not found")
    elif labels.get(POD_SECURITY_LABEL) != pod_security_level:
        problems.append(
            f"namespace {namespace}: label {POD_SECURITY_LABEL} is {labels.get(POD_SECURITY_LABEL)!r}, "
            f"wanted {pod_security_level!r} (Pod Security Standards)"
        )
    deny = default_deny_policy(namespace)
    problems += _object_problems(f"namespace {namespace}", found, deny)
    for name, workload in sorted(workloads.items()):
        color = active_colors.get(name)
        deployment_name = f"{name}-{color}" if color else None
        wanted = [
            workload.service_account(namespace),
            workload.network_policy(namespace),
            workload.disruption_budget(namespace),
        ]
        if deployment_name:
            wanted.append(workload.autoscaler(deployment_name, namespace))
        for manifest in wanted:
            problems += _object_problems(name, found, manifest)
        deployment = found.get("Deployment", deployment_name) if deployment_name else None
        if deployment is not None:
            wrong = pod_template_difference(deployment, workload)
            if wrong:
                problems.append(f"{name}: Deployment {deployment_name} pod template differs: {wrong}")
    return problems


def _object_problems(owner: str, found: NamespaceObjects, wanted: Manifest) -> list[str]:
    kind, name = wanted["kind"], wanted["metadata"]["name"]
    actual = found.get(kind, name)
    if actual is None:
        return [f"{owner}: no {kind} {name} in {wanted['metadata']['namespace']}"]
    wrong = object_difference(actual, wanted)
    return [f"{owner}: {kind} {name} differs from the configured one: {wrong}"] if wrong else []
