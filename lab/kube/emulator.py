"""The whole emulator in one object: API server, ingresses, rollout controller and pod servers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from lab.kube.api import ApiRequestHandler, KubeApi
from lab.kube.controller import RolloutController
from lab.kube.proxy import ServiceRouter, UpstreamPool, ingress_server
from lab.kube.serving import BackgroundServer, run_concurrently
from lab.kube.store import ObjectStore


@dataclass(frozen=True)
class IngressRoute:
    """An environment's ingress address and the namespace it serves."""

    host: str
    port: int
    namespace: str


class KubeEmulator:
    """Serves the Kubernetes API subset on host:port (port 0 picks a free one) until stop()."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ingresses: Sequence[IngressRoute] = (),
        pod_ready_delay_seconds: float = 0.5,
        controller_interval_seconds: float = 0.1,
        pod_drain_seconds: float = 1.0,
    ) -> None:
        self.host = host
        self.store = ObjectStore()
        self._requested_port = port
        self._ingress_routes = list(ingresses)
        self._upstreams = UpstreamPool()
        self._router = ServiceRouter(self.store, self._upstreams)
        self._controller = RolloutController(
            self.store,
            self._upstreams,
            pod_ready_delay_seconds=pod_ready_delay_seconds,
            interval_seconds=controller_interval_seconds,
            drain_seconds=pod_drain_seconds,
        )
        self._api_server: BackgroundServer | None = None
        self._ingresses: dict[str, BackgroundServer] = {}

    @property
    def port(self) -> int:
        if self._api_server is None:
            raise RuntimeError("the emulator is not started")
        return self._api_server.address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ingress_address(self, namespace: str) -> tuple[str, int]:
        """Where the ingress for a namespace listens (its real port, even if 0 was asked for)."""
        return self._ingresses[namespace].address

    def start(self) -> None:
        """Bind every listener before serving any, so a taken port fails here and leaves nothing behind."""
        api = KubeApi(self.store, self._router)
        self._api_server = BackgroundServer(
            self.host, self._requested_port, ApiRequestHandler, "kube-api", api
        )
        api.server_address = f"{self.host}:{self.port}"
        try:
            for route in self._ingress_routes:
                self._ingresses[route.namespace] = ingress_server(
                    route.host, route.port, route.namespace, self._router
                )
        except OSError:
            self._stop_listeners()
            raise
        self._api_server.start()
        for ingress in self._ingresses.values():
            ingress.start()
        self._controller.start()

    def stop(self) -> None:
        """Stop the controller with its pod servers and every listener, all at once."""
        run_concurrently([self._controller.stop, self._stop_listeners])

    def _stop_listeners(self) -> None:
        listeners = list(self._ingresses.values())
        if self._api_server is not None:
            listeners.append(self._api_server)
        self._ingresses.clear()
        run_concurrently(listener.stop for listener in listeners)

    def __enter__(self) -> KubeEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
