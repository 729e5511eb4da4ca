"""HTTP servers on background threads, and stopping many of them without paying for each in turn."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast


class ContextServer(ThreadingHTTPServer):
    """A threaded server whose handlers reach shared state through `context`."""

    daemon_threads = True
    # The listen backlog, as a real ingress keeps one (nginx: 511): with socketserver's 5, a burst of
    # new connections (a load test's workers starting together) overflows it and the kernel answers
    # the rest only after SYN retransmits, 1 s and 3 s later.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: Any) -> None:
        super().__init__(address, handler)
        self.context = context
        self.stopping = False


class KeepAliveHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive that lets go of each connection once its server is stopping."""

    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection gives its thread back after this
    # Headers and body go out in separate writes: with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers, adding ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    @property
    def context(self) -> Any:
        return cast(ContextServer, self.server).context

    def end_headers(self) -> None:
        if cast(ContextServer, self.server).stopping:
            self.send_header("Connection", "close")
        super().end_headers()


class BackgroundServer:
    """A ContextServer bound at construction and served from its own daemon thread."""

    def __init__(
        self, host: str, port: int, handler: type[KeepAliveHandler], name: str, context: Any
    ) -> None:
        self._server = ContextServer((host, port), handler, context)
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting (up to half a second); requests in flight finish, then their connections close."""
        self._server.stopping = True
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def run_concurrently(actions: Iterable[Callable[[], None]]) -> None:
    """Run every action on its own thread and wait for all of them."""
    threads = [threading.Thread(target=action) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
