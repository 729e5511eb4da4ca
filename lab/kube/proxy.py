"""Traffic into pods: the Service proxy, the per-environment ingresses, and the connections they share.

Both pick a Ready pod behind a Service round robin, as kube-proxy spreads connections, and
reuse keep-alive connections to pods so a busy load test does not exhaust ephemeral ports.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

from lab.kube import errors
from lab.kube.pods import pod_is_ready, pod_port
from lab.kube.resources import PODS, SERVICES
from lab.kube.serving import BackgroundServer, KeepAliveHandler
from lab.kube.store import ObjectStore

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Hop-by-hop headers, plus those each server writes for itself.
_NOT_FORWARDED = _HOP_BY_HOP | {"content-length", "host", "date", "server"}


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def forwardable_headers(self) -> Iterator[tuple[str, str]]:
        return ((k, v) for k, v in self.headers if k.lower() not in _NOT_FORWARDED)


class UpstreamPool:
    """Idle keep-alive connections per pod port."""

    def __init__(self, timeout_seconds: float = 30.0, max_idle_per_port: int = 16) -> None:
        self._timeout = timeout_seconds
        self._max_idle = max_idle_per_port
        self._idle: dict[int, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def _take(self, port: int) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(port)
            return idle.pop() if idle else None

    def _give_back(self, port: int, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(port, [])
            if len(idle) < self._max_idle:
                idle.append(connection)
                return
        connection.close()

    def forget(self, port: int) -> None:
        """Close the idle connections of a pod that is gone."""
        with self._lock:
            idle = self._idle.pop(port, [])
        for connection in idle:
            connection.close()

    def request(
        self, port: int, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> UpstreamResponse:
        """One request; a reused connection the pod had already closed is retried once on a fresh one."""
        reused = self._take(port)
        if reused is not None:
            try:
                return self._exchange(port, reused, method, target, headers, body)
            except (ConnectionError, http.client.BadStatusLine):
                reused.close()
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=self._timeout)
        try:
            return self._exchange(port, fresh, method, target, headers, body)
        except BaseException:
            fresh.close()
            raise

    def _exchange(
        self,
        port: int,
        connection: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> UpstreamResponse:
        connection.request(method, target, body=body or None, headers=dict(headers))
        response = connection.getresponse()
        payload = response.read()
        if response.will_close:
            connection.close()
        else:
            self._give_back(port, connection)
        return UpstreamResponse(response.status, response.getheaders(), payload)


def request_headers_to_forward(headers: Message, client_address: str) -> dict[str, str]:
    """The client's end-to-end headers, plus X-Forwarded-For as a proxy adds it."""
    forwarded = {k: v for k, v in headers.items() if k.lower() not in _NOT_FORWARDED}
    forwarded["X-Forwarded-For"] = client_address
    return forwarded


class ServiceRouter:
    """Picks a Ready pod behind a Service (round robin) and forwards a request to it."""

    def __init__(self, store: ObjectStore, upstreams: UpstreamPool) -> None:
        self._store = store
        self._upstreams = upstreams
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}
        self._lock = threading.Lock()

    def _pick(self, namespace: str, service_name: str) -> tuple[str, int]:
        service = self._store.get(SERVICES, namespace, service_name)
        selector = service["spec"].get("selector") or {}
        selected = self._store.items(
            PODS,
            namespace,
            where=lambda pod: (
                bool(selector)
                and pod_is_ready(pod)
                and all(
                    (pod["metadata"].get("labels") or {}).get(key) == value for key, value in selector.items()
                )
            ),
        )
        endpoints = [
            (pod["metadata"]["name"], port) for pod in selected if (port := pod_port(pod)) is not None
        ]
        if not endpoints:
            raise errors.service_unavailable(f'no endpoints available for service "{service_name}"')
        with self._lock:
            turn = next(self._turns.setdefault((namespace, service_name), itertools.count()))
        return endpoints[turn % len(endpoints)]

    def forward(
        self,
        namespace: str,
        service_name: str,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[str, UpstreamResponse]:
        """(pod name, its response).

        ApiError 404 for a missing Service, 503 without a Ready pod, 502 when the pod fails.
        """
        pod_name, port = self._pick(namespace, service_name)
        return pod_name, self._send(pod_name, port, method, target, headers, body)

    def forward_to_pod(
        self, namespace: str, pod_name: str, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> UpstreamResponse:
        """The pod proxy: straight to one pod, Ready or not, as `pods/{name}/proxy` does."""
        port = pod_port(self._store.get(PODS, namespace, pod_name))
        if port is None:
            raise errors.service_unavailable(f'pod "{pod_name}" has no HTTP server')
        return self._send(pod_name, port, method, target, headers, body)

    def _send(
        self, pod_name: str, port: int, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> UpstreamResponse:
        try:
            return self._upstreams.request(port, method, target, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            raise errors.ApiError(
                502, "BadGateway", f'error trying to reach pod "{pod_name}": {exc}'
            ) from None


@dataclass(frozen=True)
class Ingress:
    """What an ingress handler needs: its namespace and the router into it."""

    namespace: str
    router: ServiceRouter


class _IngressHandler(KeepAliveHandler):
    server_version = "pyairtable-lab-ingress"

    def _serve(self) -> None:
        ingress: Ingress = self.context
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        service_name, _, rest = path.lstrip("/").partition("/")
        target = "/" + rest + (f"?{query}" if query else "")
        extra = [("X-Lab-Namespace", ingress.namespace)]
        if not service_name:
            self._send_json(404, {"error": "the path must start with /<service-name>/"}, extra)
            return
        try:
            pod_name, response = ingress.router.forward(
                ingress.namespace,
                service_name,
                self.command,
                target,
                request_headers_to_forward(self.headers, self.client_address[0]),
                body,
            )
        except errors.ApiError as exc:
            self._send_json(exc.code, {"error": exc.message}, extra)
            return
        self.send_response(response.status)
        for key, value in [*response.forwardable_headers(), *extra, ("X-Lab-Pod", pod_name)]:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _send_json(self, code: int, body: Mapping[str, Any], extra: list[tuple[str, str]]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in extra:
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Ingress traffic is counted by the pods' /metrics; no per-request log lines."""


def ingress_server(host: str, port: int, namespace: str, router: ServiceRouter) -> BackgroundServer:
    """One environment's ingress: `/<service>/<rest>` on this address goes to that Service's pods."""
    return BackgroundServer(host, port, _IngressHandler, f"ingress-{namespace}", Ingress(namespace, router))
