"""Readiness of the shared infrastructure under the services: PostgreSQL, Redis, Kafka, the mesh.

Each check is read only and answers with a few facts worth logging (versions, roles, brokers),
never with a credential. PostgreSQL goes through the provider's PostgresHook; Redis through the
client the migration's Redis hook builds from an ordinary `redis` connection; Kafka through a
minimal client of its wire protocol (ApiVersions, then Metadata) over a raw socket (a few bytes,
no Kafka library loaded); the mesh through an HTTP GET of a configured URL.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from typing import Any

import requests
from airflow.providers.postgres.hooks.postgres import PostgresHook

from pyairtable_migration.hooks.redis_hook import MigrationRedisHook
from pyairtable_migration.kafka_mirror.connection import bootstrap_of

SQL_DIR = Path(__file__).resolve().parents[3] / "include" / "sql"
CLIENT_ID = "pyairtable-migration"


class NotReady(Exception):
    """The dependency answered, but not as a ready one does (or did not answer)."""


def postgres_ready(conn_id: str) -> dict[str, Any]:
    """Run include/sql/readiness_postgres.sql through the connection; its one row, by column."""
    hook = PostgresHook(postgres_conn_id=conn_id)
    sql = (SQL_DIR / "readiness_postgres.sql").read_text()
    connection = hook.get_conn()
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            row = cursor.fetchone()
            columns = [column.name for column in cursor.description or []]
    finally:
        connection.close()
    if row is None:
        raise NotReady("the readiness query returned no row")
    return dict(zip(columns, row, strict=True))


def redis_ready(conn_id: str, timeout_seconds: float = 5) -> dict[str, Any]:
    """PING and INFO through a `redis` connection, connected as the migration connects
    (MigrationRedisHook: host, port, login, password, extra db and ssl)."""
    client = MigrationRedisHook(conn_id).client(timeout=timeout_seconds)
    try:
        started = time.perf_counter()
        if not client.ping():
            raise NotReady("PING was not answered with PONG")
        ping_ms = (time.perf_counter() - started) * 1000
        server = client.info("server")
        replication = client.info("replication")
    finally:
        client.close()
    return {
        "redis_version": server.get("redis_version"),
        "role": replication.get("role"),
        "ping_ms": round(ping_ms, 2),
    }


# --- Kafka: just enough of the wire protocol to ask a broker who it is ---------------------------

API_VERSIONS, METADATA = 18, 3


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.offset)[0]
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        text = self.data[self.offset : self.offset + length].decode()
        self.offset += length
        return text


def _kafka_string(value: str) -> bytes:
    encoded = value.encode()
    return struct.pack(">h", len(encoded)) + encoded


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, received = [], 0
    while received < size:
        chunk = sock.recv(size - received)
        if not chunk:
            raise NotReady("the broker closed the connection mid-answer")
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


def kafka_request(
    sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes = b""
) -> _Reader:
    """Send one request (header v1) and return a reader positioned after the response's correlation id."""
    payload = struct.pack(">hhi", api_key, version, correlation_id) + _kafka_string(CLIENT_ID) + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
    reader = _Reader(_recv_exactly(sock, size))
    if reader.take(">i") != correlation_id:
        raise NotReady("the broker answered another request (correlation id mismatch)")
    return reader


def kafka_metadata(host: str, port: int, timeout_seconds: float = 5) -> dict[str, Any]:
    """ApiVersions v0, then Metadata (v4, or v1 on old brokers) asking for no topics: the brokers."""
    with socket.create_connection((host, port), timeout=timeout_seconds) as sock:
        sock.settimeout(timeout_seconds)
        reader = kafka_request(sock, API_VERSIONS, 0, 1)
        error = reader.take(">h")
        if error:
            raise NotReady(f"ApiVersions answered error code {error}")
        versions = {}
        for _ in range(reader.take(">i")):
            key, low, high = reader.take(">h"), reader.take(">h"), reader.take(">h")
            versions[key] = (low, high)
        low, high = versions.get(METADATA, (0, -1))
        version = next((v for v in (4, 1) if low <= v <= high), None)
        facts: dict[str, Any] = {"api_keys": len(versions), "metadata_versions": f"{low}..{high}"}
        if version is None:
            return facts
        body = struct.pack(">i", 0) + (struct.pack(">b", 0) if version >= 4 else b"")
        reader = kafka_request(sock, METADATA, version, 2, body)
        if version >= 3:
            reader.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(reader.take(">i")):
            node_id, broker_host, broker_port = reader.take(">i"), reader.string(), reader.take(">i")
            reader.string()  # rack
            brokers.append(f"{node_id}@{broker_host}:{broker_port}")
        cluster_id = reader.string() if version >= 2 else None
        controller = reader.take(">i")
    if not brokers:
        raise NotReady("the broker's metadata lists no brokers")
    return {**facts, "brokers": brokers, "controller_id": controller, "cluster_id": cluster_id}


def kafka_ready(conn_id: str, timeout_seconds: float = 5) -> dict[str, Any]:
    """The first bootstrap broker of the connection (host and port, or extra `bootstrap_servers`
    h:p,h:p) that answers who it is; every one's failure named when none does."""
    failures = []
    for item in bootstrap_of(conn_id).split(","):
        host, _, port = item.strip().rpartition(":")
        try:
            return {"bootstrap": f"{host}:{port}", **kafka_metadata(host, int(port), timeout_seconds)}
        except (OSError, NotReady, struct.error) as exc:
            failures.append(f"{host}:{port}: {type(exc).__name__}: {exc}")
    raise NotReady("no bootstrap broker answered: " + "; ".join(failures))


def http_ready(url: str, timeout_seconds: float = 5) -> dict[str, Any]:
    """GET the URL; any 2xx is ready."""
    started = time.perf_counter()
    response = requests.get(url, timeout=timeout_seconds)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if not response.ok:
        raise NotReady(f"GET {url} answered HTTP {response.status_code}")
    return {"status": response.status_code, "elapsed_ms": round(elapsed_ms, 1)}
