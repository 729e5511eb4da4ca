"""Infrastructure readiness checks against real servers (PostgreSQL, Redis), a minimal Kafka broker
speaking the wire protocol, and an HTTP endpoint standing in for the mesh."""

from __future__ import annotations

import json
import socketserver
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from pyairtable_migration.operators.readiness import InfrastructureReadyOperator
from tests.services.support import free_port, postgres_connection, redis_connection, run_task

pytestmark = pytest.mark.timeout(60)


def check(node: str, check: str, mode: str = "apply", **arguments: Any) -> Any:
    return run_task(
        InfrastructureReadyOperator(task_id="check_ready", node=node, check=check, **arguments), mode
    )


def test_postgres_answers_the_readiness_query(postgres_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TEST_PG", postgres_connection(postgres_port))
    result = check("postgres", "postgres", conn_id="test_pg")
    assert result["ready"] is True
    assert str(result["server_version"]).startswith("15")
    assert result["in_recovery"] is False


def test_redis_answers_ping_with_its_version(redis_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TEST_REDIS", redis_connection(redis_port))
    result = check("redis", "redis", conn_id="test_redis")
    assert result["ready"] is True
    assert result["role"] == "master"
    assert str(result["redis_version"]).count(".") == 2


def test_an_unreachable_dependency_fails_in_apply_and_is_reported_in_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TEST_PG", postgres_connection(free_port()))
    with pytest.raises(AirflowException, match=r"postgres \(postgres via connection test_pg\) is not ready"):
        check("postgres", "postgres", conn_id="test_pg")
    assert check("postgres", "postgres", mode="plan", conn_id="test_pg")["ready"] is False
    assert check("redis", "redis", mode="plan", conn_id="no_such_connection")["ready"] is False


def test_external_nodes_end_skipped_and_say_so(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AirflowSkipException, match="kafka \\(kafka\\) is marked external"):
        check("kafka", "kafka", external=True)
    assert "is marked external" in "".join(capfd.readouterr()), "the task log says why it is skipped"
    assert check("istio", "mesh", mode="plan", external=True)["external"] is True


class _FakeBroker(socketserver.BaseRequestHandler):
    """ApiVersions v0 and Metadata v4, byte for byte as a broker answers them."""

    def handle(self) -> None:
        while True:
            size_bytes = self.request.recv(4)
            if len(size_bytes) < 4:
                return
            payload = self.request.recv(struct.unpack(">i", size_bytes)[0])
            api_key, version, correlation = struct.unpack_from(">hhi", payload)
            if api_key == 18:
                body = (
                    struct.pack(">hi", 0, 2) + struct.pack(">hhh", 18, 0, 3) + struct.pack(">hhh", 3, 0, 12)
                )
            elif api_key == 3 and version == 4:
                host = b"127.0.0.1"
                broker = struct.pack(">ih", 1, len(host)) + host + struct.pack(">ih", 9092, -1)
                cluster = b"lab-cluster"
                body = (
                    struct.pack(">ii", 0, 1)
                    + broker
                    + struct.pack(">h", len(cluster))
                    + cluster
                    + struct.pack(">ii", 1, 0)
                )
            else:
                return
            answer = struct.pack(">i", correlation) + body
            self.request.sendall(struct.pack(">i", len(answer)) + answer)


@pytest.fixture
def kafka_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _FakeBroker)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_kafka_broker_metadata_over_the_wire_protocol(
    kafka_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_TEST_KAFKA",
        json.dumps(
            {
                "conn_type": "generic",
                "extra": {"bootstrap_servers": f"127.0.0.1:{dead},127.0.0.1:{kafka_port}"},
            }
        ),
    )
    result = check("kafka", "kafka", conn_id="test_kafka")
    assert result["bootstrap"] == f"127.0.0.1:{kafka_port}"
    assert result["brokers"] == ["1@127.0.0.1:9092"]
    assert (result["cluster_id"], result["controller_id"], result["metadata_versions"]) == (
        "lab-cluster",
        1,
        "0..12",
    )

    monkeypatch.setenv(
        "AIRFLOW_CONN_TEST_KAFKA", json.dumps({"conn_type": "generic", "host": "127.0.0.1", "port": dead})
    )
    with pytest.raises(AirflowException, match="no bootstrap broker answered"):
        check("kafka", "kafka", conn_id="test_kafka")


def test_mesh_is_an_http_readiness_url() -> None:
    codes = iter([200, 503])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(next(codes))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ready"
    try:
        assert check("istio", "mesh", url=url)["status"] == 200
        with pytest.raises(AirflowException, match="answered HTTP 503"):
            check("istio", "mesh", url=url)
    finally:
        server.shutdown()
        server.server_close()
