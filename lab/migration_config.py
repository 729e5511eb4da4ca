"""The migration config the lab runs: the project's own, with the waits that protect real users shortened.

`python -m lab up` writes it to <data_dir>/lab-migration.yaml and names it in <data_dir>/airflow.env
(PYAIRTABLE_MIGRATION_CONFIG), so `make airflow`, `make demo` and the end-to-end tests all run the
same DAG against the lab, in minutes instead of the production bake times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lab.pgbackrest import backup_settings
from lab.settings import LabSettings
from pyairtable_migration.config import DEFAULT_CONFIG_PATH, MigrationConfig, load_config, parse_config

CONFIG_ENV = "PYAIRTABLE_MIGRATION_CONFIG"
# The production cluster as moto's RDS API lists it when the lab's production stands for a managed one.
LAB_RDS_CLUSTER = "pyairtable-production"
MANAGED_FROM_MAJOR = 17

# Path into the YAML document -> the lab's value.
LAB_OVERRIDES: dict[tuple[str, ...], Any] = {
    ("traffic", "bake_seconds"): 15,
    ("traffic", "watch_seconds"): 6,  # the production watch after 100 %: three gate samples
    ("traffic", "gate", "sample_seconds"): 2,
    ("traffic", "gate", "window"): "10s",
    ("dns", "cutover_ttl_seconds"): 5,
    ("blue_green", "rollback_window_seconds"): 3,
    ("blue_green", "rollout_poll_seconds"): 0.5,
    ("database", "lag_sample_seconds"): 0.5,
    # The lab's pods are threads of one Python process on a machine the whole suite shares: a p95
    # there measures the machine (155 ms seen for a health check while both test streams ran, over
    # 400 ms for a smoke test through the preview Service beside a whole Airflow), not the service.
    # Still below the latency a `-slow` image adds (800 ms), so such an image still fails.
    ("slo_classes", "health"): 600,
    ("slo_classes", "auth"): 600,
    ("slo_classes", "business"): 600,
    ("services", "istio", "external"): True,  # the lab has no mesh
    # Production's floor is 2 replicas a service; the lab runs one pod of the services that ran one
    # before (its pods share one process and a 2-core machine), the autoscaler's floor lowered to match.
    ("platform", "min_replicas"): 1,
    ("platform", "min_available"): None,
    ("platform", "max_unavailable"): 1,
    **{
        ("services", name, "replicas"): 1
        for name in (
            "workspace-service",
            "permission-service",
            "llm-orchestrator",
            "mcp-server",
            "automation-service",
            "mobile-bff",
            "auth-frontend",
        )
    },
}
# "Service dashboard": the lab's Prometheus, request rate per color and status code of the service.
LAB_DASHBOARD = (
    "http://{host}:{port}/graph?g0.expr=sum+by+(color%2Ccode)(rate(pyairtable_http_requests_total"
    "%7Bnamespace%3D%22$namespace%22%2Cservice%3D%22$service%22%7D%5B1m%5D))&g0.tab=0&g0.range_input=30m"
)


def lab_config_path(settings: LabSettings) -> Path:
    return settings.data_dir / "lab-migration.yaml"


def lab_config_document(
    settings: LabSettings, overrides: dict[tuple[str, ...], Any] | None = None
) -> dict[str, Any]:
    """The project's config with the lab's values (LAB_OVERRIDES, then `overrides`), as YAML data."""
    document: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    # Production's stanza in the lab: repository, logs and restores under the lab's data directory.
    # A PostgreSQL 17 production stands for a managed one (no pgBackRest here reads 17): its backups
    # are the RDS API's, served by the lab's moto (lab/route53.py seeds the cluster).
    backup = backup_settings(settings).model_dump()
    if settings.target_major >= MANAGED_FROM_MAJOR:
        backup["method"] = "rds"
        backup["rds"] = {
            "aws_conn_id": document["dns"]["aws_conn_id"],
            "db_cluster_identifier": LAB_RDS_CLUSTER,
            "poll_seconds": 0.5,
        }
    lab_backup: dict[tuple[str, ...], Any] = {("backup",): backup}
    dashboard = LAB_DASHBOARD.format(host=settings.host, port=settings.prometheus_port)
    # The load test at the lab's production ingress, gently: the lab's pods are threads of one
    # Python process (~500 requests/s alone on a 2-core machine: make bench measures it), and beside
    # a whole test run 120 requests/s pushed their p95 past the 600 ms budgets (755-1,819 ms seen).
    ingress = f"http://{settings.production_ingress_host}:{settings.ingress_port}"
    load_test = {
        "url_template": f"{ingress}/{{service}}{{path}}",
        "rate": 48,
        "duration_seconds": 5,
        "connections_per_service": 2,
    }
    # The mirror is a process of whichever lab worker starts it (they share this machine), its state
    # under the lab's data directory; the lag gate as the lab's other gates, in seconds.
    kafka = {
        "mirror_state_dir": str(settings.data_dir / "kafka-mirror"),
        "mirror_queue": None,
        "lag_timeout_seconds": 120,
        "group_empty_timeout_seconds": 60,
        # The lab's clients keep a DNS answer exactly its TTL (lab/edge.py), and a drain starts
        # seconds after the weights moved (the watch, or the rollback's group move) on top of it.
        "drain_quiet_seconds": LAB_OVERRIDES[("dns", "cutover_ttl_seconds")],
    }
    # The parallel copy's process likewise (the lab's workers share this machine: any finds it).
    parallel_copy = {"copy_state_dir": str(settings.data_dir / "parallel-copy"), "copy_queue": None}
    lab_values: dict[tuple[str, ...], Any] = {
        **LAB_OVERRIDES,
        **lab_backup,
        **{("database", key): value for key, value in parallel_copy.items()},
        **{("kafka", key): value for key, value in kafka.items()},
        ("blue_green", "dashboard_url_template"): dashboard,
        **{("traffic", "load_test", key): value for key, value in load_test.items()},
    }
    for path, value in {**lab_values, **(overrides or {})}.items():
        section = document
        for key in path[:-1]:
            section = section.setdefault(key, {})
        section[path[-1]] = value
    return document


def lab_config(settings: LabSettings) -> MigrationConfig:
    """The lab's config as its components read it at start (Prometheus's alert rules), without
    writing the file a test may have written with overrides of its own."""
    return parse_config(yaml.safe_dump(lab_config_document(settings)), "the lab's config")


def write_lab_config(settings: LabSettings, overrides: dict[tuple[str, ...], Any] | None = None) -> Path:
    """Write the lab's config (LAB_OVERRIDES, then `overrides`); refuse a broken one before anything runs."""
    target = lab_config_path(settings)
    target.write_text(yaml.safe_dump(lab_config_document(settings, overrides), sort_keys=False))
    load_config(target)
    return target
