"""The weighted edge: simulated clients that reach PyAirtable the way real users do, through DNS.

Each client resolves a public name against the Route53 weighted records (each query picks one
record at random in proportion to the weights, as Route53 does), caches the answer for the
record's TTL, and sends its request to the address in the answer: the staging or production
ingress. So a weight change reaches clients only as their cached answers expire, exactly the
behaviour the traffic phase must wait out.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from lab.metrics import MetricsRegistry
from lab.route53 import moto_client
from lab.settings import LabSettings
from pyairtable_migration.config import load_config

# Which service answers each public name's first label at an environment's ingress.
SERVICE_OF_RECORD = {"api": "api-gateway", "app": "web-bff", "auth": "auth-frontend"}
# The public name whose host routes `/<service>/...` to every service it does not answer itself.
API_LABEL = "api"


def service_of(record: str) -> str:
    label = record.split(".", 1)[0]
    return SERVICE_OF_RECORD.get(label, label)


def public_routes(records: Sequence[str], services: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(public name, service) for every service the load reaches: each name's own service, and
    every other service of `services` through the API's name (its ingress routes `/<service>/`),
    so each service serves real requests and has a latency of its own to judge."""
    own = {service_of(record): record for record in records}
    api = next((record for record in records if record.split(".", 1)[0] == API_LABEL), records[0])
    return [(own.get(service, api), service) for service in dict.fromkeys([*own, *services])]


@dataclass(frozen=True)
class WeightedAnswer:
    environment: str
    address: str
    weight: int
    ttl: int


class Route53View:
    """Weighted answers for the names of one hosted zone, read from the Route53 API.

    The record sets are re-read at most every `refresh_seconds`, like a name server that
    picks up a change shortly after Route53 reports it INSYNC.
    """

    def __init__(self, route53: Any, zone_name: str, refresh_seconds: float = 0.5) -> None:
        self._route53 = route53
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[WeightedAnswer]]] = {}
        zones = route53.list_hosted_zones_by_name(DNSName=zone_name)["HostedZones"]
        matching = [zone["Id"] for zone in zones if zone["Name"] == zone_name]
        if not matching:
            raise LookupError(f"hosted zone {zone_name} not found")
        self.zone_id = matching[0]

    def record_sets(self, name: str) -> list[WeightedAnswer]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
            if cached and now - cached[0] < self._refresh_seconds:
                return cached[1]
        answers = self._read(name)
        with self._lock:
            self._cache[name] = (now, answers)
        return answers

    def _read(self, name: str) -> list[WeightedAnswer]:
        page = self._route53.list_resource_record_sets(
            HostedZoneId=self.zone_id, StartRecordName=name, StartRecordType="A"
        )
        answers = [
            WeightedAnswer(
                environment=record["SetIdentifier"],
                address=record["ResourceRecords"][0]["Value"],
                weight=int(record["Weight"]),
                ttl=int(record["TTL"]),
            )
            for record in page["ResourceRecordSets"]
            if record["Name"] == name and record["Type"] == "A" and "Weight" in record
        ]
        if not answers:
            raise LookupError(f"no weighted A records for {name}")
        return answers

    def query(self, name: str, rng: random.Random) -> WeightedAnswer:
        """One DNS answer; with every weight at 0, Route53 answers each record equally often."""
        answers = self.record_sets(name)
        weights = [answer.weight for answer in answers]
        if not any(weights):
            weights = [1] * len(answers)
        return rng.choices(answers, weights=weights)[0]


class SimulatedClient:
    """One user's resolver cache: an answer is kept until its TTL runs out."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._answers: dict[str, tuple[float, WeightedAnswer]] = {}

    def resolve(self, view: Route53View, name: str) -> WeightedAnswer:
        now = time.monotonic()
        cached = self._answers.get(name)
        if cached and now < cached[0]:
            return cached[1]
        answer = view.query(name, self.rng)
        self._answers[name] = (now + answer.ttl, answer)
        return answer


@dataclass(frozen=True)
class EdgeResult:
    record: str
    service: str
    environment: str
    status: int
    seconds: float
    error: str = ""
    body: bytes = b""


class Edge:
    """A population of clients sending requests through DNS to the environments' ingresses."""

    def __init__(
        self,
        view: Route53View,
        ingress_port: int,
        clients: int = 200,
        timeout_seconds: float = 5.0,
        registry: MetricsRegistry | None = None,
        seed: int = 0,
    ) -> None:
        self.view = view
        self.ingress_port = ingress_port
        self.timeout_seconds = timeout_seconds
        self._clients = [SimulatedClient(seed * 100_003 + index) for index in range(clients)]
        self._client_locks = [threading.Lock() for _ in self._clients]
        self._pick = random.Random(seed)
        self._pick_lock = threading.Lock()
        self._sessions = threading.local()
        registry = registry or MetricsRegistry()
        self.requests_total = registry.counter(
            "lab_edge_requests_total", "Requests sent through DNS, by environment reached and code."
        )
        self.latency = registry.histogram("lab_edge_request_duration_seconds", "Edge request latency.")

    def _session(self) -> requests.Session:
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        return session

    def resolve(self, record: str, client: int | None = None) -> WeightedAnswer:
        """What client number `client` (by default one chosen at random) would connect to now."""
        if client is None:
            with self._pick_lock:
                index = self._pick.randrange(len(self._clients))
        else:
            index = client % len(self._clients)
        with self._client_locks[index]:
            return self._clients[index].resolve(self.view, record)

    def request(
        self,
        record: str,
        path: str = "/health",
        service: str | None = None,
        *,
        method: str = "GET",
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        client: int | None = None,
        timeout_seconds: float | None = None,
    ) -> EdgeResult:
        """One request to the service behind `record` (by default the public name's service).

        `client` pins the resolver cache a user keeps, so a user stays on one environment until
        its cached answer expires; without it, each request comes from a random client.
        """
        answer = self.resolve(record, client)
        service = service or service_of(record)
        url = f"http://{answer.address}:{self.ingress_port}/{service}{path}"
        started = time.perf_counter()
        body = b""
        try:
            response = self._session().request(
                method,
                url,
                json=json_body,
                headers=headers,
                timeout=timeout_seconds or self.timeout_seconds,
            )
            status, error, body = (
                response.status_code,
                "" if response.ok else response.text[:200],
                response.content,
            )
        except requests.RequestException as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"[:200]
        seconds = time.perf_counter() - started
        labels: Mapping[str, str] = {"environment": answer.environment, "record": record, "code": str(status)}
        self.requests_total.inc(labels)
        self.latency.observe({"environment": answer.environment, "record": record}, seconds)
        return EdgeResult(record, service, answer.environment, status, seconds, error, body)


def lab_edge(settings: LabSettings, registry: MetricsRegistry | None = None, clients: int = 200) -> Edge:
    """An edge over the lab's Route53 (moto) and ingresses, for the configured hosted zone."""
    view = Route53View(moto_client(settings), load_config().dns.hosted_zone)
    return Edge(view, settings.ingress_port, clients=clients, registry=registry)
