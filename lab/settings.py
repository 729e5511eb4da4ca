"""Every address and path the lab uses, in one place.

Each value can be overridden by an environment variable ``LAB_<FIELD>`` (upper case),
for a machine where a default port is taken.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LabSettings:
    host: str = "127.0.0.1"
    postgres_source_port: int = 15432
    postgres_target_port: int = 15433
    pgbouncer_port: int = 16432
    redis_source_port: int = 16379
    redis_target_port: int = 16380
    moto_port: int = 15000
    prometheus_port: int = 19090
    kube_api_port: int = 16443
    # Each environment's ingress listens on its own loopback address, so a DNS answer
    # (an A record) really decides where a request goes.
    staging_ingress_host: str = "127.0.0.2"
    production_ingress_host: str = "127.0.0.3"
    ingress_port: int = 18080
    edge_metrics_port: int = 19101
    loadgen_metrics_port: int = 19102
    data_dir: Path = REPO_ROOT / ".lab"

    @classmethod
    def from_env(cls) -> LabSettings:
        """Defaults, overridden by ``LAB_<FIELD>`` variables."""
        overrides: dict[str, object] = {}
        for field in fields(cls):
            raw = os.environ.get(f"LAB_{field.name.upper()}")
            if raw is None:
                continue
            if field.type == "int":
                overrides[field.name] = int(raw)
            elif field.type == "Path":
                overrides[field.name] = Path(raw)
            else:
                overrides[field.name] = raw
        return cls(**overrides)  # type: ignore[arg-type]
