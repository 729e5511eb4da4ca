"""Prometheus, scraping every Ready pod (discovered from the Kubernetes emulator) each second.

The traffic gate queries it for production's error ratio and p99. Jobs: `pods` (http_sd from the
emulator's /lab/sd, which labels each target with namespace, service, color, version and pod),
`edge` and `loadgen` (static; they answer only while a load test runs, and are down otherwise).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lab.processes import Binary, Component, answers_http, apt_hint
from lab.settings import LabSettings


def scrape_config(settings: LabSettings) -> dict[str, object]:
    def static(job: str, port: int) -> dict[str, object]:
        return {"job_name": job, "static_configs": [{"targets": [f"{settings.host}:{port}"]}]}

    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "15s"},
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

    def address(self, settings: LabSettings) -> str:
        return f"http://{settings.host}:{settings.prometheus_port}"

    def listens(self, settings: LabSettings) -> list[tuple[str, int]]:
        return [(settings.host, settings.prometheus_port)]

    def prepare(self, settings: LabSettings) -> None:
        self.directory(settings).mkdir(parents=True, exist_ok=True)
        (self.directory(settings) / "prometheus.yml").write_text(
            "# Written by lab/prometheus.py at every start.\n"
            + yaml.safe_dump(scrape_config(settings), sort_keys=False)
        )

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
