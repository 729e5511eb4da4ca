"""Users' sessions: pods that log users in and write to their sessions in Redis, the load generator's
user journeys through the edge, and the session ledger that proves no acknowledged write is lost."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from kubernetes import client as k8s

from lab.edge import SERVICE_OF_RECORD, lab_edge
from lab.kube.environment import resolve_environment
from lab.kube.pods import PodBehaviour, PodServer
from lab.kube.sessions import RATE_PREFIX, SessionSettings, rate_key, session_key
from lab.loadgen import LoadGenerator
from lab.session_ledger import check_session_ledger
from lab.settings import LabSettings, free_ports
from pyairtable_migration.config import load_config
from tests.own_lab import running_lab
from tests.watchdog import helper_thread

pytestmark = pytest.mark.lab

CONFIG = load_config()
STAGING = CONFIG.environments.staging


# --- one pod, on a Redis of its own ----------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis server of this module's own: the tests below turn it into a replica and back."""
    with running_lab("pyairtable-lab-sessions-", ["redis-source"]) as settings:
        yield f"redis://{settings.host}:{settings.redis_source_port}/0"


@contextlib.contextmanager
def pod(env: dict[str, str]) -> Iterator[str]:
    """A pod serving with `env` as its container's environment; its base URL."""
    behaviour = PodBehaviour.from_container(
        "sessions-test",
        "sessions-0",
        {"app": "sessions", "color": "blue"},
        {"name": "sessions", "image": "ghcr.io/pyairtable/sessions:1.0.0"},
        env,
    )
    server = PodServer(behaviour)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def login(base: str, user: str) -> str:
    answer = requests.post(f"{base}/login", json={"user": user}, timeout=10)
    assert answer.status_code == 201, answer.text
    token = answer.json()["token"]
    assert isinstance(token, str) and token
    return token


def session_write(base: str, token: str) -> requests.Response:
    return requests.post(f"{base}/api/session", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_pod_logs_a_user_in_and_acknowledges_session_writes(redis_url: str) -> None:
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    env = {"REDIS_URL": redis_url, "SESSION_TTL_SECONDS": "120", "RATE_LIMIT_WINDOW_SECONDS": "3600"}
    with pod(env) as base:
        token = login(base, "ada")
        answers = [session_write(base, token) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        bodies = [a.json() for a in answers]
        assert [b["writes"] for b in bodies] == [1, 2, 3]
        assert [b["rate_count"] for b in bodies] == [1, 2, 3]
        assert {(b["user"], b["service"]) for b in bodies} == {("ada", "sessions")}
        assert len({b["rate_window"] for b in bodies}) == 1
        metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert store.hgetall(session_key(token)) == {"user": "ada", "writes": "3"}
    assert 110 < store.ttl(session_key(token)) <= 120
    window = bodies[0]["rate_window"]
    assert store.get(rate_key("ada", window)) == "3"
    assert 0 < store.ttl(rate_key("ada", window)) <= 3600
    assert 'code="201",route="/login"' in metrics
    assert 'code="200",route="/api/session"' in metrics


def test_pod_rejects_a_token_without_a_session(redis_url: str) -> None:
    with pod({"REDIS_URL": redis_url}) as base:
        unknown = session_write(base, "no-such-token")
        anonymous = requests.post(f"{base}/api/session", timeout=10)
        no_user = requests.post(f"{base}/login", json={"name": "ada"}, timeout=10)
    assert (unknown.status_code, unknown.json()["error"]) == (401, "session not found")
    assert anonymous.status_code == 401
    assert no_user.status_code == 400


def test_pod_limits_each_user_per_window(redis_url: str) -> None:
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    env = {"REDIS_URL": redis_url, "RATE_LIMIT_PER_WINDOW": "3", "RATE_LIMIT_WINDOW_SECONDS": "3600"}
    with pod(env) as base:
        grace, other = login(base, "grace"), login(base, "linus")
        answers = [session_write(base, grace) for _ in range(4)]
        others = session_write(base, other)
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[3].json()["rate_count"] == 4
    assert store.hget(session_key(grace), "writes") == "3", "a refused request writes nothing"
    assert (others.status_code, others.json()["rate_count"]) == (200, 1), "each user has a counter of its own"


def test_pod_without_a_session_store_answers_503() -> None:
    with pod({}) as base:
        answers = [
            requests.post(f"{base}/login", json={"user": "ada"}, timeout=10),
            session_write(base, "any"),
        ]
    assert [(a.status_code, a.json()["error"]) for a in answers] == [(503, "no session store")] * 2


def test_session_write_rides_through_a_read_only_server_and_cut_connections(redis_url: str) -> None:
    """As when the endpoint moves: the server answers READONLY, then connections are cut and writes
    go through again; a write waits that out, and fails (503) only past its deadline."""
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    nowhere = free_ports(1)[0]
    try:
        with (
            pod({"REDIS_URL": redis_url}) as base,
            pod({"REDIS_URL": redis_url, "REDIS_DEADLINE_SECONDS": "1"}) as hasty,
        ):
            token = login(base, "margaret")
            assert session_write(base, token).json()["writes"] == 1

            def move() -> None:
                time.sleep(0.7)
                store.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                store.replicaof("NO", "ONE")

            store.replicaof("127.0.0.1", nowhere)
            mover = helper_thread(move, "move-the-endpoint")
            started = time.monotonic()
            answer = session_write(base, token)
            waited = time.monotonic() - started
            mover.join()
            assert (answer.status_code, answer.json()["writes"]) == (200, 2)
            assert waited >= 0.6, "the write was acknowledged while the server was read-only"

            store.replicaof("127.0.0.1", nowhere)
            started = time.monotonic()
            refused = session_write(hasty, token)
            waited = time.monotonic() - started
    finally:
        store.replicaof("NO", "ONE")
    assert (refused.status_code, refused.json()["error"]) == (503, "session store unavailable")
    assert "ReadOnlyError" in refused.json()["detail"]
    assert 0.9 <= waited < 3
    assert store.hget(session_key(token), "writes") == "2"


# --- users through the edge, on the shared lab ------------------------------------------------------


@pytest.fixture
def pods_sessions(lab: LabSettings, kube_api: k8s.ApiClient) -> SessionSettings:
    """The session settings of the staging pods behind the first public record: their environment,
    resolved from their Deployment's env and Secrets as the kubelet resolves it."""
    service = SERVICE_OF_RECORD[CONFIG.dns.records[0].split(".", 1)[0]]
    apps, core = k8s.AppsV1Api(kube_api), k8s.CoreV1Api(kube_api)
    deployment = apps.list_namespaced_deployment(STAGING.namespace, label_selector=f"app={service}").items[0]
    container = kube_api.sanitize_for_serialization(deployment.spec.template.spec.containers[0])

    def read_secret(name: str) -> dict[str, str] | None:
        data = core.read_namespaced_secret(name, STAGING.namespace).data or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    settings = SessionSettings.from_environment(
        resolve_environment(STAGING.namespace, container, read_secret)
    )
    assert settings is not None, f"the {service} pods have no REDIS_URL"
    return settings


@pytest.fixture
def pods_redis(pods_sessions: SessionSettings) -> Iterator[redis.Redis]:
    """The Redis the staging pods use (through the endpoint, if that is what they are given)."""
    client = redis.Redis.from_url(pods_sessions.url, decode_responses=True)
    yield client
    client.close()


def users_load(lab: LabSettings, ledger: Path, users: int, rate: float) -> LoadGenerator:
    return LoadGenerator(
        dsn=None,
        db_rate=0,
        ledger_path=None,
        edge=lab_edge(lab),
        http_rate=0,
        records=CONFIG.dns.records,
        users=users,
        session_rate=rate,
        session_ledger_path=ledger,
    )


def forget_sessions(store: redis.Redis, generator: LoadGenerator, ledger: Path) -> None:
    """The shared lab keeps no session of this test (rate counters expire within their window)."""
    tokens = {line.split()[0] for line in ledger.read_text().splitlines() if line}
    tokens |= {user.token for user in generator.users if user.token}
    store.delete(*(session_key(token) for token in tokens))


def test_users_through_the_edge_lose_no_session_write(
    lab: LabSettings, pods_redis: redis.Redis, tmp_path: Path
) -> None:
    ledger = tmp_path / "sessions.log"
    generator = users_load(lab, ledger, users=20, rate=100)
    generator.start()
    try:
        time.sleep(3)
    finally:
        figures = generator.stop()["sessions"]
    try:
        assert figures["logins_attempted"] == figures["logins_succeeded"] == 20
        assert figures["session_writes"] > 0  # 3 s at 100/s offered; a loaded machine serves fewer
        assert (
            figures["sessions_lost"],
            figures["session_writes_regressed"],
            figures["rate_counters_reset"],
        ) == (
            0,
            0,
            0,
        )
        assert figures["failures"] == {}, figures["errors"]
        assert set(figures["by_environment"]) == {STAGING.set_identifier}
        assert (
            figures["by_environment"][STAGING.set_identifier]["session_writes"] == figures["session_writes"]
        )

        report = check_session_ledger(ledger, pods_redis)
        assert (report.acknowledged, report.sessions, report.lost) == (figures["session_writes"], 20, 0)
        assert report.missing == [] and report.behind == {} and report.expired == 0

        # Behind the users' backs: one session deleted, another's count taken back by two.
        gone, behind = generator.users[0].token, generator.users[1].token
        assert gone and behind
        acknowledged = {user.token: user.writes for user in generator.users}
        pods_redis.delete(session_key(gone))
        pods_redis.hincrby(session_key(behind), "writes", -2)
        report = check_session_ledger(ledger, pods_redis)
        assert report.missing == [gone]
        assert report.behind == {behind: (acknowledged[behind], acknowledged[behind] - 2)}
        assert report.lost == acknowledged[gone] + 2
        # Once its TTL has passed, a missing session is expired, not lost.
        later = check_session_ledger(ledger, pods_redis, now=time.time() + 10**7)
        assert (later.missing, later.expired, later.lost) == ([], 1, 2)
    finally:
        forget_sessions(pods_redis, generator, ledger)


def test_users_notice_a_lost_session_and_a_reset_rate_counter(
    lab: LabSettings, pods_sessions: SessionSettings, pods_redis: redis.Redis, tmp_path: Path
) -> None:
    ledger = tmp_path / "sessions.log"
    # The run fits in one rate window: a counter starting again in a new window is no reset.
    window = pods_sessions.rate_window_seconds
    if window - time.time() % window < 6:
        time.sleep(window - time.time() % window + 0.1)
    generator = users_load(lab, ledger, users=5, rate=50)
    generator.start()
    try:
        time.sleep(1.5)
        counters = [
            key for user in generator.users for key in pods_redis.keys(f"{RATE_PREFIX}{user.user_id}:*")
        ]
        assert len(counters) == 5, "every user wrote"
        pods_redis.delete(*counters)
        time.sleep(1)
        tokens = [str(user.token) for user in generator.users]
        pods_redis.delete(*(session_key(token) for token in tokens))
        time.sleep(1)
    finally:
        figures: dict[str, Any] = generator.stop()["sessions"]
    try:
        assert figures["rate_counters_reset"] == 5, figures
        # Each user's next write finds its session gone (401: it logs in again), unless that write
        # was in flight: it then recreates the session from 0, and the user sees its count go back.
        assert figures["sessions_lost"] + figures["session_writes_regressed"] == 5, figures
        assert figures["sessions_lost"] >= 1
        assert figures["logins_succeeded"] == figures["logins_attempted"] == 5 + figures["sessions_lost"]
        assert figures["failures"] == {}, figures["errors"]
        report = check_session_ledger(ledger, pods_redis)
        assert set(report.missing) | set(report.behind) == set(tokens), report.summary()
        assert report.lost > 0
    finally:
        forget_sessions(pods_redis, generator, ledger)
