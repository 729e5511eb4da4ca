"""The object store: what etcd plus the API server's write path do for the served kinds.

Every write bumps one global resourceVersion; updates carrying a stale one are refused with 409,
so the operators' compare-and-set logic is exercised as it would be against a real cluster.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lab.kube import errors
from lab.kube.patches import apply_patch
from lab.kube.resources import (
    KINDS_BY_GROUP_AND_PLURAL,
    NAMESPACES,
    SERVICES,
    ResourceKind,
    apply_defaults,
    initial_status,
    keep_allocated_fields,
    validate,
)
from lab.kube.selectors import parse_field_selector, parse_label_selector

Object = dict[str, Any]


def utc_timestamp(moment: float | None = None) -> str:
    """RFC 3339 at second precision, as metav1.Time serialises."""
    when = datetime.now(UTC) if moment is None else datetime.fromtimestamp(moment, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectStore:
    """Thread-safe objects by kind, namespace and name; every read hands out a private copy."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], Object]] = {
            kind.plural: {} for kind in KINDS_BY_GROUP_AND_PLURAL.values()
        }
        self._resource_version = 0
        self._allocated_cluster_ips = 0

    def _next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _stored(self, kind: ResourceKind, namespace: str, name: str) -> Object:
        found = self._objects[kind.plural].get((namespace, name))
        if found is None:
            raise errors.not_found(kind.plural, kind.group, name)
        return found

    def _require_namespace(self, kind: ResourceKind, namespace: str) -> None:
        if kind.namespaced and ("", namespace) not in self._objects[NAMESPACES.plural]:
            raise errors.not_found(NAMESPACES.plural, "", namespace)

    def _allocate_cluster_ip(self) -> str:
        self._allocated_cluster_ips += 1
        return f"10.96.{self._allocated_cluster_ips // 250}.{10 + self._allocated_cluster_ips % 250}"

    def create(self, kind: ResourceKind, namespace: str, body: Object) -> Object:
        """Store a new object; 409 AlreadyExists if the name is taken, 404 if the namespace is missing."""
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        if kind.namespaced:
            if metadata.get("namespace") not in (None, namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            metadata["namespace"] = namespace
        apply_defaults(kind, obj)
        validate(kind, obj)
        with self._lock:
            self._require_namespace(kind, namespace)
            key = (namespace if kind.namespaced else "", metadata["name"])
            if key in self._objects[kind.plural]:
                raise errors.already_exists(kind.plural, kind.group, metadata["name"])
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = utc_timestamp()
            metadata["resourceVersion"] = self._next_resource_version()
            for transient in ("deletionTimestamp", "generation", "managedFields", "selfLink"):
                metadata.pop(transient, None)
            if not kind.has_spec:
                obj.pop("status", None)
            elif kind.has_generation:
                metadata["generation"] = 1
                obj["status"] = {}
            elif kind is SERVICES:
                obj["spec"].setdefault("clusterIP", self._allocate_cluster_ip())
                obj["spec"].setdefault("clusterIPs", [obj["spec"]["clusterIP"]])
                obj["status"] = {"loadBalancer": {}}
            elif kind is NAMESPACES:
                obj["status"] = {"phase": "Active"}
            elif (status := initial_status(kind)) is not None:
                obj["status"] = status
            self._objects[kind.plural][key] = obj
            return copy.deepcopy(obj)

    def get(self, kind: ResourceKind, namespace: str, name: str) -> Object:
        with self._lock:
            return copy.deepcopy(self._stored(kind, namespace, name))

    def items(
        self, kind: ResourceKind, namespace: str | None = None, where: Callable[[Object], bool] | None = None
    ) -> list[Object]:
        """Objects of a kind, optionally in one namespace and passing `where`, sorted by namespace and name.

        `where` sees the stored object, so only matches pay for a copy; it must not modify it.
        """
        with self._lock:
            found = [
                obj
                for (ns, _), obj in self._objects[kind.plural].items()
                if namespace in (None, ns) and (where is None or where(obj))
            ]
            return copy.deepcopy(
                sorted(found, key=lambda obj: (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
            )

    def list(
        self, kind: ResourceKind, namespace: str | None, label_selector: str = "", field_selector: str = ""
    ) -> Object:
        """A `<Kind>List` filtered by label and field selectors."""
        wants_labels = parse_label_selector(label_selector)
        wants_fields = parse_field_selector(field_selector)
        with self._lock:
            selected = self.items(
                kind,
                namespace,
                where=lambda obj: wants_labels(obj["metadata"].get("labels") or {}) and wants_fields(obj),
            )
            resource_version = str(self._resource_version)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": resource_version},
            "items": selected,
        }

    def _update(
        self,
        kind: ResourceKind,
        namespace: str,
        name: str,
        build: Callable[[Object], Object],
        subresource: str | None,
    ) -> Object:
        """The write path shared by PUT and PATCH: optimistic concurrency, defaults, generation."""
        with self._lock:
            current = self._stored(kind, namespace, name)
            proposed = build(copy.deepcopy(current))
            metadata = proposed.setdefault("metadata", {})
            expected_version = metadata.get("resourceVersion")
            if expected_version and expected_version != current["metadata"]["resourceVersion"]:
                raise errors.conflict(kind.plural, kind.group, name)
            if metadata.get("name", name) != name:
                raise errors.bad_request(
                    f"the name of the object ({metadata.get('name')}) "
                    f"does not match the name on the URL ({name})"
                )
            if subresource == "status":
                updated = copy.deepcopy(current)
                updated["status"] = proposed.get("status") or {}
            else:
                updated = proposed
                if kind.has_spec:
                    updated["status"] = copy.deepcopy(current.get("status", {}))
                else:
                    updated.pop("status", None)
                for field in ("uid", "creationTimestamp", "generation", "namespace"):
                    if field in current["metadata"]:
                        metadata[field] = current["metadata"][field]
                    else:
                        metadata.pop(field, None)
                metadata["name"] = name
                apply_defaults(kind, updated)
                keep_allocated_fields(kind, current, updated)
                validate(kind, updated)
                if kind.has_generation and updated.get("spec") != current.get("spec"):
                    metadata["generation"] = current["metadata"]["generation"] + 1
            updated["metadata"]["resourceVersion"] = self._next_resource_version()
            self._objects[kind.plural][(namespace if kind.namespaced else "", name)] = updated
            return copy.deepcopy(updated)

    def replace(
        self, kind: ResourceKind, namespace: str, name: str, body: Object, subresource: str | None = None
    ) -> Object:
        """PUT: the body replaces the object (or only its status, on the status subresource)."""
        return self._update(kind, namespace, name, lambda _current: copy.deepcopy(body), subresource)

    def patch(
        self,
        kind: ResourceKind,
        namespace: str,
        name: str,
        patch: Any,
        content_type: str,
        subresource: str | None = None,
    ) -> Object:
        """PATCH in any of the three flavours; a resourceVersion inside the patch is still checked."""

        def patched(current: Object) -> Object:
            served_version = current["metadata"]["resourceVersion"]
            result = apply_patch(current, patch, content_type)
            if result.get("metadata", {}).get("resourceVersion") == served_version:
                result["metadata"].pop("resourceVersion")
            return result

        return self._update(kind, namespace, name, patched, subresource)

    def delete(self, kind: ResourceKind, namespace: str, name: str) -> Object:
        """Remove an object (a namespace takes everything in it along) and return what was removed."""
        with self._lock:
            key = (namespace if kind.namespaced else "", name)
            removed = self._stored(kind, *key)
            del self._objects[kind.plural][key]
            if kind is NAMESPACES:
                for objects in self._objects.values():
                    for contained in [k for k in objects if k[0] == name]:
                        del objects[contained]
            self._next_resource_version()
            return removed

    def write_status(self, kind: ResourceKind, namespace: str, name: str, uid: str, status: Object) -> bool:
        """The controllers' status write: no version check, but never onto a recreated namesake."""
        with self._lock:
            current = self._objects[kind.plural].get((namespace, name))
            if current is None or current["metadata"]["uid"] != uid:
                return False
            current["status"] = copy.deepcopy(status)
            current["metadata"]["resourceVersion"] = self._next_resource_version()
            return True
