"""The platform settings in the config (errors name the service and the field) and the manifests and
audit built from them, as data: no cluster."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from lab.synthetic_graph import REAL_CONFIG, real_document
from pyairtable_migration.config import ConfigError, load_config, parse_config
from pyairtable_migration.kubernetes.bluegreen import ServiceSpec
from pyairtable_migration.kubernetes.platform_objects import (
    NamespaceObjects,
    Workload,
    audit_problems,
    default_deny_policy,
)

NAMESPACE = "prod"


def problems_of(edit: Callable[[dict[str, Any]], None]) -> list[str]:
    document = copy.deepcopy(real_document())
    edit(document)
    with pytest.raises(ConfigError) as refused:
        parse_config(yaml.safe_dump(document))
    return refused.value.problems


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["services"]["api-gateway"].update(min_replicas=12),
            "services.api-gateway.min_replicas: min_replicas 12 is above max_replicas 10",
        ),
        (
            lambda d: d["services"]["web-bff"].update(max_replicas=1),
            "services.web-bff.max_replicas: min_replicas 2 is above max_replicas 1",
        ),
        (
            lambda d: d["services"]["mcp-server"].update(replicas=11),
            "services.mcp-server.replicas: 11 is outside the autoscaler's range 2..10",
        ),
        (
            lambda d: d["services"]["auth-service"].update(min_available=1, max_unavailable=1),
            "services.auth-service: set min_available or max_unavailable, not both",
        ),
        (
            lambda d: d["services"]["user-service"].update(min_available=2),
            "services.user-service.min_available: 2 leaves no pod evictable at min_replicas 2",
        ),
        (
            lambda d: d["services"]["user-service"].update(target_cpu_utilization=0),
            "services.user-service.target_cpu_utilization",
        ),
        (
            lambda d: d["platform"].update(min_replicas=5, max_replicas=3),
            "platform: min_replicas 5 is above max_replicas 3",
        ),
        (
            lambda d: d["platform"].update(seccomp_profile="x"),
            "platform.seccomp_profile: unknown field",
        ),
    ],
)
def test_platform_config_errors_name_service_and_field(
    edit: Callable[[dict[str, Any]], None], expected: str
) -> None:
    problems = problems_of(edit)
    assert any(expected in problem for problem in problems), problems


def test_workload_applies_defaults_and_the_reverse_graph() -> None:
    config = load_config(REAL_CONFIG)
    gateway = config.workload("api-gateway")
    assert (gateway["min_replicas"], gateway["max_replicas"], gateway["min_available"]) == (2, 10, 1)
    assert gateway["public"] is True
    assert gateway["dependents"] == ["mobile-bff", "web-bff"]
    assert config.workload("permission-service")["public"] is False
    assert config.workload("permission-service")["dependents"] == []
    assert config.workload("auth-service")["security_context"]["drop_capabilities"] == ["ALL"]


def workload(**values: Any) -> Workload:
    return Workload.of("api", 8080, {"dependents": ["web"], "public": True, **values})


def test_manifests() -> None:
    api = workload(min_replicas=2, max_replicas=6, target_cpu_utilization=60)
    hpa = api.autoscaler("api-green", NAMESPACE)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "api-green",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert api.disruption_budget(NAMESPACE)["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": {"app": "api"}},
    }
    assert (
        workload(min_available=None, max_unavailable="50%").disruption_budget(NAMESPACE)["spec"][
            "maxUnavailable"
        ]
        == "50%"
    )
    sources = api.network_policy(NAMESPACE)["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app": "web"}}} in sources
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in sources
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in sources
    private = workload(public=False).network_policy(NAMESPACE)["spec"]["ingress"][0]["from"]
    assert all("ingress-nginx" not in str(source) for source in private)
    assert api.service_account(NAMESPACE)["automountServiceAccountToken"] is False
    assert default_deny_policy(NAMESPACE)["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    pod = ServiceSpec("api", "ghcr.io/x/api:1", 2, 8080, "/health", workload=api).deployment(
        "blue", NAMESPACE
    )
    template = pod["spec"]["template"]["spec"]
    assert template["serviceAccountName"] == "api"
    assert template["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert template["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert template["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_replicas_stay_the_autoscalers() -> None:
    api = workload(min_replicas=2, max_replicas=6)
    assert api.replicas_after(5, configured=2) == 5, "what the autoscaler set is kept"
    assert api.replicas_after(9, configured=2) == 6, "brought within the range"
    assert api.replicas_after(0, configured=3) == 3, "a retired color starts again with the config's"


def test_audit_names_each_missing_or_wrong_object() -> None:
    api = workload()
    deployment = ServiceSpec("api", "ghcr.io/x/api:1", 2, 8080, "/health", workload=api).deployment(
        "blue", NAMESPACE
    )
    objects = [*api.objects("api-blue", NAMESPACE), deployment]
    by_kind: dict[str, dict[str, Any]] = {}
    for manifest in objects:
        by_kind.setdefault(manifest["kind"], {})[manifest["metadata"]["name"]] = manifest
    namespace = {
        "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
    }
    found = NamespaceObjects(namespace, by_kind)
    assert audit_problems(NAMESPACE, found, {"api": api}, {"api": "blue"}) == []

    broken = copy.deepcopy(by_kind)
    del broken["PodDisruptionBudget"]["api"]
    broken["HorizontalPodAutoscaler"]["api-blue"]["spec"]["maxReplicas"] = 3
    broken["Deployment"]["api-blue"]["spec"]["template"]["spec"]["containers"][0].pop("securityContext")
    unlabelled = {"metadata": {"name": NAMESPACE}}
    problems = audit_problems(NAMESPACE, NamespaceObjects(unlabelled, broken), {"api": api}, {"api": "blue"})
    assert problems == [
        f"namespace {NAMESPACE}: label pod-security.kubernetes.io/enforce is None, wanted 'restricted' "
        "(Pod Security Standards)",
        f"api: no PodDisruptionBudget api in {NAMESPACE}",
        "api: HorizontalPodAutoscaler api-blue differs from the configured one: "
        "spec.maxReplicas: 3, wanted 10",
        "api: Deployment api-blue pod template differs: spec.template.spec.containers[0].securityContext: "
        "None, wanted " + repr(api.security_context.container()),
    ]
