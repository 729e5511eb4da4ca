"""Redis: preflight, sync (REPLICAOF or key copy), validation and promotion of the target.

`mode` comes from the config's `redis.mode`:
  * replicaof: the target becomes a replica of the source; sync waits (deferred) until its
    offset reaches the source's; promotion waits for that again and runs REPLICAOF NO ONE.
  * copy: for managed servers that forbid REPLICAOF: SCAN + DUMP/PTTL + RESTORE REPLACE,
    pipelined, TTLs kept; promotion is a last copy pass.
Validation compares key counts per type and every expiring key's TTL (within a tolerance).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import redis
from airflow.sdk import BaseOperator, Context

from pyairtable_migration.hooks.redis_hook import (
    MigrationRedisHook,
    compare_inventories,
    copy_keys,
    info,
    inventory,
    replication_state,
    version_tuple,
)
from pyairtable_migration.operators.database import DEFERRAL_MARGIN, fail, run_mode
from pyairtable_migration.triggers.database import RedisCatchUpTrigger

MODES = ("replicaof", "copy")


class RedisOperator(BaseOperator):
    """Base: the two Redis servers by Airflow `redis` connection id, and the sync mode."""

    template_fields: Sequence[str] = ("source_conn_id", "target_conn_id", "mode")
    ui_color = "#fbe3e3"

    def __init__(
        self, *, source_conn_id: str, target_conn_id: str, mode: str = "replicaof", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.source_conn_id = source_conn_id
        self.target_conn_id = target_conn_id
        self.mode = mode

    def hooks(self) -> tuple[MigrationRedisHook, MigrationRedisHook]:
        if self.mode not in MODES:
            raise fail(f"{self.task_id}: unknown Redis mode {self.mode!r} (known: {', '.join(MODES)})")
        return MigrationRedisHook(self.source_conn_id), MigrationRedisHook(self.target_conn_id)

    def planned(self, context: Context, *lines: str) -> bool:
        if run_mode(context) != "plan":
            return False
        for line in lines:
            self.log.info("Plan: would %s", line)
        return True


def _command_available(client: redis.Redis, name: str) -> bool:
    """Does the server offer this command (managed servers rename or disable some)?"""
    try:
        described = client.execute_command("COMMAND", "INFO", name)
    except redis.RedisError:
        return False
    return bool(described) and any(
        entry for entry in (described.values() if isinstance(described, dict) else described)
    )


class CheckRedisOperator(RedisOperator):
    """Preflight: both servers answer, versions compatible, the target empty or already ours, and the
    commands the mode needs available. One message lists every problem; nothing is changed."""

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"check Redis {self.source_conn_id} and {self.target_conn_id} answer, versions, mode {self.mode}",
        ):
            return {"mode": "plan"}
        source_hook, target_hook = self.hooks()
        problems: list[str] = []
        notes: list[str] = []
        versions: dict[str, str] = {}
        clients: dict[str, redis.Redis] = {}
        for side, hook in (("source", source_hook), ("target", target_hook)):
            try:
                client = hook.client(timeout=5)
                client.ping()
                versions[side] = str(info(client, "server")["redis_version"])
                clients[side] = client
                self.log.info(
                    "Redis %s %s: version %s, %d keys", side, hook.describe(), versions[side], client.dbsize()
                )
            except Exception as exc:
                problems.append(f"Redis {side} ({self._describe(hook)}) does not answer: {exc}")
        if (
            len(versions) == 2
            and version_tuple(versions["target"])[:2] < version_tuple(versions["source"])[:2]
        ):
            problems.append(
                f"target Redis {versions['target']} is older than the source's {versions['source']}: "
                "replication and RESTORE need the target's version to be the same or newer"
            )
        if "target" in clients:
            target = clients["target"]
            state = replication_state(target)
            keys = target.dbsize()
            host, port = source_hook.address
            if self.mode == "replicaof":
                if state.replicates(host, port):
                    notes.append("the target already replicates the source (a re-run)")
                elif state.role != "master":
                    problems.append(
                        f"target Redis replicates {state.master_host}:{state.master_port}, not the source"
                    )
                elif keys:
                    problems.append(
                        f"target Redis holds {keys} key(s) and is not a replica of the source: REPLICAOF "
                        "would discard them; empty it (FLUSHALL) or use mode copy"
                    )
                if not _command_available(target, "replicaof"):
                    problems.append(
                        "target Redis does not offer REPLICAOF (a managed server?): use redis.mode copy"
                    )
                if source_hook.password and not _command_available(target, "config"):
                    problems.append(
                        "the source needs a password but the target does not offer CONFIG (masterauth)"
                    )
            else:
                if keys:
                    notes.append(
                        f"target holds {keys} key(s): keys of the same name are replaced (RESTORE REPLACE)"
                    )
                if not _command_available(target, "restore"):
                    problems.append("target Redis does not offer RESTORE, which mode copy needs")
        if "source" in clients and self.mode == "copy" and not _command_available(clients["source"], "dump"):
            problems.append("source Redis does not offer DUMP, which mode copy needs")
        for note in notes:
            self.log.info("Note: %s", note)
        if problems:
            raise fail(f"Redis preflight found {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
        self.log.info("Redis preflight passed (mode %s)", self.mode)
        return {"passed": True, "versions": versions, "mode": self.mode, "notes": notes}

    @staticmethod
    def _describe(hook: MigrationRedisHook) -> str:
        try:
            return hook.describe()
        except Exception as exc:
            return f"connection not found: {exc}"


class SyncRedisOperator(RedisOperator):
    """Fill the target: REPLICAOF and wait (deferred) until caught up, or copy every key."""

    template_fields: Sequence[str] = (*RedisOperator.template_fields, "timeout_seconds")

    def __init__(self, *, timeout_seconds: float = 1800.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout_seconds = timeout_seconds

    def execute(self, context: Context) -> dict[str, Any] | None:
        if self.planned(
            context,
            f"make {self.target_conn_id} a replica of {self.source_conn_id} and wait until caught up"
            if self.mode == "replicaof"
            else f"copy every key of {self.source_conn_id} to {self.target_conn_id} (DUMP/RESTORE, TTLs "
            "kept)",
        ):
            return {"mode": "plan"}
        source_hook, target_hook = self.hooks()
        if self.mode == "copy":
            result = copy_keys(source_hook.client(), target_hook.client())
            rate = result.copied / result.seconds if result.seconds else 0.0
            self.log.info(
                "Copied %d of %d scanned key(s) (%d with a TTL, %d vanished meanwhile) in %.1f s (%.0f "
                "keys/s)",
                result.copied,
                result.scanned,
                result.with_ttl,
                result.vanished,
                result.seconds,
                rate,
            )
            return {"mode": "copy", **result.__dict__, "keys_per_second": round(rate)}
        target = target_hook.client()
        host, port = source_hook.address
        state = replication_state(target)
        if state.replicates(host, port):
            self.log.info(
                "Target already replicates %s:%d (link %s)", host, port, "up" if state.link_up else "down"
            )
        else:
            if source_hook.password:
                target.config_set("masterauth", source_hook.password)  # never logged
            target.replicaof(host, port)
            self.log.info(
                "Target %s: REPLICAOF %s %d (was %s)", target_hook.describe(), host, port, state.role
            )
        self.defer(
            trigger=RedisCatchUpTrigger(
                source_conn_id=self.source_conn_id,
                target_conn_id=self.target_conn_id,
                timeout_seconds=float(self.timeout_seconds),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout_seconds)) + DEFERRAL_MARGIN,
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "ok":
            raise fail(f"{self.task_id}: {event.get('message')}")
        self.log.info(
            "Target caught up: offset %d >= source %d (%.1f s)",
            event["target_offset"],
            event["source_offset"],
            event["seconds"],
        )
        return {"mode": "replicaof", "offset": event["target_offset"], "seconds": event["seconds"]}


class ValidateRedisOperator(RedisOperator):
    """Key counts per type and every expiring key's TTL, source vs target, within a tolerance."""

    template_fields: Sequence[str] = (*RedisOperator.template_fields, "ttl_tolerance_seconds")

    def __init__(self, *, ttl_tolerance_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ttl_tolerance_seconds = ttl_tolerance_seconds

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"compare key counts per type and TTLs (tolerance {self.ttl_tolerance_seconds}s) of "
            f"{self.source_conn_id} and {self.target_conn_id}",
        ):
            return {"mode": "plan"}
        source_hook, target_hook = self.hooks()
        started = time.monotonic()
        source, target = inventory(source_hook.client()), inventory(target_hook.client())
        problems = compare_inventories(source, target, float(self.ttl_tolerance_seconds) * 1000)
        self.log.info(
            "Source %d keys %s; target %d keys %s (%.1f s)",
            source.total,
            dict(source.types),
            target.total,
            dict(target.types),
            time.monotonic() - started,
        )
        if problems:
            raise fail(f"{self.task_id}: Redis differs:\n  - " + "\n  - ".join(problems))
        return {"keys": source.total, "types": dict(source.types), "expiring": len(source.ttls)}


class SwitchRedisOperator(RedisOperator):
    """Promote the target: catch up, then REPLICAOF NO ONE (replicaof), or a last copy pass (copy).
    Re-run after success: the target is already a primary; nothing changes."""

    template_fields: Sequence[str] = (*RedisOperator.template_fields, "timeout_seconds")

    def __init__(self, *, timeout_seconds: float = 30.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout_seconds = timeout_seconds

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"wait until {self.target_conn_id} has caught up, then REPLICAOF NO ONE"
            if self.mode == "replicaof"
            else f"copy every key of {self.source_conn_id} to {self.target_conn_id} once more",
        ):
            return {"mode": "plan"}
        source_hook, target_hook = self.hooks()
        target = target_hook.client()
        if self.mode == "copy":
            result = copy_keys(source_hook.client(), target)
            self.log.info("Last copy pass: %d key(s) in %.1f s", result.copied, result.seconds)
            return {"mode": "copy", "copied": result.copied, "changed": True}
        host, port = source_hook.address
        state = replication_state(target)
        if state.role == "master":
            self.log.info("Target %s is already a primary: nothing to change", target_hook.describe())
            return {"mode": "replicaof", "changed": False}
        if not state.replicates(host, port):
            raise fail(
                f"{self.task_id}: the target replicates {state.master_host}:{state.master_port}, not the "
                "source"
            )
        deadline = time.monotonic() + float(self.timeout_seconds)
        source = source_hook.client()
        started = time.monotonic()
        while True:
            wanted = replication_state(source).offset
            state = replication_state(target)
            if state.link_up and not state.sync_in_progress and state.offset >= wanted:
                break
            if time.monotonic() > deadline:
                raise fail(
                    f"{self.task_id}: target offset {state.offset} did not reach the source's {wanted} "
                    f"within {self.timeout_seconds} s; nothing changed (still a replica)"
                )
            time.sleep(0.05)
        try:
            target.replicaof("NO", "ONE")
        except redis.RedisError as exc:
            raise fail(f"{self.task_id}: REPLICAOF NO ONE failed: {exc}") from None
        self.log.info(
            "Target promoted (REPLICAOF NO ONE) at offset %d after %.2f s of catch-up",
            state.offset,
            time.monotonic() - started,
        )
        return {"mode": "replicaof", "changed": True, "offset": state.offset}
