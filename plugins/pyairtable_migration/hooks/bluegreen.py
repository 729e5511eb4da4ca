"""The client side of blue-green deployment: reads and compare-and-set writes of one service's objects.

Writes are compare-and-set: a Deployment is replaced and a Service selector patched with the
resourceVersion that was read; a 409 surfaces as `StateChanged` and the caller reads again.
The hook owns the client (an ordinary Airflow `kubernetes` connection); operators only say what
they want. Secret values are never read: only the key names of a Secret, to say it is usable.
Importing this module loads the Kubernetes client libraries: operators import it when they run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pyairtable_migration.kubernetes.bluegreen import (
    COLORS,
    PORT_NAME,
    RETIRED_REPLICAS_ANNOTATION,
    BlueGreenError,
    BlueGreenState,
    ColorState,
    Manifest,
    Members,
    ServiceSpec,
    ServiceState,
    StateChanged,
    deployment_name,
    preview_name,
)
from pyairtable_migration.kubernetes.platform_objects import NamespaceObjects, object_difference


class BlueGreenHook(KubernetesHook):
    """Reads and writes one service's blue-green objects in one namespace."""

    def __init__(
        self, kubernetes_conn_id: str, namespace: str, request_timeout_seconds: float = 30, **kwargs: Any
    ) -> None:
        super().__init__(conn_id=kubernetes_conn_id, **kwargs)
        self.namespace = namespace
        self.request_timeout_seconds = request_timeout_seconds

    # --- plumbing --------------------------------------------------------------------------------

    def _json(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Manifest:
        """One API call; the body as a plain dict (camelCase, as the API sends it)."""
        response = call(
            *args, _preload_content=False, _request_timeout=self.request_timeout_seconds, **kwargs
        )
        body: Manifest = json.loads(response.data)
        return body

    def _read(self, call: Callable[..., Any], name: str) -> Manifest | None:
        try:
            return self._json(call, name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise BlueGreenError(_api_reason(exc, f"read {name} in namespace {self.namespace}")) from None

    def _write(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Manifest:
        try:
            return self._json(call, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                raise StateChanged(_api_reason(exc, what)) from None
            raise BlueGreenError(_api_reason(exc, what)) from None

    # --- reads -----------------------------------------------------------------------------------

    def _list(self, call: Callable[..., Any], selector: str, what: str) -> list[Manifest]:
        try:
            listed = self._json(call, self.namespace, label_selector=selector)
        except ApiException as exc:
            raise BlueGreenError(_api_reason(exc, f"list {what}")) from None
        return list(listed.get("items") or [])

    def read_state(self, service: str) -> BlueGreenState:
        items = self._list(
            self.apps_v1_client.list_namespaced_deployment, f"app={service}", f"deployments of {service}"
        )
        names = {deployment_name(service, color): color for color in COLORS}
        colors = {
            names[item["metadata"]["name"]]: ColorState(names[item["metadata"]["name"]], item)
            for item in items
            if item["metadata"]["name"] in names
        }
        active = self._read(self.core_v1_client.read_namespaced_service, service)
        preview = self._read(self.core_v1_client.read_namespaced_service, preview_name(service))
        return BlueGreenState(
            service=service,
            namespace=self.namespace,
            colors=colors,
            active=ServiceState(service, active) if active is not None else None,
            preview=ServiceState(preview_name(service), preview) if preview is not None else None,
        )

    def read_all_states(self, services: list[str]) -> dict[str, BlueGreenState]:
        """The state of many services from two list requests (the whole namespace)."""
        try:
            deployments = self._json(self.apps_v1_client.list_namespaced_deployment, self.namespace)
            listed = self._json(self.core_v1_client.list_namespaced_service, self.namespace)
        except ApiException as exc:
            raise BlueGreenError(
                _api_reason(exc, f"list deployments and services in {self.namespace}")
            ) from None
        by_name = {item["metadata"]["name"]: item for item in deployments.get("items") or []}
        service_by_name = {item["metadata"]["name"]: item for item in listed.get("items") or []}
        states = {}
        for service in services:
            active, preview = service_by_name.get(service), service_by_name.get(preview_name(service))
            states[service] = BlueGreenState(
                service=service,
                namespace=self.namespace,
                colors={
                    color: ColorState(color, by_name[deployment_name(service, color)])
                    for color in COLORS
                    if deployment_name(service, color) in by_name
                },
                active=ServiceState(service, active) if active is not None else None,
                preview=ServiceState(preview_name(service), preview) if preview is not None else None,
            )
        return states

    def _platform_calls(self, kind: str) -> tuple[Callable[..., Any], ...]:
        """(read, create, replace, list) of one platform kind, from the client's API of its group."""
        core = self.core_v1_client
        autoscaling = client.AutoscalingV2Api(self.api_client)
        policy = client.PolicyV1Api(self.api_client)
        networking = client.NetworkingV1Api(self.api_client)
        return {
            "ServiceAccount": (
                core.read_namespaced_service_account,
                core.create_namespaced_service_account,
                core.replace_namespaced_service_account,
                core.list_namespaced_service_account,
            ),
            "HorizontalPodAutoscaler": (
                autoscaling.read_namespaced_horizontal_pod_autoscaler,
                autoscaling.create_namespaced_horizontal_pod_autoscaler,
                autoscaling.replace_namespaced_horizontal_pod_autoscaler,
                autoscaling.list_namespaced_horizontal_pod_autoscaler,
            ),
            "PodDisruptionBudget": (
                policy.read_namespaced_pod_disruption_budget,
                policy.create_namespaced_pod_disruption_budget,
                policy.replace_namespaced_pod_disruption_budget,
                policy.list_namespaced_pod_disruption_budget,
            ),
            "NetworkPolicy": (
                networking.read_namespaced_network_policy,
                networking.create_namespaced_network_policy,
                networking.replace_namespaced_network_policy,
                networking.list_namespaced_network_policy,
            ),
        }[kind]

    def apply_object(self, desired: Manifest) -> tuple[str, Manifest]:
        """Create a platform object, or replace it at the version read when a managed field differs:
        ("created" | "updated" | "unchanged", object). Annotations others wrote are kept."""
        kind, name = desired["kind"], desired["metadata"]["name"]
        read, create, replace, _ = self._platform_calls(kind)
        current = self._read(read, name)
        if current is None:
            return "created", self._write(f"create {kind} {name}", create, self.namespace, desired)
        if object_difference(current, desired) is None:
            return "unchanged", current
        replacement = {**desired, "metadata": {**desired["metadata"]}}
        replacement["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
        annotations = (current.get("metadata") or {}).get("annotations")
        if annotations:
            replacement["metadata"]["annotations"] = annotations
        return "updated", self._write(f"replace {kind} {name}", replace, name, self.namespace, replacement)

    def read_platform(self) -> NamespaceObjects:
        """The namespace and every object of the kinds the security audit checks, one list per kind."""
        kinds = ("ServiceAccount", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy")
        lists = [(kind, self._platform_calls(kind)[3]) for kind in kinds]
        lists.append(("Deployment", self.apps_v1_client.list_namespaced_deployment))
        by_kind: dict[str, dict[str, Manifest]] = {}
        try:
            namespace = self._json(self.core_v1_client.read_namespace, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise BlueGreenError(_api_reason(exc, f"read namespace {self.namespace}")) from None
            return NamespaceObjects(None, {})
        for kind, call in lists:
            try:
                listed = self._json(call, self.namespace)
            except ApiException as exc:
                raise BlueGreenError(_api_reason(exc, f"list {kind} in {self.namespace}")) from None
            by_kind[kind] = {item["metadata"]["name"]: item for item in listed.get("items") or []}
        return NamespaceObjects(namespace, by_kind)

    def read_deployment(self, name: str) -> Manifest | None:
        return self._read(self.apps_v1_client.read_namespaced_deployment, name)

    def members(self, deployment: str) -> Members | None:
        """A consumer Deployment's replicas and annotations (kafka_mirror/consumers.py)."""
        manifest = self.read_deployment(deployment)
        if manifest is None:
            return None
        state = ColorState("", manifest)
        return Members(state.replicas, state.annotations)

    def set_members(self, deployment: str, replicas: int, annotations: Mapping[str, str | None]) -> None:
        manifest = self.read_deployment(deployment)
        if manifest is None:
            raise BlueGreenError(f"deployment {deployment} not found in namespace {self.namespace}")
        self.scale(ColorState("", manifest), replicas, annotations)

    def namespace_exists(self) -> bool:
        try:
            self._json(self.core_v1_client.read_namespace, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise BlueGreenError(_api_reason(exc, f"read namespace {self.namespace}")) from None
        return True

    def secret_keys(self, name: str) -> list[str] | None:
        """The key names of a Secret (never its values), or None if it does not exist."""
        secret = self._read(self.core_v1_client.read_namespaced_secret, name)
        if secret is None:
            return None
        return sorted({*(secret.get("data") or {}), *(secret.get("stringData") or {})})

    def pods(self, service: str, color: str) -> list[Manifest]:
        return self._list(
            self.core_v1_client.list_namespaced_pod,
            f"app={service},color={color}",
            f"pods of {service} {color}",
        )

    def proxy_get(self, service_name: str, path: str, timeout_seconds: float) -> tuple[int, float, str]:
        """GET through the Service proxy: (HTTP status, seconds, a short reason for a failure)."""
        core = self.core_v1_client
        relative = path.lstrip("/")
        started = time.perf_counter()
        try:
            if relative:
                response = core.connect_get_namespaced_service_proxy_with_path(
                    f"{service_name}:{PORT_NAME}",
                    self.namespace,
                    relative,
                    _preload_content=False,
                    _request_timeout=timeout_seconds,
                )
            else:
                response = core.connect_get_namespaced_service_proxy(
                    f"{service_name}:{PORT_NAME}",
                    self.namespace,
                    _preload_content=False,
                    _request_timeout=timeout_seconds,
                )
            response.data  # noqa: B018 - read the whole body: the latency is the full answer's
            return int(response.status), time.perf_counter() - started, ""
        except ApiException as exc:
            return int(exc.status or 0), time.perf_counter() - started, _api_reason(exc, "GET")
        except Exception as exc:  # timeouts and connection errors count as failed requests
            return 0, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"

    # --- writes (compare-and-set) ---------------------------------------------------------------

    def apply_deployment(
        self, spec: ServiceSpec, color: str, current: ColorState | None
    ) -> tuple[str, Manifest]:
        """Create or replace `<svc>-<color>` to match the spec: ("created" | "updated" | "unchanged", object).

        A replace carries the resourceVersion read in `current`; a concurrent change raises StateChanged.
        """
        apps = self.apps_v1_client
        if current is None:
            desired = spec.deployment(color, self.namespace)
            created = self._write(
                f"create deployment {desired['metadata']['name']}",
                apps.create_namespaced_deployment,
                self.namespace,
                desired,
            )
            return "created", created
        if current.matches(spec, self.namespace):
            return "unchanged", current.manifest
        # The replicas stay the autoscaler's (within its range); a retired color starts again.
        desired = spec.deployment(color, self.namespace, spec.replicas_after(current.replicas))
        desired["metadata"]["resourceVersion"] = current.resource_version
        # Keep annotations others wrote, except the retire note: this color is in use again.
        annotations = {k: v for k, v in current.annotations.items() if k != RETIRED_REPLICAS_ANNOTATION}
        if annotations:
            desired["metadata"]["annotations"] = annotations
        replaced = self._write(
            f"replace deployment {current.name}",
            apps.replace_namespaced_deployment,
            current.name,
            self.namespace,
            desired,
        )
        return "updated", replaced

    def point_service(
        self,
        spec: ServiceSpec,
        name: str,
        role: str,
        color: str,
        current: ServiceState | None,
        annotations: Mapping[str, str] | None = None,
    ) -> Manifest:
        """Make Service `name` select `color`: create it, or patch its selector at the version read."""
        core = self.core_v1_client
        if current is None:
            return self._write(
                f"create service {name}",
                core.create_namespaced_service,
                self.namespace,
                spec.service(name, color, self.namespace, role, annotations or {}),
            )
        patch: Manifest = {
            "metadata": {"resourceVersion": current.resource_version},
            "spec": {"selector": spec.selector(color)},
        }
        if annotations:
            patch["metadata"]["annotations"] = dict(annotations)
        return self._write(
            f"patch the selector of service {name}",
            core.patch_namespaced_service,
            name,
            self.namespace,
            patch,
            _content_type="application/merge-patch+json",
        )

    def scale(
        self, current: ColorState, replicas: int, annotations: Mapping[str, str | None] | None = None
    ) -> Manifest:
        """Set a Deployment's replicas (and annotations; None removes one) at the version read."""
        patch: Manifest = {
            "metadata": {"resourceVersion": current.resource_version},
            "spec": {"replicas": replicas},
        }
        if annotations:
            patch["metadata"]["annotations"] = dict(annotations)
        return self._write(
            f"scale deployment {current.name} to {replicas}",
            self.apps_v1_client.patch_namespaced_deployment,
            current.name,
            self.namespace,
            patch,
            _content_type="application/merge-patch+json",
        )


def _api_reason(exc: ApiException, what: str) -> str:
    """`<what>: 404 NotFound: services "x" not found` from a Status body, without echoing request data."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason = body.get("reason") or exc.reason or ""
    message = body.get("message") or ""
    return f"{what}: {exc.status} {reason}{': ' + message if message else ''}".strip()
