"""The Airflow connections that point the DAG at the lab, with ids taken from the config.

Written to <data_dir>/connections.json (`airflow connections import` format) and
<data_dir>/airflow.env (`AIRFLOW_CONN_<ID>='<json>'` lines, and PYAIRTABLE_MIGRATION_CONFIG naming
the lab's config), both mode 0600: they hold passwords.
`environment()` returns the same as a mapping, for tests to put into os.environ.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab.credentials import MIGRATOR_ROLE, PGBOUNCER_ADMIN, secrets
from lab.kafka_lab import PRODUCTION_CONN_ID, STAGING_CONN_ID
from lab.kube_seed import kubeconfig_path
from lab.migration_config import CONFIG_ENV, write_lab_config
from lab.pgbouncer import ADMIN_DATABASE, ini_path
from lab.postgres import DATABASE
from lab.processes import LabError, write_private
from lab.redis_endpoint import BACKEND as REDIS_ENDPOINT_BACKEND
from lab.route53 import DUMMY_KEY, REGION
from lab.settings import LabSettings
from pyairtable_migration.config import MigrationConfig, load_config


def connections(settings: LabSettings, config: MigrationConfig | None = None) -> dict[str, dict[str, Any]]:
    """conn_id -> {conn_type, host, port, login, password, schema, extra}."""
    config = config or load_config()
    passwords = secrets(settings)
    host = settings.host
    database = config.database

    def postgres(port: int, login: str, schema: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "conn_type": "postgres",
            "host": host,
            "port": port,
            "login": login,
            "password": passwords[login],
            "schema": schema,
            "extra": extra or {},
        }

    result = {
        database.source_conn_id: postgres(settings.postgres_source_port, MIGRATOR_ROLE, DATABASE),
        database.target_conn_id: postgres(settings.postgres_target_port, MIGRATOR_ROLE, DATABASE),
    }
    if len(database.poolers) != 1 or database.poolers[0].database != DATABASE:
        raise LabError(
            f"the lab runs one PgBouncer for database {DATABASE!r}; the config lists poolers "
            f"{[(pooler.name, pooler.database) for pooler in database.poolers]}"
        )
    for pooler in database.poolers:
        result[pooler.admin_conn_id] = postgres(
            settings.pgbouncer_port,
            PGBOUNCER_ADMIN,
            ADMIN_DATABASE,
            {"ini_path": str(ini_path(settings)), "database": pooler.database},
        )
    for conn_id, port in (
        (config.redis.source_conn_id, settings.redis_source_port),
        (config.redis.target_conn_id, settings.redis_target_port),
    ):
        result[conn_id] = {"conn_type": "redis", "host": host, "port": port, "extra": {"db": 0}}
    if config.redis.endpoint_conn_id:
        result[config.redis.endpoint_conn_id] = {
            "conn_type": "haproxy",
            "host": host,
            "port": settings.redis_endpoint_admin_port,
            "extra": {"backend": REDIS_ENDPOINT_BACKEND},
        }
    result[config.dns.aws_conn_id] = {
        "conn_type": "aws",
        "login": DUMMY_KEY,
        "password": DUMMY_KEY,
        "extra": {"endpoint_url": f"http://{host}:{settings.moto_port}", "region_name": REGION},
    }
    # Both environments may share one Kubernetes connection; then it names no default namespace,
    # and the operators pass each environment's namespace explicitly.
    namespaces: dict[str, set[str]] = {}
    for environment in (config.environments.staging, config.environments.production):
        namespaces.setdefault(environment.kubernetes_conn_id, set()).add(environment.namespace)
    for conn_id, names in namespaces.items():
        extra: dict[str, Any] = {"kube_config_path": str(kubeconfig_path(settings))}
        if len(names) == 1:
            extra["namespace"] = next(iter(names))
        result[conn_id] = {"conn_type": "kubernetes", "extra": extra}
    result[config.traffic.gate.prometheus_conn_id] = {
        "conn_type": "http",
        "host": host,
        "port": settings.prometheus_port,
        "schema": "http",
        "extra": {},
    }
    if config.validation.alertmanager_conn_id:
        result[config.validation.alertmanager_conn_id] = {
            "conn_type": "http",
            "host": host,
            "port": settings.alertmanager_port,
            "schema": "http",
            "extra": {},
        }
    for conn_id, port in (
        (STAGING_CONN_ID, settings.kafka_staging_port),
        (PRODUCTION_CONN_ID, settings.kafka_production_port),
    ):
        result[conn_id] = {"conn_type": "generic", "host": host, "port": port, "extra": {}}
    return result


def environment(settings: LabSettings, config: MigrationConfig | None = None) -> dict[str, str]:
    """AIRFLOW_CONN_<ID> -> Airflow's JSON connection format, one per connection."""
    return {
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(fields, sort_keys=True)
        for conn_id, fields in connections(settings, config).items()
    }


@contextmanager
def connections_in_environment(settings: LabSettings, **extra: str) -> Iterator[dict[str, str]]:
    """The lab's AIRFLOW_CONN_* variables (and `extra`) in os.environ for the block; then as before."""
    variables = {**environment(settings), **extra}
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield variables
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def connections_path(settings: LabSettings) -> Path:
    return settings.data_dir / "connections.json"


def write_connections(settings: LabSettings) -> list[str]:
    """Write both files and the lab's config; returns their paths."""
    config = load_config()
    config_path = write_lab_config(settings)
    json_path = connections_path(settings)
    env_path = settings.data_dir / "airflow.env"
    write_private(json_path, json.dumps(connections(settings, config), indent=2, sort_keys=True) + "\n")
    variables = {**environment(settings, config), CONFIG_ENV: str(config_path)}
    lines = [f"{name}={shlex.quote(value)}\n" for name, value in variables.items()]
    write_private(
        env_path, "# Airflow connections to the lab (python -m lab up); holds passwords.\n" + "".join(lines)
    )
    return [str(json_path), str(env_path), str(config_path)]
