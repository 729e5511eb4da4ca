"""Server-side printing: `kubectl get` asks for a Table, and without one shows only NAME and AGE."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from lab.kube.pods import pod_is_ready
from lab.kube.resources import DEPLOYMENTS, NAMESPACES, PODS, SECRETS, SERVICES, ResourceKind
from lab.kube.selectors import label_selector_string
from lab.kube.store import Object

Column = tuple[str, int, Callable[[Object], Any]]  # name, priority (1 = only with -o wide), cell


def _age(obj: Object) -> str:
    created = datetime.strptime(obj["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    seconds = max(0, int(time.time() - created))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _containers(obj: Object) -> list[Object]:
    return obj["spec"]["template"]["spec"].get("containers") or []


def _ports(service: Object) -> str:
    ports = [f"{p['port']}/{p.get('protocol', 'TCP')}" for p in service["spec"].get("ports") or []]
    return ",".join(ports) or "<none>"


def _selector(service: Object) -> str:
    selector = service["spec"].get("selector") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"


_COLUMNS: dict[str, list[Column]] = {
    DEPLOYMENTS.plural: [
        ("Ready", 0, lambda d: f"{d['status'].get('readyReplicas', 0)}/{d['spec'].get('replicas', 1)}"),
        ("Up-to-date", 0, lambda d: d["status"].get("updatedReplicas", 0)),
        ("Available", 0, lambda d: d["status"].get("availableReplicas", 0)),
        ("Age", 0, _age),
        ("Containers", 1, lambda d: ",".join(c["name"] for c in _containers(d))),
        ("Images", 1, lambda d: ",".join(c.get("image", "") for c in _containers(d))),
        ("Selector", 1, lambda d: label_selector_string(d["spec"].get("selector") or {})),
    ],
    PODS.plural: [
        (
            "Ready",
            0,
            lambda p: (
                f"{len(p['spec']['containers']) if pod_is_ready(p) else 0}/{len(p['spec']['containers'])}"
            ),
        ),
        ("Status", 0, lambda p: p["status"].get("phase", "Unknown")),
        ("Restarts", 0, lambda p: 0),
        ("Age", 0, _age),
        ("IP", 1, lambda p: p["status"].get("podIP", "<none>")),
        ("Node", 1, lambda p: p["spec"].get("nodeName", "<none>")),
    ],
    SERVICES.plural: [
        ("Type", 0, lambda s: s["spec"].get("type", "ClusterIP")),
        ("Cluster-IP", 0, lambda s: s["spec"].get("clusterIP", "<none>")),
        ("External-IP", 0, lambda s: "<none>"),
        ("Port(s)", 0, _ports),
        ("Age", 0, _age),
        ("Selector", 1, _selector),
    ],
    NAMESPACES.plural: [
        ("Status", 0, lambda n: n["status"].get("phase", "Active")),
        ("Age", 0, _age),
    ],
    # Like kubectl: the type and how many keys, never the values.
    SECRETS.plural: [
        ("Type", 0, lambda s: s.get("type", "Opaque")),
        ("Data", 0, lambda s: len(s.get("data") or {})),
        ("Age", 0, _age),
    ],
}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def as_table(kind: ResourceKind, body: Object) -> Object:
    """A single object or a `<Kind>List` as a Table with the columns kubectl shows."""
    items = body["items"] if body.get("kind", "").endswith("List") else [body]
    columns: list[Column] = [
        ("Name", 0, lambda obj: obj["metadata"]["name"]),
        *_COLUMNS.get(kind.plural, [("Age", 0, _age)]),
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": body["metadata"].get("resourceVersion", "")},
        "columnDefinitions": [
            {
                "name": name,
                "type": "string",
                "format": "name" if name == "Name" else "",
                "description": name,
                "priority": priority,
            }
            for name, priority, _ in columns
        ],
        "rows": [
            {
                "cells": [cell(item) for _, _, cell in columns],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
            for item in items
        ],
    }
