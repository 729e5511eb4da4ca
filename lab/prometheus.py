"""Prometheus, scraping every Ready pod (discovered from the Kubernetes emulator) each second.

The traffic gate queries it for production's error ratio and p99. Jobs: `pods` (http_sd from the
emulator's /lab/sd, which labels each target with namespace, service, color, version and pod),
`edge` and `loadgen` (static; they answer only while a load test runs, and are down otherwise).
It evaluates production's alert rules (pyairtable_migration.monitoring.alerts, from the lab's config,
written at every start) each second and sends what fires to the lab's Alertmanager. An `up` finding
it running with other rules or config on disk rewrites them and has it reload.
"""

from __future__ import annotations

from pathlib import Path

import requests
import yaml

from lab.migration_config import lab_config
from lab.processes import Binary, Component, LabError, State, answers_http, apt_hint
from lab.settings import LabSettings
from pyairtable_migration.monitoring.alerts import rules_yaml

RULES_FILE = "alert-rules.yml"  # beside prometheus.yml, which names it relative to itself


def scrape_config(settings: LabSettings) -> dict[str, object]:
    def static(job: str, port: int) -> dict[str, object]:
        return {"job_name": job, "static_configs": [{"targets": [f"{settings.host}:{port}"]}]}

    alertmanager = f"{settings.host}:{settings.alertmanager_port}"
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [RULES_FILE],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {
                "job_name": "pods",
                "http_sd_configs": [
                    {
                        "url": f"http://{settings.host}:{settings.kube_api_port}/lab/sd",
                        "refresh_interval": "2s",
                    }
                ],
            },
            static("edge", settings.edge_metrics_port),
            static("loadgen", settings.loadgen_metrics_port),
        ],
    }


class Prometheus(Component):
    name = "prometheus"
    binary = Binary(Path("/usr/bin/prometheus"), apt_hint("prometheus"))

    def directory(self, settings: LabSettings) -> Path:
        return settings.data_dir / "prometheus"

    scheme = "http"

    def port(self, settings: LabSettings) -> int:
        return settings.prometheus_port

    def prepare(self, settings: LabSettings) -> None:
        self.write_config(settings)

    def write_config(self, settings: LabSettings) -> bool:
        """Write prometheus.yml and the alert rules; True if either changed on disk."""
        directory = self.directory(settings)
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "prometheus.yml": "# Written by lab/prometheus.py at every start.\n"
            + yaml.safe_dump(scrape_config(settings), sort_keys=False),
            RULES_FILE: rules_yaml(lab_config(settings), "the lab's config"),
        }
        changed = False
        for name, text in files.items():
            path = directory / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                changed = True
        return changed

    def seed(self, settings: LabSettings, scale: int, state: State) -> str | None:
        """A Prometheus started before the config or rules changed (a lab kept across an upgrade)
        loads the new ones; one just started has them already and is left alone."""
        if not self.write_config(settings):
            return None
        response = requests.post(f"{self.address(settings)}/-/reload", timeout=10)
        if not response.ok:
            raise LabError(f"prometheus refused its new config: HTTP {response.status_code} {response.text}")
        return "config and alert rules reloaded"

    def command(self, settings: LabSettings) -> list[str]:
        return [
            str(self.binary.path),
            f"--config.file={self.directory(settings) / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.directory(settings) / 'data'}",
            f"--web.listen-address={settings.host}:{settings.prometheus_port}",
            "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ]

    def probe(self, settings: LabSettings) -> bool:
        return answers_http(f"{self.address(settings)}/-/ready")
