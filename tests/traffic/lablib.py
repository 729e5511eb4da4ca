"""A private traffic lab and the instruments the cutover tests and benchmark read.

The lab's own components (lab.route53.Moto, lab.kube_seed.KubeApi, lab.prometheus.Prometheus),
started on free ports with a data directory of their own: the tests move weights and break
production's pods, which must never disturb another session using the shared lab. Load runs in
a separate process (tests.traffic.load_worker), so the Airflow run in the test process cannot
slow it down (or the other way round), and records every request: when, where it landed, status.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from lab.kube_seed import api_client
from lab.route53 import find_zone_id, moto_client
from lab.settings import REPO_ROOT, LabSettings
from lab.synthetic_graph import real_document
from pyairtable_migration.config import MigrationConfig, ServiceNode, load_config, parse_config
from tests.own_lab import running_lab

CONFIG = load_config()
RECORDS = list(CONFIG.dns.records)
STAGING = CONFIG.environments.staging
PRODUCTION = CONFIG.environments.production
# The services behind the public records (lab.edge.SERVICE_OF_RECORD).
PUBLIC_SERVICES = ("api-gateway", "web-bff", "auth-frontend")
LAB_COMPONENTS = ("moto", "kube-api", "prometheus")


def private_lab() -> contextlib.AbstractContextManager[LabSettings]:
    """Moto, the Kubernetes emulator (staging seeded) and Prometheus, on free ports; the lab's
    Airflow connections in os.environ while it runs. Everything is stopped and purged after."""
    return running_lab("pyairtable-traffic-lab-", LAB_COMPONENTS)


# --- DNS ------------------------------------------------------------------------------------------


def set_dns(settings: LabSettings, production: int, ttl: int) -> None:
    """Every public record: production `production`, staging the rest, TTL `ttl` (one batch)."""
    client = moto_client(settings)
    zone_id = find_zone_id(client, CONFIG.dns.hosted_zone)
    changes = []
    for record_set in client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]:
        identifier = record_set.get("SetIdentifier")
        if record_set["Name"] in RECORDS and identifier in (
            STAGING.set_identifier,
            PRODUCTION.set_identifier,
        ):
            weight = production if identifier == PRODUCTION.set_identifier else 100 - production
            changes.append(
                {"Action": "UPSERT", "ResourceRecordSet": {**record_set, "Weight": weight, "TTL": ttl}}
            )
    assert len(changes) == 2 * len(RECORDS), changes
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})


def read_dns(client: Any, zone_id: str | None) -> dict[str, tuple[int, int]]:
    """set identifier -> (weight, TTL) of the first public record, with every record checked equal."""
    seen: dict[str, set[tuple[int, int]]] = {}
    for record_set in client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]:
        if record_set["Name"] in RECORDS and "SetIdentifier" in record_set:
            seen.setdefault(record_set["SetIdentifier"], set()).add((record_set["Weight"], record_set["TTL"]))
    return {identifier: min(values) for identifier, values in seen.items()}


@dataclass
class DnsMonitor:
    """Polls the records every `interval` s on a thread: (time, production weight, max TTL) on change."""

    settings: LabSettings
    interval: float = 0.05
    changes: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> DnsMonitor:
        client = moto_client(self.settings)
        zone_id = find_zone_id(client, CONFIG.dns.hosted_zone)

        def poll() -> None:
            while not self._stop.is_set():
                state = read_dns(client, zone_id)
                production = state[PRODUCTION.set_identifier][0]
                ttl = max(ttl for _, ttl in state.values())
                if not self.changes or self.changes[-1][1:] != (production, ttl):
                    self.changes.append((time.time(), production, ttl))
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=poll, name="dns-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def weight_changes(self) -> list[tuple[float, int]]:
        """(time, production weight) each time the weight changed (TTL-only changes left out)."""
        result: list[tuple[float, int]] = []
        for at, weight, _ in self.changes:
            if not result or result[-1][1] != weight:
                result.append((at, weight))
        return result

    def first_time(self, weight: int) -> float | None:
        return next((at for at, w, _ in self.changes if w == weight), None)


# --- production pods ------------------------------------------------------------------------------


def production_deployment(name: str, service: ServiceNode, suffix: str = "") -> dict[str, Any]:
    """`<svc>-blue` in production, the configured image (tag + suffix, e.g. `-5xx`)."""
    labels = {"app": name, "color": "blue"}
    container = {
        "name": name,
        "image": service.image + suffix,
        "ports": [{"name": "http", "containerPort": service.port}],
        "env": [
            {"name": "HEALTH_PATH", "value": service.health_path},
            {"name": "BASE_LATENCY_MS", "value": "2"},
        ],
        "readinessProbe": {"httpGet": {"path": service.health_path, "port": service.port}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{name}-blue", "namespace": PRODUCTION.namespace, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def deploy_production(
    settings: LabSettings, suffix: str = "", wait_seconds: float = 30, faults: Mapping[str, str] | None = None
) -> None:
    """Create or replace the public services' production Deployments and Services; wait until ready.
    Every image gets `suffix` (e.g. `-5xx`), or a service named in `faults` the suffix given there."""
    with api_client(settings) as api:
        apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
        for name in PUBLIC_SERVICES:
            service = CONFIG.services[name]
            assert isinstance(service, ServiceNode)
            body = production_deployment(name, service, (faults or {}).get(name, suffix))
            try:
                apps.read_namespaced_deployment(f"{name}-blue", PRODUCTION.namespace)
                apps.patch_namespaced_deployment(f"{name}-blue", PRODUCTION.namespace, body)
            except k8s.exceptions.ApiException as exc:
                if exc.status != 404:
                    raise
                apps.create_namespaced_deployment(PRODUCTION.namespace, body)
            selector = {"app": name, "color": "blue"}
            with contextlib.suppress(k8s.exceptions.ApiException):
                core.create_namespaced_service(
                    PRODUCTION.namespace,
                    {
                        "metadata": {"name": name},
                        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": service.port}]},
                    },
                )
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            ready = []
            for name in PUBLIC_SERVICES:
                status = apps.read_namespaced_deployment(f"{name}-blue", PRODUCTION.namespace).status
                ready.append((status.updated_replicas or 0) >= 2 and (status.ready_replicas or 0) >= 2)
            if all(ready):
                return
            time.sleep(0.2)
    raise TimeoutError("production deployments not ready")


def wait_until_production_answers(
    settings: LabSettings, wait_seconds: float = 60, in_a_row: int = 20
) -> None:
    """Every public service answers its health path with 200 through production's ingress `in_a_row`
    times in a row: the pods of an image replaced a moment ago no longer serve (they drain a while)."""
    deadline = time.monotonic() + wait_seconds
    ingress = f"http://{settings.production_ingress_host}:{settings.ingress_port}"
    for name in PUBLIC_SERVICES:
        url = f"{ingress}/{name}{CONFIG.services[name].health_path}"  # type: ignore[union-attr]
        streak = 0
        while streak < in_a_row:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    streak = streak + 1 if answer.status == 200 else 0
            except OSError:
                streak = 0
            if streak == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"production's {name} did not answer 200 {in_a_row} times in a row")
                time.sleep(0.2)


# --- load -----------------------------------------------------------------------------------------


@dataclass
class Requests:
    """Every request the load worker sent: sorted times, where each landed, its status."""

    times: list[float]
    environments: list[str]
    statuses: list[int]
    report: dict[str, Any]

    def between(self, start: float, end: float) -> range:
        return range(bisect.bisect_left(self.times, start), bisect.bisect_left(self.times, end))

    def production_share(self, start: float, end: float) -> tuple[float, int]:
        """(% of requests in [start, end) that reached production, how many requests)."""
        window = self.between(start, end)
        if not window:
            return 0.0, 0
        reached = sum(1 for i in window if self.environments[i] == PRODUCTION.set_identifier)
        return 100 * reached / len(window), len(window)

    def failures(self) -> list[int]:
        return [i for i, status in enumerate(self.statuses) if not 200 <= status < 400]

    def last_at(self, environment: str, after: float = 0.0) -> float | None:
        found = None
        for i in self.between(after, float("inf")):
            if self.environments[i] == environment:
                found = self.times[i]
        return found

    def first_failure_at(self, environment: str, after: float = 0.0) -> float | None:
        for i in self.between(after, float("inf")):
            if self.environments[i] == environment and not 200 <= self.statuses[i] < 400:
                return self.times[i]
        return None

    def rate(self) -> float:
        if len(self.times) < 2:
            return 0.0
        return len(self.times) / (self.times[-1] - self.times[0])


@contextlib.contextmanager
def load(
    settings: LabSettings, rate: float, clients: int = 1000, workers: int = 32
) -> Iterator[list[Requests]]:
    """Steady requests through the weighted edge from another process; the list gets the
    Requests once the block ends."""
    directory = Path(tempfile.mkdtemp(prefix="traffic-load-"))
    out = directory / "requests.json"
    command = [
        sys.executable,
        "-m",
        "tests.traffic.load_worker",
        f"--rate={rate}",
        f"--clients={clients}",
        f"--workers={workers}",
        f"--out={out}",
    ]
    env = {**os.environ, **settings.to_environment()}
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "running":
        process.kill()
        raise RuntimeError("the load worker did not start")
    result: list[Requests] = []
    try:
        yield result
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    data = json.loads(out.read_text())
    shutil.rmtree(directory, ignore_errors=True)
    result.append(Requests(data["times"], data["environments"], data["statuses"], data["report"]))


# --- the DAG --------------------------------------------------------------------------------------

NOT_TRAFFIC = r"^(preflight|database|services|switchover|validation)\..*"


def cutover_config(
    cutover_ttl: int, sample_seconds: float = 1.0, window: str = "5s", **approvals: Any
) -> MigrationConfig:
    """The real configuration with a short cutover TTL and a fast gate, for a test-sized run;
    `approvals` replace keys of its `approvals` section (`approval_before` goes to `traffic`)."""
    document = real_document()
    if "approval_before" in approvals:
        document["traffic"]["approval_before"] = approvals.pop("approval_before")
    document["approvals"].update(approvals)
    document["dns"]["cutover_ttl_seconds"] = cutover_ttl
    document["traffic"]["gate"].update(sample_seconds=sample_seconds, window=window)
    # The traffic phase alone: the lab's writers stay on the source (tests/rollback has the guard).
    document["traffic"]["require_writers_on_target"] = False
    # This lab runs only the public services in production; the load test, which drives every
    # service, runs in the e2e, and alone (tests/traffic/test_load_test.py, and over this lab's
    # public services in test_cutover_lab.py).
    document["traffic"].pop("load_test", None)
    # Nor Kafka brokers: the mirror's drain after finalize runs in tests/kafka and the e2e.
    document.pop("kafka", None)
    return parse_config(yaml.safe_dump(document))


def clock_to_epoch(clock: str) -> float:
    """A gate sample's `HH:MM:SS.mmm` (UTC, today) as epoch seconds."""
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return datetime.strptime(f"{today} {clock}", "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def task_states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
