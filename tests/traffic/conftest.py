"""Traffic-phase fixtures: a moto server of our own, a scripted Prometheus, operators run by hand.

Unit tests here need no lab: they use the session's own `moto_server` (tests/conftest.py), and
`FakePrometheus` answers the HTTP API the way Prometheus does, with values the test sets. The lab
tests (test_cutover_lab.py) use the real Prometheus and edge instead.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from pyairtable_migration.hooks.route53 import Route53WeightsHook
from tests.aws import moto_aws_connection
from tests.services.support import free_port

ZONE = "pyairtable.example.com."
RECORDS = [f"{name}.{ZONE}" for name in ("api", "app", "auth")]
STAGING, PRODUCTION = "staging", "production"
ADDRESSES = {STAGING: "127.0.0.2", PRODUCTION: "127.0.0.3"}
AWS_CONN = "traffic_test_aws"
PROMETHEUS_CONN = "traffic_test_prometheus"
DOWN_PROMETHEUS_CONN = "traffic_test_prometheus_down"


@pytest.fixture
def connections(moto_endpoint: str, fake_prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow connections (environment variables) to our moto and our scripted Prometheus."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{AWS_CONN.upper()}", moto_aws_connection(moto_endpoint))
    prometheus = {"conn_type": "http", "host": "127.0.0.1", "port": fake_prometheus.port}
    monkeypatch.setenv(f"AIRFLOW_CONN_{PROMETHEUS_CONN.upper()}", json.dumps(prometheus))
    down = {"conn_type": "http", "host": "127.0.0.1", "port": free_port()}  # nothing listens
    monkeypatch.setenv(f"AIRFLOW_CONN_{DOWN_PROMETHEUS_CONN.upper()}", json.dumps(down))


def route53_client(endpoint: str) -> Any:
    return boto3.client(
        "route53",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def record_set(name: str, identifier: str, weight: int, ttl: int) -> dict[str, Any]:
    return {
        "Name": name,
        "Type": "A",
        "SetIdentifier": identifier,
        "Weight": weight,
        "TTL": ttl,
        "ResourceRecords": [{"Value": ADDRESSES[identifier]}],
    }


@dataclass
class Zone:
    """The hosted zone in our moto, with helpers to read and count what the code under test did."""

    client: Any
    zone_id: str
    change_calls: list[dict[str, Any]] = field(default_factory=list)

    def read(self) -> dict[str, dict[str, tuple[int, int]]]:
        """name -> set identifier -> (weight, TTL), every weighted set in the zone."""
        sets = self.client.list_resource_record_sets(HostedZoneId=self.zone_id)["ResourceRecordSets"]
        result: dict[str, dict[str, tuple[int, int]]] = {}
        for item in sets:
            if "SetIdentifier" in item:
                result.setdefault(item["Name"], {})[item["SetIdentifier"]] = (item["Weight"], item["TTL"])
        return result

    def weights(self) -> dict[str, dict[str, int]]:
        return {name: {i: w for i, (w, _) in by_id.items()} for name, by_id in self.read().items()}

    def set(self, production: int, ttl: int, names: list[str] = RECORDS) -> None:
        changes = [
            {"Action": "UPSERT", "ResourceRecordSet": record_set(name, identifier, weight, ttl)}
            for name in names
            for identifier, weight in ((STAGING, 100 - production), (PRODUCTION, production))
        ]
        self.client.change_resource_record_sets(HostedZoneId=self.zone_id, ChangeBatch={"Changes": changes})


def all_at(production: int, names: list[str] = RECORDS) -> dict[str, dict[str, int]]:
    return {name: {STAGING: 100 - production, PRODUCTION: production} for name in names}


@pytest.fixture
def zone(moto_endpoint: str, connections: None, monkeypatch: pytest.MonkeyPatch) -> Zone:
    """A fresh moto state: the zone with staging 100 / production 0, TTL 300, on every record.

    Every ChangeResourceRecordSets call made through a Route53WeightsHook is recorded in
    `zone.change_calls`, so tests can count batches.
    """
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=5).raise_for_status()
    client = route53_client(moto_endpoint)
    created = client.create_hosted_zone(Name=ZONE, CallerReference=f"test-{time.monotonic()}")
    found = Zone(client, str(created["HostedZone"]["Id"]).rsplit("/", 1)[-1])
    found.set(0, 300)
    original = Route53WeightsHook.get_client_type

    def recording_client(self: Route53WeightsHook, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)

        def record(params: Mapping[str, Any], **_: Any) -> None:
            found.change_calls.append(dict(params))

        client.meta.events.register("before-parameter-build.route53.ChangeResourceRecordSets", record)
        return client

    monkeypatch.setattr(Route53WeightsHook, "get_client_type", recording_client)
    return found


# --- a scripted Prometheus ---------------------------------------------------------------------


class FakePrometheus:
    """Answers /api/v1/query like Prometheus: a vector with one value, an empty vector, or an error.

    `error_ratio` / `p99` are what the gate's two queries return (None: no series); `refuse`
    makes any query containing that text fail as Prometheus fails a bad query (HTTP 400,
    errorType bad_data). `queries` records every query received.
    """

    def __init__(self) -> None:
        self.error_ratio: float | None = 0.0
        self.p99: float | None = 0.05
        self.refuse: str | None = None
        self.queries: list[str] = []
        self.values: Callable[[str], float | None] | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query).get("query", [""])[0]
                code, body = fake.answer(url.path, query)
                payload = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, query: str) -> tuple[int, dict[str, Any]]:
        if path != "/api/v1/query":
            return 404, {"status": "error", "errorType": "not_found", "error": path}
        self.queries.append(query)
        if self.refuse and self.refuse in query:
            return 400, {
                "status": "error",
                "errorType": "bad_data",
                "error": f'1:1: parse error: unexpected "{self.refuse}"',
            }
        if self.values is not None:
            value = self.values(query)
        else:
            value = self.p99 if "histogram_quantile" in query else self.error_ratio
        result = [] if value is None else [{"metric": {}, "value": [time.time(), str(value)]}]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_prometheus() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    yield fake
    fake.close()
