"""The resource kinds the emulator serves: their names, defaults, validation and discovery documents."""

from __future__ import annotations

import base64
import binascii
import copy
import re
from dataclasses import dataclass
from typing import Any

from lab.kube.errors import invalid
from lab.kube.selectors import label_selector_matches

_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NAMESPACE_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SECRET_KEY_PATTERN = re.compile(r"^[-._a-zA-Z0-9]+$")


@dataclass(frozen=True)
class ResourceKind:
    """One served resource, named as discovery and error messages name it."""

    plural: str
    singular: str
    kind: str
    group: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    version: str = "v1"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def has_generation(self) -> bool:
        """Only workloads count spec changes; the real API leaves generation off Services and Pods."""
        return self.plural == "deployments"

    @property
    def has_spec(self) -> bool:
        """Secrets carry data, ServiceAccounts their token settings: neither a spec nor a status."""
        return self.plural not in ("secrets", "serviceaccounts")


_WRITE_VERBS = ("create", "delete", "get", "list", "patch", "update")

NAMESPACES = ResourceKind(
    "namespaces", "namespace", "Namespace", "", False, _WRITE_VERBS, ("ns",), ("status",)
)
SERVICES = ResourceKind(
    "services", "service", "Service", "", True, _WRITE_VERBS, ("svc",), ("status", "proxy")
)
PODS = ResourceKind("pods", "pod", "Pod", "", True, ("delete", "get", "list"), ("po",), ("status", "proxy"))
SECRETS = ResourceKind("secrets", "secret", "Secret", "", True, _WRITE_VERBS)
DEPLOYMENTS = ResourceKind(
    "deployments", "deployment", "Deployment", "apps", True, _WRITE_VERBS, ("deploy",), ("status", "scale")
)

# The platform objects the migration writes beside each Deployment. Stored and served only: the
# emulator neither autoscales, nor guards evictions, nor filters traffic.
SERVICE_ACCOUNTS = ResourceKind(
    "serviceaccounts", "serviceaccount", "ServiceAccount", "", True, _WRITE_VERBS, ("sa",)
)
HORIZONTAL_POD_AUTOSCALERS = ResourceKind(
    "horizontalpodautoscalers",
    "horizontalpodautoscaler",
    "HorizontalPodAutoscaler",
    "autoscaling",
    True,
    _WRITE_VERBS,
    ("hpa",),
    ("status",),
    version="v2",
)
POD_DISRUPTION_BUDGETS = ResourceKind(
    "poddisruptionbudgets",
    "poddisruptionbudget",
    "PodDisruptionBudget",
    "policy",
    True,
    _WRITE_VERBS,
    ("pdb",),
    ("status",),
)
NETWORK_POLICIES = ResourceKind(
    "networkpolicies", "networkpolicy", "NetworkPolicy", "networking.k8s.io", True, _WRITE_VERBS, ("netpol",)
)

CORE_KINDS = (NAMESPACES, SERVICES, PODS, SECRETS, SERVICE_ACCOUNTS)
# Group versions served under /apis, each with its kinds.
GROUP_KINDS: dict[tuple[str, str], tuple[ResourceKind, ...]] = {
    ("apps", "v1"): (DEPLOYMENTS,),
    ("autoscaling", "v2"): (HORIZONTAL_POD_AUTOSCALERS,),
    ("policy", "v1"): (POD_DISRUPTION_BUDGETS,),
    ("networking.k8s.io", "v1"): (NETWORK_POLICIES,),
}
KINDS_BY_GROUP_AND_PLURAL = {
    (kind.group, kind.plural): kind for kinds in (CORE_KINDS, *GROUP_KINDS.values()) for kind in kinds
}


def _resource_list(group_version: str, kinds: tuple[ResourceKind, ...]) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for kind in kinds:
        resources.append(
            {
                "name": kind.plural,
                "singularName": kind.singular,
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": list(kind.verbs),
                "shortNames": list(kind.short_names),
            }
        )
        for subresource in kind.subresources:
            verbs = ["create", "get"] if subresource == "proxy" else ["get", "patch", "update"]
            sub_kind = {"scale": "Scale"}.get(subresource, kind.kind)
            resources.append(
                {
                    "name": f"{kind.plural}/{subresource}",
                    "singularName": "",
                    "namespaced": kind.namespaced,
                    "kind": sub_kind,
                    "verbs": verbs,
                    **({"group": "autoscaling", "version": "v1"} if subresource == "scale" else {}),
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def discovery_documents(server_address: str) -> dict[str, dict[str, Any]]:
    """Path -> body for every discovery endpoint the Python client and kubectl read."""
    groups: dict[str, dict[str, Any]] = {
        group: {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
            "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version},
        }
        for group, version in GROUP_KINDS
    }
    documents: dict[str, dict[str, Any]] = {
        "/version": {
            "major": "1",
            "minor": "30",
            "gitVersion": "v1.30.0-lab",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2024-01-01T00:00:00Z",
            "goVersion": "go1.22.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        },
        "/api": {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        },
        "/api/v1": _resource_list("v1", CORE_KINDS),
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {k: v for k, v in document.items() if k not in ("kind", "apiVersion")}
                for document in groups.values()
            ],
        },
    }
    for (group, version), kinds in GROUP_KINDS.items():
        documents[f"/apis/{group}"] = groups[group]
        documents[f"/apis/{group}/{version}"] = _resource_list(f"{group}/{version}", kinds)
    return documents


def _check_name(kind: ResourceKind, name: Any, problems: list[str]) -> None:
    pattern = _NAMESPACE_PATTERN if kind is NAMESPACES else _NAME_PATTERN
    if not isinstance(name, str) or not pattern.match(name):
        problems.append(f"metadata.name: Invalid value: {name!r}: must be a lowercase RFC 1123 name")


def _default_deployment(spec: dict[str, Any]) -> None:
    spec.setdefault("replicas", 1)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault("revisionHistoryLimit", 10)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        strategy.setdefault("rollingUpdate", {}).setdefault("maxSurge", "25%")
        strategy["rollingUpdate"].setdefault("maxUnavailable", "25%")
    pod_spec = spec.setdefault("template", {}).setdefault("spec", {})
    pod_spec.setdefault("restartPolicy", "Always")
    pod_spec.setdefault("dnsPolicy", "ClusterFirst")
    for container in pod_spec.get("containers") or []:
        container.setdefault("imagePullPolicy", "IfNotPresent")


def _deployment_problems(spec: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        problems.append("spec.selector: Required value")
    elif not label_selector_matches(selector, labels):
        problems.append(
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`"
        )
    containers = (template.get("spec") or {}).get("containers")
    if not containers:
        problems.append("spec.template.spec.containers: Required value")
    for index, container in enumerate(containers or []):
        if not container.get("name"):
            problems.append(f"spec.template.spec.containers[{index}].name: Required value")
        if not container.get("image"):
            problems.append(f"spec.template.spec.containers[{index}].image: Required value")
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        problems.append(f"spec.replicas: Invalid value: {replicas!r}: must be greater than or equal to 0")
    return problems


def _default_service(spec: dict[str, Any]) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        if "port" in port:
            port.setdefault("targetPort", port["port"])


def _service_problems(spec: dict[str, Any]) -> list[str]:
    problems = []
    for index, port in enumerate(spec.get("ports") or []):
        if not isinstance(port.get("port"), int) or not 1 <= port["port"] <= 65535:
            problems.append(f"spec.ports[{index}].port: Invalid value: {port.get('port')!r}")
    selector = spec.get("selector")
    if selector is not None and not isinstance(selector, dict):
        problems.append("spec.selector: Invalid value: must be a map of labels")
    return problems


def _normalise_secret(secret: dict[str, Any]) -> None:
    """The API server's write path for a Secret: `stringData` is folded into base64 `data` and dropped."""
    secret.setdefault("type", "Opaque")
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict):
        data = secret.get("data")
        if not isinstance(data, dict):
            data = secret["data"] = {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _secret_problems(secret: dict[str, Any]) -> list[str]:
    data = secret.get("data")
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["data: Invalid value: must be a map of keys to base64 values"]
    problems = []
    for key, value in data.items():
        if not isinstance(key, str) or not _SECRET_KEY_PATTERN.match(key):
            problems.append(
                f"data[{key}]: Invalid value: a key must consist of alphanumerics, '-', '_' or '.'"
            )
            continue
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"data[{key}]: Invalid value: illegal base64 data")
    return problems


def _autoscaler_problems(spec: dict[str, Any]) -> list[str]:
    problems = []
    target = spec.get("scaleTargetRef")
    if not isinstance(target, dict) or not target.get("kind") or not target.get("name"):
        problems.append("spec.scaleTargetRef: Required value: kind and name")
    minimum, maximum = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if not isinstance(maximum, int) or maximum < 1:
        problems.append(f"spec.maxReplicas: Invalid value: {maximum!r}: must be greater than or equal to 1")
    elif not isinstance(minimum, int) or not 1 <= minimum <= maximum:
        problems.append(f"spec.minReplicas: Invalid value: {minimum!r}: must be within 1..maxReplicas")
    return problems


def _disruption_budget_problems(spec: dict[str, Any]) -> list[str]:
    if "minAvailable" in spec and "maxUnavailable" in spec:
        return ["spec: Invalid value: minAvailable and maxUnavailable cannot be both set"]
    return []


def _network_policy_problems(spec: dict[str, Any]) -> list[str]:
    return [] if isinstance(spec.get("podSelector"), dict) else ["spec.podSelector: Required value"]


# What the real API server returns before any controller wrote a status: the fields Go serialises
# without omitempty (the Python client refuses an autoscaler status without desiredReplicas).
_INITIAL_STATUS: dict[str, dict[str, Any]] = {
    "horizontalpodautoscalers": {"desiredReplicas": 0},
    "poddisruptionbudgets": {
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": 0,
        "expectedPods": 0,
    },
}


def initial_status(kind: ResourceKind) -> dict[str, Any] | None:
    """A new autoscaler's or disruption budget's status; None: the kind keeps what it was created with."""
    status = _INITIAL_STATUS.get(kind.plural)
    return copy.deepcopy(status) if status is not None else None


_SPEC_PROBLEMS = {
    "horizontalpodautoscalers": _autoscaler_problems,
    "poddisruptionbudgets": _disruption_budget_problems,
    "networkpolicies": _network_policy_problems,
}


def apply_defaults(kind: ResourceKind, obj: dict[str, Any]) -> None:
    """Fill the fields the real API defaults, so clients read back what they would in production."""
    obj["apiVersion"] = kind.api_version
    obj["kind"] = kind.kind
    if kind is SECRETS:
        _normalise_secret(obj)
        return
    if not kind.has_spec:
        return
    obj.setdefault("spec", {})
    if kind is DEPLOYMENTS:
        _default_deployment(obj["spec"])
    elif kind is SERVICES:
        _default_service(obj["spec"])
    elif kind is NAMESPACES:
        obj["spec"].setdefault("finalizers", ["kubernetes"])
    elif kind is NETWORK_POLICIES:
        spec = obj["spec"]
        spec.setdefault("policyTypes", ["Ingress", *(["Egress"] if "egress" in spec else [])])
        for rule in spec.get("ingress") or []:
            for port in rule.get("ports") or []:
                port.setdefault("protocol", "TCP")


def validate(kind: ResourceKind, obj: dict[str, Any]) -> None:
    """Raise 422 Invalid listing every problem with the object."""
    metadata = obj.get("metadata") or {}
    problems: list[str] = []
    _check_name(kind, metadata.get("name"), problems)
    for field in ("labels", "annotations"):
        values = metadata.get(field)
        if values is not None and (
            not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
        ):
            problems.append(f"metadata.{field}: Invalid value: values must be strings")
    if kind is DEPLOYMENTS:
        problems.extend(_deployment_problems(obj.get("spec") or {}))
    elif kind is SERVICES:
        problems.extend(_service_problems(obj.get("spec") or {}))
    elif kind is SECRETS:
        problems.extend(_secret_problems(obj))
    elif kind.plural in _SPEC_PROBLEMS:
        problems.extend(_SPEC_PROBLEMS[kind.plural](obj.get("spec") or {}))
    if problems:
        raise invalid(kind.kind, kind.group, str(metadata.get("name")), problems)


def keep_allocated_fields(kind: ResourceKind, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Carry over what the server allocated and a client may omit on update (a Service's cluster IP)."""
    if kind is SERVICES:
        for field in ("clusterIP", "clusterIPs"):
            if field in old.get("spec", {}):
                new.setdefault("spec", {})[field] = copy.deepcopy(old["spec"][field])
