"""The weighted edge, the load generator and the ledger, on the running lab."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from kubernetes import client as k8s

from lab.edge import Edge, lab_edge
from lab.ledger import check_ledger
from lab.loadgen import LoadGenerator, app_dsn
from lab.route53 import find_zone_id, moto_client
from lab.settings import LabSettings
from pyairtable_migration.config import load_config
from pyairtable_migration.operators.validation import LatencySloOperator, judge_latency

pytestmark = pytest.mark.lab

CONFIG = load_config()
RECORD = CONFIG.dns.records[0]
STAGING = CONFIG.environments.staging
PRODUCTION = CONFIG.environments.production
PROBE = "edge-probe"


def set_record(settings: LabSettings, record: str, weights: dict[str, int], ttl: int) -> None:
    route53 = moto_client(settings)
    zone_id = find_zone_id(route53, CONFIG.dns.hosted_zone)
    sets = route53.list_resource_record_sets(
        HostedZoneId=zone_id, StartRecordName=record, StartRecordType="A"
    )
    changes = []
    for record_set in sets["ResourceRecordSets"]:
        if record_set["Name"] == record and record_set.get("SetIdentifier") in weights:
            updated = {**record_set, "Weight": weights[record_set["SetIdentifier"]], "TTL": ttl}
            changes.append({"Action": "UPSERT", "ResourceRecordSet": updated})
    assert len(changes) == len(weights), sets
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})


@pytest.fixture
def probe_service(lab: LabSettings, kube_api: k8s.ApiClient) -> Iterator[str]:
    """A tiny service in both namespaces, so requests to either ingress are answered."""
    apps, core = k8s.AppsV1Api(kube_api), k8s.CoreV1Api(kube_api)
    for namespace in (STAGING.namespace, PRODUCTION.namespace):
        labels = {"app": PROBE, "color": "blue"}
        apps.create_namespaced_deployment(
            namespace,
            {
                "metadata": {"name": PROBE, "labels": labels},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": PROBE, "image": "ghcr.io/pyairtable/probe:1.0.0"}]},
                    },
                },
            },
        )
        core.create_namespaced_service(
            namespace, {"metadata": {"name": PROBE}, "spec": {"selector": labels, "ports": [{"port": 80}]}}
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = [
            apps.read_namespaced_deployment(PROBE, ns).status.ready_replicas or 0
            for ns in (STAGING.namespace, PRODUCTION.namespace)
        ]
        if ready == [2, 2]:
            break
        time.sleep(0.2)
    yield PROBE
    for namespace in (STAGING.namespace, PRODUCTION.namespace):
        apps.delete_namespaced_deployment(PROBE, namespace)
        core.delete_namespaced_service(PROBE, namespace)


@pytest.fixture
def short_ttl_record(lab: LabSettings) -> Iterator[str]:
    """The first public record with a 5 s TTL; restored to staging 100 / TTL 300 afterwards."""
    set_record(lab, RECORD, {STAGING.set_identifier: 100, PRODUCTION.set_identifier: 0}, ttl=5)
    yield RECORD
    set_record(lab, RECORD, {STAGING.set_identifier: 100, PRODUCTION.set_identifier: 0}, ttl=300)


def send(edge: Edge, record: str, service: str, count: int) -> list[Any]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda _: edge.request(record, "/health", service=service), range(count)))


def production_share(results: list[Any]) -> float:
    reached = Counter(result.environment for result in results)
    return 100 * reached[PRODUCTION.set_identifier] / len(results)


def test_edge_split_follows_weights_once_ttls_expire(
    lab: LabSettings, probe_service: str, short_ttl_record: str
) -> None:
    edge = lab_edge(lab, clients=2000)
    for _ in range(20_000):  # every client resolves and caches the all-staging answer
        edge.resolve(short_ttl_record)

    set_record(lab, short_ttl_record, {STAGING.set_identifier: 70, PRODUCTION.set_identifier: 30}, ttl=5)
    time.sleep(0.6)  # the view re-reads Route53 at most every 0.5 s
    before_expiry = send(edge, short_ttl_record, probe_service, 300)
    assert production_share(before_expiry) < 15, "cached answers must keep clients on staging"

    time.sleep(5.5)
    results = send(edge, short_ttl_record, probe_service, 10_000)
    assert [r for r in results if r.status != 200] == []
    assert abs(production_share(results) - 30) <= 3, production_share(results)


def test_ledger_check_finds_a_deleted_and_a_changed_row(lab: LabSettings, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.log"
    generator = LoadGenerator(dsn=app_dsn(lab), db_rate=200, ledger_path=ledger, edge=None, http_rate=0)
    generator.start()
    time.sleep(2)
    figures = generator.stop()
    assert figures["db_failures"] == 0
    assert figures["db_commits"] >= 200

    with psycopg2.connect(app_dsn(lab)) as connection:
        report = check_ledger(ledger, connection)
        assert (report.checked, report.lost) == (figures["db_commits"], 0)
        acknowledged = sorted(int(line.split()[0]) for line in ledger.read_text().splitlines())
        deleted, changed = acknowledged[3], acknowledged[7]
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM records WHERE id = %s", (deleted,))
            cursor.execute(
                "UPDATE records SET data = data || '{\"tampered\": true}' WHERE id = %s", (changed,)
            )
        connection.commit()
        report = check_ledger(ledger, connection)
    assert report.missing == [deleted]
    assert report.changed == [changed]


def test_load_generator_http_through_the_edge(lab: LabSettings) -> None:
    records = CONFIG.dns.records
    generator = LoadGenerator(
        dsn=None, db_rate=0, ledger_path=None, edge=lab_edge(lab), http_rate=100, records=records
    )
    generator.start()
    time.sleep(3)
    figures = generator.stop()
    assert figures["http_requests"] >= 200
    assert figures["http_failures"] == 0, figures["http_errors"]
    assert set(figures["http_by_environment"]) == {STAGING.set_identifier}


def test_the_load_reaches_every_service_and_each_gets_a_latency_verdict(lab: LabSettings) -> None:
    """Each service, not only the three public ones, serves real requests through the edge, so the
    SLO check judges every service from measured latency (the shipped config fails one with none)."""
    services = {name: node.slo_class for name, node in CONFIG.deployable.items()}
    slos = LatencySloOperator(
        task_id="latency_slos",
        prometheus_conn_id="pyairtable_prometheus",
        services=services,
        slo_classes=dict(CONFIG.slo_classes),
        prometheus_labels=STAGING.prometheus_labels,
        window="1m",
    )
    generator = LoadGenerator(
        dsn=None,
        db_rate=0,
        ledger_path=None,
        edge=lab_edge(lab),
        http_rate=120,
        records=CONFIG.dns.records,
        services=list(services),
    )
    generator.start()
    try:
        # Prometheus scrapes each second; a rate needs two scrapes of a counter that grew.
        deadline = time.monotonic() + 60
        while any((measured := slos.measure()).get(name) is None for name in services):
            assert time.monotonic() < deadline, f"services without measured latency: {measured}"
            time.sleep(1)
    finally:
        figures = generator.stop()
    assert figures["http_failures"] == 0, figures["http_errors"]
    # Budgets are another test's matter (a loaded machine slows a health check): here, a verdict each.
    verdicts = judge_latency(measured, services, dict(CONFIG.slo_classes))
    assert {name: result["verdict"] for name, result in verdicts.items() if result["p95_ms"] is None} == {}
    assert set(verdicts) == set(services)
