"""The deploy's platform objects and the security audit against the Kubernetes API emulator, through
the real kubernetes client: every object created, a re-run changes nothing, the replicas an
autoscaler set are kept, and the audit names the service and the object that is missing."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from lab.kube import KubeEmulator
from pyairtable_migration.hooks.bluegreen import BlueGreenHook
from pyairtable_migration.kubernetes.platform_objects import POD_SECURITY_LABEL, Workload, audit_problems
from tests.services.support import CONN_ID, BlueGreenService

pytestmark = pytest.mark.timeout(90)

WORKLOAD = {"min_replicas": 2, "max_replicas": 6, "dependents": ["web-bff"], "public": True}


def platform_objects(api: client.ApiClient, namespace: str) -> dict[str, str]:
    """kind/name -> resourceVersion of every platform object and Deployment (spec changes move it)."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    listed: list[tuple[str, Any]] = [
        ("ServiceAccount", core.list_namespaced_service_account(namespace)),
        (
            "HorizontalPodAutoscaler",
            client.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(namespace),
        ),
        ("PodDisruptionBudget", client.PolicyV1Api(api).list_namespaced_pod_disruption_budget(namespace)),
        ("NetworkPolicy", client.NetworkingV1Api(api).list_namespaced_network_policy(namespace)),
    ]
    found = {
        f"{kind}/{item.metadata.name}": item.metadata.resource_version
        for kind, items in listed
        for item in items.items
    }
    found.update(
        {
            f"Deployment/{d.metadata.name}": d.metadata.generation
            for d in apps.list_namespaced_deployment(namespace).items
        }
    )
    return found


@pytest.fixture
def gateway(kube: KubeEmulator, namespace: str) -> BlueGreenService:
    return BlueGreenService(namespace, name="api-gateway", extra=dict(WORKLOAD))


def test_deploy_creates_every_object_and_a_rerun_changes_nothing(
    gateway: BlueGreenService, kube_api: client.ApiClient, namespace: str
) -> None:
    first = gateway.deploy("1.0.0")
    assert set(first["platform"]) == {
        "ServiceAccount/api-gateway",
        "NetworkPolicy/api-gateway",
        "NetworkPolicy/default-deny-ingress",
        "HorizontalPodAutoscaler/api-gateway-blue",
        "PodDisruptionBudget/api-gateway",
    }
    assert set(first["platform"].values()) == {"created"}
    before = platform_objects(kube_api, namespace)
    assert set(before) == {*first["platform"], "Deployment/api-gateway-blue"}
    hpa = client.AutoscalingV2Api(kube_api).read_namespaced_horizontal_pod_autoscaler(
        "api-gateway-blue", namespace
    )
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 6)
    pod = (
        client.AppsV1Api(kube_api)
        .read_namespaced_deployment("api-gateway-blue", namespace)
        .spec.template.spec
    )
    assert pod.service_account_name == "api-gateway"
    assert pod.security_context.run_as_non_root is True
    assert pod.containers[0].security_context.capabilities.drop == ["ALL"]

    again = gateway.deploy("1.0.0")
    assert set(again["platform"].values()) == {"unchanged"}
    assert again["action"] == "unchanged"
    assert platform_objects(kube_api, namespace) == before


def test_deploy_keeps_the_replicas_an_autoscaler_set(
    gateway: BlueGreenService, kube_api: client.ApiClient, namespace: str
) -> None:
    gateway.deploy("1.0.0")
    apps = client.AppsV1Api(kube_api)
    # What the HPA does: the scale subresource.
    apps.patch_namespaced_deployment_scale("api-gateway-blue", namespace, {"spec": {"replicas": 5}})
    generation = apps.read_namespaced_deployment("api-gateway-blue", namespace).metadata.generation

    again = gateway.deploy("1.0.0")
    assert again["action"] == "unchanged"
    deployment = apps.read_namespaced_deployment("api-gateway-blue", namespace)
    assert (deployment.spec.replicas, deployment.metadata.generation) == (5, generation)


def test_the_audit_passes_on_a_released_service_and_names_a_missing_object(
    gateway: BlueGreenService, kube_api: client.ApiClient, namespace: str
) -> None:
    gateway.release("1.0.0", retire=False)
    core = client.CoreV1Api(kube_api)
    core.patch_namespace(namespace, {"metadata": {"labels": {POD_SECURITY_LABEL: "restricted"}}})
    hook = BlueGreenHook(CONN_ID, namespace)
    workloads = {"api-gateway": Workload.of("api-gateway", 8080, WORKLOAD)}

    def audit() -> list[str]:
        return audit_problems(namespace, hook.read_platform(), workloads, {"api-gateway": "blue"})

    assert audit() == []
    client.PolicyV1Api(kube_api).delete_namespaced_pod_disruption_budget("api-gateway", namespace)
    assert audit() == [f"api-gateway: no PodDisruptionBudget api-gateway in {namespace}"]
    core.patch_namespace(namespace, {"metadata": {"labels": {POD_SECURITY_LABEL: None}}})
    assert audit()[0].startswith(f"namespace {namespace}: label {POD_SECURITY_LABEL} is None")
