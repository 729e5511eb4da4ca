"""The lab's alert receiver: the webhook the lab's Alertmanager notifies, keeping what it received.

Stands in for the team's pager or chat: Alertmanager POSTs each notification (its webhook payload:
status, alerts with labels and annotations) to `/alerts`; `GET /alerts` returns every one kept
(the latest MAX_KEPT), so a test reads back that the migration's test alert really arrived. Each
notification is also one line in its log (.lab/logs/alert-receiver.log).

    python -m lab.alert_receiver --port 19095
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from lab.processes import Binary, Component, answers_http
from lab.settings import REPO_ROOT, LabSettings

PATH = "/alerts"
MAX_KEPT = 1000  # a lab up for days keeps the latest notifications, not all of them


class AlertReceiver(Component):
    name = "alert-receiver"
    binary = Binary(Path(sys.executable), "create the venv (`make bootstrap`)")

    scheme, address_path = "http", PATH

    def port(self, settings: LabSettings) -> int:
        return settings.alert_receiver_port

    def command(self, settings: LabSettings) -> list[str]:
        return [
            str(self.binary.path),
            "-m",
            "lab.alert_receiver",
            "--host",
            settings.host,
            "--port",
            str(settings.alert_receiver_port),
        ]

    def environment(self, settings: LabSettings) -> dict[str, str]:
        return {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}

    def probe(self, settings: LabSettings) -> bool:
        return answers_http(self.address(settings))


def received_notifications(settings: LabSettings) -> list[dict[str, Any]]:
    """Every notification the running receiver kept, oldest first, each with its `received_at`."""
    import requests

    response = requests.get(AlertReceiver().address(settings), timeout=5)
    response.raise_for_status()
    return list(response.json())


class Handler(BaseHTTPRequestHandler):
    # Class attributes: the server makes a handler per request, and they all share what was kept.
    kept: ClassVar[collections.deque[dict[str, Any]]] = collections.deque(maxlen=MAX_KEPT)
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        if self.path != PATH:
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            notification = json.loads(body)
        except ValueError:
            self.send_error(400, "not JSON")
            return
        with self.lock:
            self.kept.append({**notification, "received_at": time.time()})
        alerts = notification.get("alerts") or []
        names = sorted({(alert.get("labels") or {}).get("alertname", "?") for alert in alerts})
        print(
            f"{time.strftime('%H:%M:%S')} {notification.get('receiver')}: {notification.get('status')}, "
            f"{len(alerts)} alert(s): {', '.join(names)}",
            flush=True,
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path != PATH:
            self.send_error(404)
            return
        with self.lock:
            payload = json.dumps(list(self.kept)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: each notification gets its own line; probes and reads none."""


def main(argv: list[str]) -> None:
    settings = LabSettings.from_env()
    parser = argparse.ArgumentParser(prog="python -m lab.alert_receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.alert_receiver_port)
    arguments = parser.parse_args(argv)
    server = ThreadingHTTPServer((arguments.host, arguments.port), Handler)
    print(f"alert receiver on http://{arguments.host}:{arguments.port}{PATH}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
