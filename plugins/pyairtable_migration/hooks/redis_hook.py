"""Redis for the migration: a client from an Airflow `redis` connection, and the moves on it.

Two ways to fill the target:
  * `replicaof`: the target replicates the source (REPLICAOF); caught up when its replication
    offset reaches the source's. Promotion: REPLICAOF NO ONE.
  * `copy`, for managed servers that refuse REPLICAOF: SCAN the source, DUMP + PTTL each key and
    RESTORE ... REPLACE it on the target, pipelined; a key's remaining TTL travels with it.
The promoted target carries SWITCH_MARKER, so whether a switch happened (and needs undoing) is
read from Redis itself; the marker describes the server it is on, so copies and inventories skip it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from pyairtable_migration.hooks.connection import ConnectionHook
from pyairtable_migration.hooks.database import MigrationError

SCAN_COUNT = 1000
SWITCH_MARKER = "pyairtable-migration:switched"


class MigrationRedisHook(ConnectionHook):
    """One Redis server. Connection: host, port, password (optional), extra `db`, `ssl`."""

    conn_type = "redis"
    hook_name = "Redis (migration)"

    @property
    def address(self) -> tuple[str, int]:
        return str(self._connection.host or "localhost"), int(self._connection.port or 6379)

    @property
    def password(self) -> str | None:
        return self._connection.password or None

    def describe(self) -> str:
        host, port = self.address
        return f"{host}:{port}/{self._connection.extra_dejson.get('db', 0)}"

    def client(self, timeout: float = 30) -> redis.Redis:
        host, port = self.address
        extra = self._connection.extra_dejson
        return redis.Redis(
            host=host,
            port=port,
            db=int(extra.get("db", 0)),
            username=self._connection.login or None,
            password=self.password,
            ssl=bool(extra.get("ssl", False)),
            socket_timeout=timeout,
            socket_connect_timeout=min(timeout, 5),
        )


def info(client: redis.Redis, section: str) -> dict[str, Any]:
    return dict(client.info(section))


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


@dataclass
class ReplicationState:
    role: str
    master_host: str | None = None
    master_port: int | None = None
    link_up: bool = False
    sync_in_progress: bool = False
    offset: int = 0  # the replica's processed offset (slave_repl_offset), or the master's own
    replid: str = ""  # a replica shares its master's id
    replid2: str = ""  # the id it replicated before its last REPLICAOF NO ONE (PSYNC2), else zeros

    def replicates(self, host: str, port: int) -> bool:
        return self.role == "slave" and self.master_host == host and self.master_port == port

    def promoted_from(self, other: ReplicationState) -> bool:
        """A primary that replicated `other` until its REPLICAOF NO ONE: Redis keeps that stream's id
        as replid2 (until a restart or another REPLICAOF)."""
        return self.role == "master" and bool(other.replid) and self.replid2 == other.replid


def replication_state(client: redis.Redis) -> ReplicationState:
    data = info(client, "replication")
    replid, replid2 = str(data.get("master_replid", "")), str(data.get("master_replid2", ""))
    if data.get("role") == "slave":
        return ReplicationState(
            role="slave",
            master_host=str(data.get("master_host")),
            master_port=int(data.get("master_port", 0)),
            link_up=data.get("master_link_status") == "up",
            sync_in_progress=bool(data.get("master_sync_in_progress")),
            offset=int(data.get("slave_repl_offset", 0)),
            replid=replid,
            replid2=replid2,
        )
    return ReplicationState(
        role="master", offset=int(data.get("master_repl_offset", 0)), replid=replid, replid2=replid2
    )


def switch_marker(client: redis.Redis) -> str | None:
    """When this server was marked switched (ISO timestamp), or None."""
    value = client.get(SWITCH_MARKER)
    return value.decode() if isinstance(value, bytes) else value


def mark_switched(client: redis.Redis) -> str:
    """Mark this (promoted) server switched; an existing marker keeps its first timestamp."""
    client.set(SWITCH_MARKER, datetime.now(UTC).isoformat(timespec="seconds"), nx=True)
    return str(switch_marker(client))


def _is_marker(key: Any) -> bool:
    return key in (SWITCH_MARKER, SWITCH_MARKER.encode())


@dataclass
class CopyResult:
    scanned: int = 0
    copied: int = 0
    vanished: int = 0
    with_ttl: int = 0
    seconds: float = 0.0


def copy_keys(source: redis.Redis, target: redis.Redis, batch: int = SCAN_COUNT) -> CopyResult:
    """SCAN the source; DUMP + PTTL, then RESTORE REPLACE on the target, one pipeline per batch.
    The switch marker stays where it is."""
    result = CopyResult()
    started = time.monotonic()
    cursor = 0
    while True:
        cursor, keys = source.scan(cursor=cursor, count=batch)
        keys = [key for key in keys if not _is_marker(key)]
        if keys:
            result.scanned += len(keys)
            with source.pipeline(transaction=False) as reading:
                for key in keys:
                    reading.dump(key)
                    reading.pttl(key)
                answers = reading.execute()
            with target.pipeline(transaction=False) as writing:
                for index, key in enumerate(keys):
                    payload, ttl = answers[2 * index], answers[2 * index + 1]
                    if payload is None or ttl == -2:
                        result.vanished += 1  # expired or deleted between SCAN and DUMP
                        continue
                    if ttl > 0:
                        result.with_ttl += 1
                    writing.restore(key, max(ttl, 0), payload, replace=True)
                    result.copied += 1
                writing.execute()
        if cursor == 0:
            break
    result.seconds = time.monotonic() - started
    return result


@dataclass
class KeyInventory:
    """Key counts per type and each expiring key's expiry (absolute, ms since the epoch: read as
    PTTL and dated by the moment of its batch, so two servers scanned one after the other compare
    fairly), from one SCAN pass. The switch marker is not data and is not counted."""

    types: Counter[str] = field(default_factory=Counter)
    ttls: dict[Any, int] = field(default_factory=dict)
    total: int = 0


def inventory(client: redis.Redis, batch: int = SCAN_COUNT) -> KeyInventory:
    result = KeyInventory()
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, count=batch)
        if keys:
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.type(key)
                    pipe.pttl(key)
                before = time.time()
                answers = pipe.execute()
                now_ms = (before + time.time()) / 2 * 1000
            for index, key in enumerate(keys):
                kind, ttl = answers[2 * index], answers[2 * index + 1]
                kind = kind.decode() if isinstance(kind, bytes) else str(kind)
                if kind == "none" or _is_marker(key):
                    continue
                result.types[kind] += 1
                result.total += 1
                if ttl >= 0:
                    result.ttls[key] = int(now_ms + ttl)
        if cursor == 0:
            break
    return result


def compare_inventories(
    source: KeyInventory, target: KeyInventory, tolerance_ms: float, examples: int = 5
) -> list[str]:
    """Every difference: counts per type, keys whose TTL is missing or off by more than the tolerance."""
    problems = []
    for kind in sorted(set(source.types) | set(target.types)):
        if source.types[kind] != target.types[kind]:
            problems.append(f"{kind} keys: source {source.types[kind]}, target {target.types[kind]}")
    missing_ttl, off = [], []
    for key, ttl in source.ttls.items():
        other = target.ttls.get(key)
        if other is None:
            missing_ttl.append(key)
        elif abs(other - ttl) > tolerance_ms:
            off.append((key, ttl, other))
    if missing_ttl:
        sample = ", ".join(k.decode(errors="replace") for k in missing_ttl[:examples])
        problems.append(
            f"{len(missing_ttl)} expiring source key(s) have no TTL (or no key) on the target: {sample}"
        )
    if off:
        sample = ", ".join(
            f"{k.decode(errors='replace')} (expires {(b - a) / 1000:+.1f} s later on the target)"
            for k, a, b in off[:examples]
        )
        problems.append(f"{len(off)} key(s) with TTLs apart by more than {tolerance_ms:.0f} ms: {sample}")
    return problems


def require(condition: bool, message: str) -> None:
    if not condition:
        raise MigrationError(message)
