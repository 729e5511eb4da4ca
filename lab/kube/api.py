"""The REST front: routes kube-apiserver paths to the store, the Service proxy and discovery."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from lab.kube import errors
from lab.kube.patches import MERGE_PATCH, apply_patch
from lab.kube.pods import PodBehaviour, pod_is_ready, pod_port
from lab.kube.proxy import ServiceRouter, UpstreamResponse, request_headers_to_forward
from lab.kube.resources import (
    DEPLOYMENTS,
    GROUP_KINDS,
    KINDS_BY_GROUP_AND_PLURAL,
    PODS,
    ResourceKind,
    discovery_documents,
)
from lab.kube.selectors import label_selector_string
from lab.kube.serving import KeepAliveHandler
from lab.kube.store import Object, ObjectStore
from lab.kube.tables import as_table, wants_table

log = logging.getLogger("lab.kube.api")

SERVICE_DISCOVERY_PATH = "/lab/sd"
_HEALTH_PATHS = ("/healthz", "/livez", "/readyz")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        return cls(status, json.dumps(payload, separators=(",", ":")).encode())

    @classmethod
    def upstream(cls, response: UpstreamResponse) -> Response:
        content_type = next(
            (v for k, v in response.headers if k.lower() == "content-type"), "application/octet-stream"
        )
        headers = [(k, v) for k, v in response.forwardable_headers() if k.lower() != "content-type"]
        return cls(response.status, response.body, content_type, headers)


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: Message
    body: bytes
    client_address: str

    def json_body(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise errors.bad_request("the request body is not valid JSON") from None


def _scale_of(deployment: Object) -> Object:
    """The autoscaling/v1 Scale view of a Deployment, as `kubectl scale` reads and writes it."""
    metadata = deployment["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: metadata[key] for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        },
        "spec": {"replicas": deployment["spec"].get("replicas", 1)},
        "status": {
            "replicas": deployment.get("status", {}).get("replicas", 0),
            "selector": label_selector_string(deployment["spec"].get("selector") or {}),
        },
    }


def _deleted(kind: ResourceKind, removed: Object) -> Object:
    metadata = removed["metadata"]
    details = {"name": metadata["name"], "kind": kind.plural, "uid": metadata["uid"]}
    if kind.group:
        details["group"] = kind.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


class KubeApi:
    """Answers one API request; independent of the HTTP server so the routing reads top to bottom."""

    def __init__(self, store: ObjectStore, router: ServiceRouter) -> None:
        self._store = store
        self._router = router
        self.server_address = ""  # host:port, known once the server is bound; discovery reports it

    def handle(self, request: Request) -> Response:
        try:
            return self._route(request)
        except errors.ApiError as exc:
            return Response.json(exc.code, exc.status())

    def service_discovery(self) -> list[Object]:
        """Prometheus http_sd target groups, one per Ready pod."""
        groups = []
        for pod in self._store.items(PODS, where=pod_is_ready):
            metadata = pod["metadata"]
            behaviour = PodBehaviour.from_container(
                metadata["namespace"],
                metadata["name"],
                metadata.get("labels") or {},
                pod["spec"]["containers"][0],
            )
            groups.append(
                {
                    "targets": [f"127.0.0.1:{pod_port(pod)}"],
                    "labels": {
                        "namespace": behaviour.namespace,
                        "service": behaviour.service,
                        "color": behaviour.color,
                        "version": behaviour.version,
                        "pod": behaviour.pod_name,
                    },
                }
            )
        return groups

    def _route(self, request: Request) -> Response:
        url = urlsplit(request.target)
        path = "/" + url.path.strip("/")
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        discovery = discovery_documents(self.server_address)
        if path in discovery or path in _HEALTH_PATHS or path == SERVICE_DISCOVERY_PATH:
            if request.method != "GET":
                raise errors.method_not_allowed()
            if path == SERVICE_DISCOVERY_PATH:
                return Response.json(200, self.service_discovery())
            if path in _HEALTH_PATHS:
                return Response(200, b"ok", "text/plain")
            return Response.json(200, discovery[path])
        if query.get("watch") in ("true", "1"):
            raise errors.bad_request("watch is not supported by the lab's Kubernetes emulator; poll instead")
        if query.get("dryRun"):
            raise errors.bad_request("dryRun is not supported by the lab's Kubernetes emulator")

        segments = [unquote(segment) for segment in url.path.strip("/").split("/")]
        if segments[:2] == ["api", "v1"]:
            group, rest = "", segments[2:]
        elif segments[0] == "apis" and tuple(segments[1:3]) in GROUP_KINDS:
            group, rest = segments[1], segments[3:]
        else:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")

        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, rest[2]) in KINDS_BY_GROUP_AND_PLURAL:
            namespace, rest = rest[1], rest[2:]
        kind = KINDS_BY_GROUP_AND_PLURAL.get((group, rest[0])) if rest else None
        if kind is None or (namespace and not kind.namespaced):
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(rest) == 1:
            return self._collection(request, kind, namespace, query)
        name = rest[1]
        if len(rest) == 2:
            return self._item(request, kind, namespace, name)
        subresource = rest[2]
        if subresource == "proxy" and kind.plural in ("services", "pods"):
            proxied_path = "/".join(rest[3:]) + ("/" if url.path.endswith("/") and rest[3:] else "")
            return self._proxy(request, kind, namespace, name.partition(":")[0], proxied_path, url.query)
        if len(rest) == 3 and subresource == "status":
            return self._item(request, kind, namespace, name, subresource)
        if len(rest) == 3 and subresource == "scale" and kind is DEPLOYMENTS:
            return self._scale(request, namespace, name)
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")

    def _collection(
        self, request: Request, kind: ResourceKind, namespace: str, query: Mapping[str, str]
    ) -> Response:
        if request.method == "GET":
            listed = self._store.list(
                kind, namespace or None, query.get("labelSelector", ""), query.get("fieldSelector", "")
            )
            return self._readable(request, kind, listed)
        if request.method == "POST" and kind is not PODS and (namespace or not kind.namespaced):
            body = request.json_body()
            if not isinstance(body, dict):
                raise errors.bad_request("the request body must be a JSON object")
            return Response.json(201, self._store.create(kind, namespace, body))
        raise errors.method_not_allowed(
            f"{request.method} is not supported on {kind.plural} by the lab emulator"
        )

    def _item(
        self, request: Request, kind: ResourceKind, namespace: str, name: str, subresource: str | None = None
    ) -> Response:
        if request.method == "GET" and subresource is None:
            return self._readable(request, kind, self._store.get(kind, namespace, name))
        if request.method == "GET":
            return Response.json(200, self._store.get(kind, namespace, name))
        if request.method == "PUT" and kind is not PODS:
            body = request.json_body()
            if not isinstance(body, dict):
                raise errors.bad_request("the request body must be a JSON object")
            return Response.json(200, self._store.replace(kind, namespace, name, body, subresource))
        if request.method == "PATCH" and kind is not PODS:
            content_type = request.headers.get("Content-Type", "application/json")
            return Response.json(
                200, self._store.patch(kind, namespace, name, request.json_body(), content_type, subresource)
            )
        if request.method == "DELETE" and subresource is None:
            return Response.json(200, _deleted(kind, self._store.delete(kind, namespace, name)))
        raise errors.method_not_allowed()

    @staticmethod
    def _readable(request: Request, kind: ResourceKind, body: Object) -> Response:
        """The object or list as JSON, or as a Table when kubectl asks for one to print."""
        if wants_table(request.headers.get("Accept", "")):
            return Response.json(200, as_table(kind, body))
        return Response.json(200, body)

    def _scale(self, request: Request, namespace: str, name: str) -> Response:
        deployment = self._store.get(DEPLOYMENTS, namespace, name)
        if request.method == "GET":
            return Response.json(200, _scale_of(deployment))
        if request.method == "PUT":
            wanted = request.json_body()
        elif request.method == "PATCH":
            wanted = apply_patch(
                _scale_of(deployment), request.json_body(), request.headers.get("Content-Type", "")
            )
        else:
            raise errors.method_not_allowed()
        replicas = (wanted.get("spec") or {}).get("replicas") if isinstance(wanted, dict) else None
        if not isinstance(replicas, int):
            raise errors.invalid("Scale", "autoscaling", name, ["spec.replicas: Required value"])
        change: Object = {"spec": {"replicas": replicas}}
        if request.method == "PUT" and (wanted.get("metadata") or {}).get("resourceVersion"):
            change["metadata"] = {"resourceVersion": wanted["metadata"]["resourceVersion"]}
        updated = self._store.patch(DEPLOYMENTS, namespace, name, change, MERGE_PATCH)
        return Response.json(200, _scale_of(updated))

    def _proxy(
        self, request: Request, kind: ResourceKind, namespace: str, name: str, path: str, query: str
    ) -> Response:
        target = "/" + path.lstrip("/") + (f"?{query}" if query else "")
        headers = request_headers_to_forward(request.headers, request.client_address)
        if kind is PODS:
            upstream = self._router.forward_to_pod(
                namespace, name, request.method, target, headers, request.body
            )
            return Response.upstream(upstream)
        pod_name, upstream = self._router.forward(
            namespace, name, request.method, target, headers, request.body
        )
        response = Response.upstream(upstream)
        response.headers.append(("X-Lab-Pod", pod_name))
        return response


class ApiRequestHandler(KeepAliveHandler):
    """Keep-alive, as the client's connection pool expects."""

    server_version = "lab-kube-apiserver"

    def _serve(self) -> None:
        api: KubeApi = self.context
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request(self.command, self.path, self.headers, body, self.client_address[0])
        response = api.handle(request)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers:
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s -> %s", self.command, self.path, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)
