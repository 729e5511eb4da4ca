"""The Redis write endpoint (HAProxy in TCP mode) moved through its runtime API by RedisEndpointHook.

A lab of its own with only the two Redis servers and the endpoint: writes through the endpoint land
on the source; `route_to` sends new connections to the target and cuts the open ones, whose clients
reconnect through the endpoint and land on the target; a second call changes nothing; an unknown
address, an unknown backend and two routed servers are refused by name; the routing survives a
restart of the endpoint, not a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from lab.redis_endpoint import runtime_api
from lab.settings import LabSettings
from lab.supervisor import restart_component, start_component, stop_component
from pyairtable_migration.config import load_config
from pyairtable_migration.hooks.database import MigrationError
from pyairtable_migration.hooks.redis_endpoint import EndpointServer, RedisEndpointHook
from tests.own_lab import running_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]
CONN_ID = load_config().redis.endpoint_conn_id or "redis_endpoint"


@pytest.fixture(scope="module")
def endpoint_lab() -> Iterator[LabSettings]:
    with running_lab("pyairtable-endpoint-test-", ("redis-source", "redis-target", "redis-endpoint")) as lab:
        yield lab


@pytest.fixture
def settings(endpoint_lab: LabSettings) -> LabSettings:
    """The lab with the endpoint routed to the source alone, set without the hook under test."""
    runtime_api(
        endpoint_lab,
        "set server redis/target state maint; set server redis/source state ready; "
        "shutdown sessions server redis/target",
    )
    for port in (endpoint_lab.redis_source_port, endpoint_lab.redis_target_port):
        redis.Redis(host=endpoint_lab.host, port=port).flushall()
    return endpoint_lab


def source(settings: LabSettings) -> tuple[str, int]:
    return settings.host, settings.redis_source_port


def target(settings: LabSettings) -> tuple[str, int]:
    return settings.host, settings.redis_target_port


def through_endpoint(settings: LabSettings) -> redis.Redis:
    """A client of the endpoint as a service has one: a command on a cut connection is retried."""
    return redis.Redis(
        host=settings.host,
        port=settings.redis_endpoint_port,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 3),
        retry_on_error=[RedisConnectionError],
        decode_responses=True,
    )


def answering_port(client: redis.Redis) -> int:
    """The port of the Redis server that answers the client: which one the endpoint chose."""
    return int(client.info("server")["tcp_port"])


@contextlib.contextmanager
def open_connection(settings: LabSettings) -> Iterator[socket.socket]:
    """A raw connection through the endpoint, proven open by a PING."""
    with socket.create_connection((settings.host, settings.redis_endpoint_port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64) == b"+PONG\r\n"
        yield sock


def cut(sock: socket.socket) -> bool:
    """True when the endpoint closed the connection (end of stream, or reset, within 5 s)."""
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True


def test_both_servers_listed_and_writes_land_on_the_source(settings: LabSettings) -> None:
    hook = RedisEndpointHook(CONN_ID)
    assert hook.describe() == f"{settings.host}:{settings.redis_endpoint_admin_port} backend redis"
    assert hook.servers() == [
        EndpointServer("source", source(settings), "ready"),
        EndpointServer("target", target(settings), "maint"),
    ]
    assert hook.routed_to() == source(settings)
    client = through_endpoint(settings)
    client.set("session:before", "user:1")
    assert answering_port(client) == settings.redis_source_port
    assert redis.Redis(*source(settings)).get("session:before") == b"user:1"
    assert redis.Redis(*target(settings)).get("session:before") is None


def test_route_to_moves_new_connections_and_cuts_open_ones(settings: LabSettings) -> None:
    hook = RedisEndpointHook(CONN_ID)
    client = through_endpoint(settings)
    client.set("session:before", "user:1")
    assert answering_port(client) == settings.redis_source_port
    with open_connection(settings) as held:
        # The target named as a client may name it: "localhost" is the lab's 127.0.0.1.
        assert hook.route_to(("localhost", settings.redis_target_port)) is True
        assert cut(held)
    # The client's pooled connection was cut: its next command reconnects through the endpoint.
    client.set("session:after", "user:2")
    assert answering_port(client) == settings.redis_target_port
    assert redis.Redis(*target(settings)).get("session:after") == b"user:2"
    assert redis.Redis(*source(settings)).get("session:after") is None
    assert answering_port(through_endpoint(settings)) == settings.redis_target_port
    assert hook.routed_to() == target(settings)
    assert hook.servers() == [
        EndpointServer("source", source(settings), "maint"),
        EndpointServer("target", target(settings), "ready"),
    ]
    with open_connection(settings) as held:
        assert hook.route_to(target(settings)) is False  # nothing to change, nothing cut
        held.settimeout(0.5)
        with pytest.raises(TimeoutError):
            held.recv(64)
    assert hook.route_to(source(settings)) is True  # and back
    assert answering_port(through_endpoint(settings)) == settings.redis_source_port


def test_connections_left_open_on_a_server_in_maintenance_are_cut(settings: LabSettings) -> None:
    """Routing already right, but a connection still open to the old server: route_to cuts it."""
    hook = RedisEndpointHook(CONN_ID)
    with open_connection(settings) as held:
        runtime_api(settings, "set server redis/source state maint; set server redis/target state ready")
        assert hook.routed_to() == target(settings)
        assert hook.route_to(target(settings)) is True
        assert cut(held)
    assert hook.route_to(target(settings)) is False


def test_an_unknown_address_is_refused_naming_it_and_the_servers(settings: LabSettings) -> None:
    hook = RedisEndpointHook(CONN_ID)
    host, source_port, target_port = settings.host, settings.redis_source_port, settings.redis_target_port
    with pytest.raises(MigrationError) as refused:
        hook.route_to((host, 6399))
    assert str(refused.value) == (
        f"the Redis write endpoint {hook.describe()} has no server at {host}:6399; its servers: "
        f"source ({host}:{source_port}, ready), target ({host}:{target_port}, maint)"
    )
    assert hook.routed_to() == source(settings)


def test_an_unknown_backend_is_refused_with_haproxys_answer(
    settings: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = json.loads(os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"])
    monkeypatch.setenv(
        "AIRFLOW_CONN_ENDPOINT_OTHER_BACKEND", json.dumps({**connection, "extra": {"backend": "sessions"}})
    )
    hook = RedisEndpointHook("endpoint_other_backend")
    refusal = r"backend sessions: `show servers state sessions`: .*find backend"
    with pytest.raises(MigrationError, match=refusal):
        hook.route_to(target(settings))
    assert RedisEndpointHook(CONN_ID).routed_to() == source(settings)


def test_two_routed_servers_are_refused_by_name_and_route_to_settles_it(settings: LabSettings) -> None:
    hook = RedisEndpointHook(CONN_ID)
    runtime_api(settings, "set server redis/target state ready")
    with pytest.raises(MigrationError, match=r"routes to 2 servers at once \(source .*, target .*\)"):
        hook.routed_to()
    assert hook.route_to(source(settings)) is True
    assert hook.routed_to() == source(settings)


def test_the_routing_survives_a_restart_of_the_endpoint_but_not_a_crash(settings: LabSettings) -> None:
    hook = RedisEndpointHook(CONN_ID)
    hook.route_to(target(settings))
    restart_component("redis-endpoint", settings)
    assert hook.routed_to() == target(settings)
    assert answering_port(through_endpoint(settings)) == settings.redis_target_port
    stop_component("redis-endpoint", settings, crash=True)
    start_component("redis-endpoint", settings)
    assert hook.routed_to() == source(settings)  # nothing was saved: the config's routing
