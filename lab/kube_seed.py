"""The Kubernetes API (emulated: no kube-apiserver can be installed on these machines) and its seed.

`python -m lab.kube` serves the API subset the operators use; this module starts it, writes
.lab/kubeconfig, and seeds staging through the real kubernetes client, as an operator would:
for every deployable service a Deployment `<svc>-blue`, an active Service `<svc>` and a preview
Service `<svc>-preview`, both selecting the blue pods. Production starts as an empty namespace.
Objects that already exist are left alone, so `up` during a migration changes nothing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from lab.credentials import APP_ROLE, secrets
from lab.kafka_lab import RECORD_EVENTS_TOPIC, KafkaBroker
from lab.postgres import DATABASE
from lab.processes import Binary, Component, LabError, State, answers_http
from lab.settings import REPO_ROOT, LabSettings
from pyairtable_migration.config import MigrationConfig, ServiceNode, load_config
from pyairtable_migration.kubernetes.platform_objects import POD_SECURITY_LABEL

CLUSTER = "pyairtable-lab"
SERVICE_PORT = 80
READY_TIMEOUT_SECONDS = 30.0
# Added latency per request of a pod, by SLO class: AI calls are slow, health checks are not.
BASE_LATENCY_MS = {"ai": 150, "business": 10, "auth": 5, "health": 2}


def kubeconfig_path(settings: LabSettings) -> Path:
    return settings.data_dir / "kubeconfig"


def write_kubeconfig(settings: LabSettings, config: MigrationConfig) -> Path:
    """One cluster, no auth (plain HTTP on loopback), a context per environment's namespace."""
    namespaces = [config.environments.staging.namespace, config.environments.production.namespace]
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CLUSTER, "cluster": {"server": f"http://{settings.host}:{settings.kube_api_port}"}}
        ],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [
            {"name": namespace, "context": {"cluster": CLUSTER, "user": "lab", "namespace": namespace}}
            for namespace in namespaces
        ],
        "current-context": namespaces[0],
        "preferences": {},
    }
    path = kubeconfig_path(settings)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def api_client(settings: LabSettings) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(kubeconfig_path(settings)))


def image_tag(image: str) -> str:
    return image.rsplit(":", 1)[1]


def service_environment(settings: LabSettings, cluster: Literal["staging", "production"]) -> dict[str, str]:
    """What a service of one environment connects to.

    Writers go through one endpoint per store, which the switchover moves: PgBouncer for
    PostgreSQL, HAProxy (lab/redis_endpoint.py) for Redis, so both environments share one Redis
    primary (one set of sessions) throughout the cutover. Kafka is the environment's own cluster:
    its events reach production's consumers through the migration's mirror (lab.kube.events).
    """
    password = secrets(settings)[APP_ROLE]
    return {
        "DATABASE_URL": f"postgresql://{APP_ROLE}:{password}@{settings.host}:{settings.pgbouncer_port}/{DATABASE}",
        "REDIS_URL": f"redis://{settings.host}:{settings.redis_endpoint_port}/0",
        "KAFKA_BOOTSTRAP": KafkaBroker(cluster).bootstrap(settings),
        "KAFKA_EVENTS_TOPIC": RECORD_EVENTS_TOPIC,
        "KAFKA_LEDGER_DIR": str(kafka_ledger_dir(settings)),
    }


def kafka_ledger_dir(settings: LabSettings) -> Path:
    """Where the pods keep the Kafka ledger: events acknowledged to them, events their workers processed."""
    return settings.data_dir / "kafka-ledger"


def secret_manifest(name: str, namespace: str, values: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": values,
    }


def deployment_manifest(
    name: str, service: ServiceNode, config: MigrationConfig, settings: LabSettings
) -> dict[str, Any]:
    """Staging's blue Deployment; its connection URLs come from a Secret when staging names one."""
    staging = config.environments.staging
    labels = {"app": name, "color": "blue", "version": image_tag(service.image)}
    env = {} if staging.service_secret else service_environment(settings, "staging")
    env |= {
        "HEALTH_PATH": service.health_path,
        "BASE_LATENCY_MS": str(BASE_LATENCY_MS.get(service.slo_class, 10)),
    }
    container: dict[str, Any] = {
        "name": name,
        "image": service.image,
        "ports": [{"name": "http", "containerPort": service.port}],
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "readinessProbe": {"httpGet": {"path": service.health_path, "port": service.port}},
    }
    if staging.service_secret:
        container["envFrom"] = [{"secretRef": {"name": staging.service_secret}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{name}-blue", "namespace": staging.namespace, "labels": labels},
        "spec": {
            "replicas": service.replicas,
            "selector": {"matchLabels": {"app": name, "color": "blue"}},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def consumer_deployments(config: MigrationConfig) -> dict[str, str]:
    """Consumer group -> the Deployment of its members, from the config's kafka section."""
    if config.kafka is None:
        return {}
    return {group: consumer.deployment for group, consumer in config.kafka.consumer_groups.items()}


def worker_manifest(
    name: str, group: str, namespace: str, service_secret: str | None, running: bool, env: dict[str, str]
) -> dict[str, Any]:
    """A consumer group's worker: one member per pod (lab.kube.events), none where not `running`;
    its connections from the environment's service Secret, or `env` where there is none."""
    labels = {"app": name, "role": "consumer"}
    worker_env = {
        **({} if service_secret else env),
        "KAFKA_CONSUMER_GROUP": group,
        "KAFKA_CONSUMED_TOPICS": RECORD_EVENTS_TOPIC,
    }
    container: dict[str, Any] = {
        "name": name,
        "image": f"ghcr.io/pyairtable/{name}:1.0.0",
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [{"name": key, "value": value} for key, value in worker_env.items()],
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}},
    }
    if service_secret:
        container["envFrom"] = [{"secretRef": {"name": service_secret}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1 if running else 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def service_manifest(name: str, service: ServiceNode, namespace: str, preview: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"{name}-preview" if preview else name,
            "namespace": namespace,
            "labels": {"app": name, "role": "preview" if preview else "active"},
        },
        "spec": {
            "selector": {"app": name, "color": "blue"},
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": service.port}],
        },
    }


def _create_missing(create: Any, *args: Any) -> bool:
    """Create an object; False if it already exists (409), so a second seed changes nothing."""
    try:
        create(*args)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


def seed_kubernetes(settings: LabSettings, config: MigrationConfig) -> str:
    write_kubeconfig(settings, config)
    staging = config.environments.staging.namespace
    with api_client(settings) as api:
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        created = 0
        clusters: tuple[Literal["staging", "production"], ...] = ("staging", "production")
        for cluster, environment in zip(
            clusters, (config.environments.staging, config.environments.production), strict=True
        ):
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": environment.namespace}}
            created += _create_missing(core.create_namespace, body)
            if environment.service_secret:
                created += _create_missing(
                    core.create_namespaced_secret,
                    environment.namespace,
                    secret_manifest(
                        environment.service_secret,
                        environment.namespace,
                        service_environment(settings, cluster),
                    ),
                )
            # The consumer groups' workers, as the platform deploys them: production's at 0 replicas
            # until the migration moves their group there.
            for group, deployment in consumer_deployments(config).items():
                created += _create_missing(
                    apps.create_namespaced_deployment,
                    environment.namespace,
                    worker_manifest(
                        deployment,
                        group,
                        environment.namespace,
                        environment.service_secret,
                        running=cluster == "staging",
                        env=service_environment(settings, cluster),
                    ),
                )
        # Production's owners enforce the restricted Pod Security Standards; the migration only checks it.
        core.patch_namespace(
            config.environments.production.namespace,
            {"metadata": {"labels": {POD_SECURITY_LABEL: config.platform.pod_security_level}}},
        )
        for name, service in config.deployable.items():
            created += _create_missing(
                apps.create_namespaced_deployment,
                staging,
                deployment_manifest(name, service, config, settings),
            )
            for preview in (False, True):
                created += _create_missing(
                    core.create_namespaced_service, staging, service_manifest(name, service, staging, preview)
                )
        waiting = wait_for_deployments(
            apps,
            staging,
            {f"{name}-blue" for name in config.deployable} | set(consumer_deployments(config).values()),
        )
    if waiting:
        raise LabError(
            f"staging deployments not ready after {READY_TIMEOUT_SECONDS:.0f} s: {', '.join(sorted(waiting))}"
        )
    return f"{created} objects created; {len(config.deployable)} staging deployments ready"


def wait_for_deployments(apps: k8s.AppsV1Api, namespace: str, names: set[str]) -> set[str]:
    """Names still not fully ready when the timeout passes (empty when all are)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        listed = apps.list_namespaced_deployment(namespace)
        ready = {
            item.metadata.name
            for item in listed.items
            if (item.status.ready_replicas or 0) >= (item.spec.replicas or 0)
        }
        waiting = names - ready
        if not waiting or time.monotonic() > deadline:
            return waiting
        time.sleep(0.2)


class KubeApi(Component):
    name = "kube-api"
    binary = Binary(Path(sys.executable), "create the venv (`make bootstrap`)")

    scheme = "http"

    def port(self, settings: LabSettings) -> int:
        return settings.kube_api_port

    def listens(self, settings: LabSettings) -> list[tuple[str, int]]:
        return [
            *super().listens(settings),
            (settings.staging_ingress_host, settings.ingress_port),
            (settings.production_ingress_host, settings.ingress_port),
        ]

    def command(self, settings: LabSettings) -> list[str]:
        environments = load_config().environments
        return [
            str(self.binary.path),
            "-m",
            "lab.kube",
            "--host",
            settings.host,
            "--port",
            str(settings.kube_api_port),
            "--ingress",
            f"{settings.staging_ingress_host}:{settings.ingress_port}={environments.staging.namespace}",
            "--ingress",
            f"{settings.production_ingress_host}:{settings.ingress_port}={environments.production.namespace}",
        ]

    def environment(self, settings: LabSettings) -> dict[str, str]:
        paths = [str(REPO_ROOT / "plugins"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
        return {"PYTHONPATH": os.pathsep.join(path for path in paths if path), "PYTHONUNBUFFERED": "1"}

    def probe(self, settings: LabSettings) -> bool:
        return answers_http(f"http://{settings.host}:{settings.kube_api_port}/readyz")

    def seed(self, settings: LabSettings, scale: int, state: State) -> str | None:
        note = seed_kubernetes(settings, load_config())
        return (
            f"{note}; ingress staging http://{settings.staging_ingress_host}:{settings.ingress_port}, "
            f"production http://{settings.production_ingress_host}:{settings.ingress_port}"
        )
