"""Alertmanager (Debian's `prometheus-alertmanager`), receiving the alerts of the lab's Prometheus.

The lab runs its own process on its own port and data directory; Debian's service (port 9093) is
neither used nor needed. Clustering is off (`--cluster.listen-address=`), so no gossip port is
bound. Its config, written at every start, routes every alert to the lab's alert receiver
(lab/alert_receiver.py) within a second or two: each alert its own group (`group_by: ['...']`),
`group_wait` 1 s, `group_interval` 1 s, so validation.monitoring's test alert is notified at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lab.alert_receiver import AlertReceiver
from lab.processes import Binary, Component, answers_http, apt_hint
from lab.settings import LabSettings

RECEIVER = "lab-alert-receiver"


def alertmanager_config(receiver_url: str) -> dict[str, Any]:
    """Every alert to one webhook, fast; a receiver URL nobody listens on makes a broken route."""
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": ["..."],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": RECEIVER, "webhook_configs": [{"url": receiver_url, "send_resolved": True}]}],
    }


class Alertmanager(Component):
    name = "alertmanager"
    binary = Binary(Path("/usr/bin/prometheus-alertmanager"), apt_hint("prometheus-alertmanager"))

    def directory(self, settings: LabSettings) -> Path:
        return settings.data_dir / "alertmanager"

    scheme = "http"

    def port(self, settings: LabSettings) -> int:
        return settings.alertmanager_port

    def prepare(self, settings: LabSettings) -> None:
        self.directory(settings).mkdir(parents=True, exist_ok=True)
        config = alertmanager_config(AlertReceiver().address(settings))
        (self.directory(settings) / "alertmanager.yml").write_text(
            "# Written by lab/alertmanager.py at every start.\n" + yaml.safe_dump(config, sort_keys=False)
        )

    def command(self, settings: LabSettings) -> list[str]:
        return [
            str(self.binary.path),
            f"--config.file={self.directory(settings) / 'alertmanager.yml'}",
            f"--storage.path={self.directory(settings) / 'data'}",
            f"--web.listen-address={settings.host}:{settings.alertmanager_port}",
            "--cluster.listen-address=",
        ]

    def probe(self, settings: LabSettings) -> bool:
        return answers_http(f"{self.address(settings)}/-/ready")
