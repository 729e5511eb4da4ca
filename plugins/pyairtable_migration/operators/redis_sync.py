"""Redis: preflight, sync (REPLICAOF or key copy), validation, promotion of the target, rollback.

`mode` comes from the config's `redis.mode`:
  * replicaof: the target becomes a replica of the source; sync waits (deferred) until its
    offset reaches the source's; promotion waits for that again and runs REPLICAOF NO ONE.
    Rollback runs the same moves the other way, then makes the target a replica again.
  * copy: for managed servers that forbid REPLICAOF: SCAN + DUMP/PTTL + RESTORE REPLACE,
    pipelined, TTLs kept; promotion is a last copy pass, rollback a copy back.
Validation compares key counts per type and every expiring key's TTL (within a tolerance).
Promotion leaves the switch marker on the target; the rollback acts only where it finds one.
The migration's own `switchover.undo` (SwitchoverUndoOperator) runs the PostgreSQL rollback's engine
and then this module's Redis rollback, in one task.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from airflow.sdk import Context

from pyairtable_migration.hooks.database import MigrationError, MigrationPostgresHook
from pyairtable_migration.hooks.redis_endpoint import RedisEndpointHook
from pyairtable_migration.hooks.redis_hook import (
    SWITCH_MARKER,
    MigrationRedisHook,
    ReplicationState,
    compare_inventories,
    copy_keys,
    info,
    inventory,
    mark_switched,
    replication_state,
    switch_marker,
    version_tuple,
)
from pyairtable_migration.operators.base import ConnectionPairOperator, PhaseUndo, bulleted, fail
from pyairtable_migration.postgres.switchover import WriteSwitch, rollback_direction
from pyairtable_migration.redis.stages import (
    Stage,
    emptied_target,
    endpoint_rollback_stage,
    rollback_stage,
    wait_caught_up,
)
from pyairtable_migration.redis.switch import Server, finish, move_writers, routed_side
from pyairtable_migration.topology import Pooler, Writers, first_line, writers_of_redis
from pyairtable_migration.triggers.base import OK
from pyairtable_migration.triggers.database import RedisCatchUpTrigger

MODES = ("replicaof", "copy")


class RedisOperator(ConnectionPairOperator):
    """Base: the two Redis servers by Airflow `redis` connection id, and the sync mode."""

    template_fields: Sequence[str] = (*ConnectionPairOperator.template_fields, "mode", "endpoint_conn_id")
    ui_color = "#fbe3e3"

    mode: str = "replicaof"
    endpoint_conn_id: str | None = None

    def hooks(self) -> tuple[MigrationRedisHook, MigrationRedisHook]:
        if self.mode not in MODES:
            raise fail(f"{self.task_id}: unknown Redis mode {self.mode!r} (known: {', '.join(MODES)})")
        return MigrationRedisHook(self.source_conn_id), MigrationRedisHook(self.target_conn_id)

    def servers(self) -> tuple[Server, Server]:
        """Both servers as redis/switch.py moves them."""
        source_hook, target_hook = self.hooks()
        return (
            Server("source", source_hook.client(), source_hook.address, source_hook.password),
            Server("target", target_hook.client(), target_hook.address, target_hook.password),
        )

    def endpoint(self) -> RedisEndpointHook | None:
        """The write endpoint both environments use, when the config names one."""
        return RedisEndpointHook(self.endpoint_conn_id) if self.endpoint_conn_id else None

    def writers(self) -> Writers:
        source, target = self.servers()
        return writers_of_redis(source, target, self.endpoint())


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
        endpoint = self.endpoint()
        if endpoint is not None:
            try:
                routed = routed_side(endpoint, source_hook.address, target_hook.address)
            except Exception as exc:
                problems.append(f"Redis write endpoint {self.endpoint_conn_id}: {first_line(exc)}")
            else:
                notes.append(f"the write endpoint {endpoint.describe()} routes to the {routed}")
        if "source" in clients and self.mode == "copy" and not _command_available(clients["source"], "dump"):
            problems.append("source Redis does not offer DUMP, which mode copy needs")
        for note in notes:
            self.log.info("Note: %s", note)
        if problems:
            raise fail(bulleted(f"Redis preflight found {len(problems)} problem(s)", problems))
        self.log.info("Redis preflight passed (mode %s)", self.mode)
        return {"passed": True, "versions": versions, "mode": self.mode, "notes": notes}

    @staticmethod
    def _describe(hook: MigrationRedisHook) -> str:
        try:
            return hook.describe()
        except Exception as exc:
            return f"connection not found: {exc}"


class SyncRedisOperator(RedisOperator):
    """Fill the target: REPLICAOF and wait (deferred) until caught up, or copy every key.

    Refused on a target carrying the switch marker: writers use it, and a sync would overwrite it.
    """

    template_fields: Sequence[str] = (*RedisOperator.template_fields, "timeout_seconds")

    timeout_seconds: float = 1800.0

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"make {self.target_conn_id} a replica of {self.source_conn_id} and wait until caught up"
            if self.mode == "replicaof"
            else f"copy every key of {self.source_conn_id} to {self.target_conn_id} (DUMP/RESTORE, TTLs "
            "kept)",
        ):
            return {"mode": "plan"}
        source_hook, target_hook = self.hooks()
        found = self.writers()
        if found.where != "source":
            raise fail(
                f"Redis writers are not on the source ({found.describe()}; target {target_hook.describe()} "
                f"switched at {found.switched_at}): syncing the target from the source would overwrite "
                "production's writes; nothing changed. To migrate again, roll back first "
                "(pyairtable_production_rollback)"
            )
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
        self.defer_to(
            RedisCatchUpTrigger(
                source_conn_id=self.source_conn_id,
                target_conn_id=self.target_conn_id,
                timeout_seconds=float(self.timeout_seconds),
            ),
            self.timeout_seconds,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.raise_on_failure(event, self.task_id)
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

    ttl_tolerance_seconds: float

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
            raise fail(bulleted(f"{self.task_id}: Redis differs", problems))
        return {"keys": source.total, "types": dict(source.types), "expiring": len(source.ttls)}


class SwitchRedisOperator(RedisOperator):
    """Promote the target: catch up, then REPLICAOF NO ONE (replicaof), or a last copy pass (copy);
    then mark it switched (SWITCH_MARKER, an ISO timestamp), so whether a switch happened is read
    from Redis itself, by the rollback and the status, rather than from Airflow's records.

    Re-run after success: the marker is there; nothing changes (in copy mode too: another pass
    would replace keys written on the target since with the source's older values).
    A primary target without the marker is marked only when Redis shows it was promoted out of the
    source's replication stream (its replid2 is the source's replication id): a run killed between
    promotion and marker, or a switch made before markers existed. Any other primary is refused
    unmarked: a marker is what lets the rollback make the source a copy of the target, and a target
    that never replicated the source must never be copied over it.
    """

    template_fields: Sequence[str] = (*RedisOperator.template_fields, "timeout_seconds", "freeze_seconds")

    timeout_seconds: float = 30.0
    freeze_seconds: float = 5.0

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(context, self._plan()):
            return {"mode": "plan"}
        endpoint = self.endpoint()
        if endpoint is not None:
            try:
                return self._move_writers(endpoint)
            except MigrationError as exc:
                raise fail(f"{self.task_id}: {exc}") from None
        source_hook, target_hook = self.hooks()
        source, target = source_hook.client(), target_hook.client()
        switched_at = switch_marker(target)
        if self.mode == "copy":
            if switched_at:
                self.log.info("Target marked switched at %s: nothing to change", switched_at)
                return {"mode": "copy", "changed": False, "switched_at": switched_at}
            result = copy_keys(source, target)
            switched_at = mark_switched(target)
            self.log.info(
                "Last copy pass: %d key(s) in %.1f s; target marked switched at %s",
                result.copied,
                result.seconds,
                switched_at,
            )
            return {"mode": "copy", "copied": result.copied, "changed": True, "switched_at": switched_at}
        host, port = source_hook.address
        state = replication_state(target)
        if state.role == "master":
            return self._already_primary(source, target, target_hook.describe(), state, switched_at)
        if not state.replicates(host, port):
            raise fail(
                f"{self.task_id}: the target replicates {state.master_host}:{state.master_port}, not the "
                "source"
            )
        started = time.monotonic()
        caught_up, offset, wanted = wait_caught_up(source, target, float(self.timeout_seconds))
        if not caught_up:
            raise fail(
                f"{self.task_id}: target offset {offset} did not reach the source's {wanted} within "
                f"{self.timeout_seconds} s; nothing changed (still a replica)"
            )
        try:
            target.replicaof("NO", "ONE")
        except redis.RedisError as exc:
            raise fail(f"{self.task_id}: REPLICAOF NO ONE failed: {exc}") from None
        switched_at = mark_switched(target)
        self.log.info(
            "Target promoted (REPLICAOF NO ONE) at offset %d after %.2f s of catch-up; marked switched at %s",
            offset,
            time.monotonic() - started,
            switched_at,
        )
        return {"mode": "replicaof", "changed": True, "offset": offset, "switched_at": switched_at}

    def _plan(self) -> str:
        if self.endpoint_conn_id:
            take_over = (
                f"{self.target_conn_id} catches up, REPLICAOF NO ONE"
                if self.mode == "replicaof"
                else f"every key of {self.source_conn_id} copied to {self.target_conn_id} once more"
            )
            return (
                f"CLIENT PAUSE WRITE on {self.source_conn_id} (at most {self.freeze_seconds} s): "
                f"{take_over}, marked switched; endpoint {self.endpoint_conn_id} routes to it (commit point)"
                + (f"; {self.source_conn_id} REPLICAOF it" if self.mode == "replicaof" else "")
                + "; unpause"
            )
        if self.mode == "replicaof":
            return (
                f"wait until {self.target_conn_id} has caught up, then REPLICAOF NO ONE and mark it switched"
            )
        return (
            f"copy every key of {self.source_conn_id} to {self.target_conn_id} once more and mark it switched"
        )

    def _move_writers(self, endpoint: RedisEndpointHook) -> dict[str, Any]:
        """Through the write endpoint (redis/switch.py): the endpoint's routing says where writers
        are, so a re-run reads it and finishes, or starts over, from there."""
        source, target = self.servers()
        replicated = self.mode == "replicaof"
        if routed_side(endpoint, source.address, target.address) == "target":
            switched_at = switch_marker(target.client) or mark_switched(target.client)
            if replicated:
                repointed = finish(source, target)
            else:  # copy mode: the source cannot follow; only a pause a stopped run left is lifted
                source.client.client_unpause()
                repointed = False
            self.log.info(
                "The endpoint %s routes to the target (switched at %s): %s",
                endpoint.describe(),
                switched_at,
                "the source follows it now" if repointed else "nothing to change",
            )
            return {"mode": self.mode, "changed": repointed, "switched_at": switched_at}
        if replicated:
            self._replicating_source(source, target)
            caught_up, offset, wanted = wait_caught_up(
                source.client, target.client, float(self.timeout_seconds)
            )
            if not caught_up:
                raise MigrationError(
                    f"target offset {offset} did not reach the source's {wanted} within "
                    f"{self.timeout_seconds} s; nothing changed (still a replica, writers on the source)"
                )
        move = move_writers(
            source,
            target,
            endpoint,
            float(self.freeze_seconds),
            replicated=replicated,
            on_promoted=mark_switched,
        )
        return {
            "mode": self.mode,
            "changed": True,
            "switched_at": switch_marker(target.client),
            "stall_ms": move.stall_ms,
            "catch_up_ms": move.catch_up_ms,
            ("offset" if replicated else "copied"): move.offset,
        }

    def _replicating_source(self, source: Server, target: Server) -> None:
        """The target replicates the source; a target promoted while the endpoint stayed on the source
        (a run stopped before its commit point) never took a write, so it replicates again."""
        state = replication_state(target.client)
        if state.replicates(*source.address):
            return
        if state.role != "master":
            raise MigrationError(
                f"the target replicates {state.master_host}:{state.master_port}, not the source; nothing "
                "changed"
            )
        self.log.warning(
            "The target is a primary (marked %s) but the endpoint routes to the source: promoted by a run "
            "stopped before its commit point; it replicates the source again",
            switch_marker(target.client),
        )
        target.client.delete(SWITCH_MARKER)
        target.follow(source)

    def _already_primary(
        self,
        source: redis.Redis,
        target: redis.Redis,
        described: str,
        state: ReplicationState,
        switched_at: str | None,
    ) -> dict[str, Any]:
        if switched_at:
            self.log.info(
                "Target %s is already a primary, marked switched at %s: nothing to change",
                described,
                switched_at,
            )
            return {"mode": "replicaof", "changed": False, "switched_at": switched_at}
        if not state.promoted_from(replication_state(source)):
            raise fail(
                f"{self.task_id}: the target is a primary that was not promoted from the source (its "
                "previous replication id is not the source's), so it is not marked switched: a rollback "
                "would copy it over the source. Sync it first (database.sync_redis); if it was promoted "
                f"from the source by hand and the source restarted since, mark it: SET {SWITCH_MARKER} "
                "<ISO time>"
            )
        switched_at = mark_switched(target)
        self.log.warning(
            "Target %s was promoted from the source but not marked (a run stopped in between?): marked "
            "switched now, at %s",
            described,
            switched_at,
        )
        return {"mode": "replicaof", "changed": True, "switched_at": switched_at}


class RollbackRedisOperator(RedisOperator):
    """Undo the switch: the source current again (the target's keys back on it) and the staging
    arrangement restored, so a later migration run can switch again.

    Whether there is anything to undo is read from Redis: the switch marker on the target. Without
    it, or with the target already replicating the source, this is a no-op: a never-switched (maybe
    empty) target is never copied over the source. A marked target holding nothing else while the
    source has keys is refused too (it lost its data; replicating it would empty the source).

    replicaof, in stages; each run reads roles and markers first and continues from there, so a
    re-run after a kill between any two stages completes the rollback:
      1. source REPLICAOF target; wait (deferred) until its offset reaches the target's;
      2. a last bounded catch-up check, then source REPLICAOF NO ONE: it holds the target's keys,
         and the marker with them;
      3. target REPLICAOF source (the pre-switch arrangement);
      4. the marker deleted on the source (the replica follows).
    The marker leaves the source last on purpose: with both servers primaries, a marked source is
    how a re-run tells "stopped after stage 2" from "switched, rollback not begun". A source that
    already replicates the target is carried on even unmarked: its own keys are gone already, and
    stopping would leave staging's Redis a read-only replica.
    copy: copy the target's keys to the source (added or replaced: keys deleted on the target since
    the switch stay on the source), then delete the marker.
    """

    template_fields: Sequence[str] = (*RedisOperator.template_fields, "timeout_seconds", "freeze_seconds")

    timeout_seconds: float = 1800.0
    freeze_seconds: float = 5.0

    def execute(self, context: Context) -> dict[str, Any]:
        source, target = self.source_conn_id, self.target_conn_id
        if self.planned(
            context,
            f"read the switch marker {SWITCH_MARKER} on {target}; only if it is there: "
            + (
                f"{source} REPLICAOF {target} until caught up, then REPLICAOF NO ONE; {target} REPLICAOF "
                f"{source}; marker deleted"
                if self.mode == "replicaof"
                else f"copy every key of {target} to {source}; marker deleted"
            ),
        ):
            return {"mode": "plan"}
        if self.mode == "copy":
            return self._copy_back(time.time())
        return self._advance(time.time(), caught_up=False)

    def execute_complete(
        self, context: Context, event: dict[str, Any], started: float | None = None
    ) -> dict[str, Any]:
        # dag.test() resumes with the event only; then time counts from the catch-up wait's start.
        if started is None:
            started = time.time() - float(event.get("seconds") or 0.0)
        if event.get("status") != OK:
            raise fail(
                f"{self.task_id}: the source did not catch up with the target ({event.get('status')}; the "
                f"trigger calls the server catching up the target): {event.get('message')}. The source "
                "still replicates the target; run again to keep waiting."
            )
        return self._advance(started, caught_up=True)

    def _advance(self, started: float, caught_up: bool) -> dict[str, Any]:
        source_hook, target_hook = self.hooks()
        source, target = source_hook.client(), target_hook.client()
        endpoint = self.endpoint()
        stage = self._stage(source, target, source_hook.address, target_hook.address, endpoint)
        if stage == "nothing":
            return {"mode": "replicaof", "changed": False, "seconds": round(time.time() - started, 2)}
        moved: dict[str, Any] = {}
        if stage == "replicate":
            self._refuse_an_emptied_target(source, target)
            if target_hook.password:
                source.config_set("masterauth", target_hook.password)  # never logged
            source.replicaof(*target_hook.address)
            self.log.info("Source %s: REPLICAOF %s", source_hook.describe(), target_hook.describe())
            stage = "catch_up"
        if stage == "catch_up" and not caught_up:
            self.defer_to(
                RedisCatchUpTrigger(
                    source_conn_id=self.target_conn_id,
                    target_conn_id=self.source_conn_id,
                    timeout_seconds=float(self.timeout_seconds),
                ),
                self.timeout_seconds,
                kwargs={"started": started},
            )
        if stage == "catch_up" and endpoint is not None:
            moved = self._move_back(endpoint, replicated=True)
            stage = "unmark"
        if stage == "catch_up":
            done, offset, wanted = wait_caught_up(target, source, float(self.timeout_seconds))
            if not done:
                raise fail(
                    f"{self.task_id}: source offset {offset} did not reach the target's {wanted} within "
                    f"{self.timeout_seconds} s; the source still replicates the target; run again"
                )
            source.replicaof("NO", "ONE")
            self.log.info(
                "Source promoted (REPLICAOF NO ONE) at offset %d: it holds the target's keys", offset
            )
            stage = "repoint_target"
        if stage == "repoint_target" and endpoint is not None:
            source_server, target_server = self.servers()
            finish(target_server, source_server)
            self.log.info("Target %s follows the source again; its pause lifted", target_hook.describe())
        elif stage == "repoint_target":
            if source_hook.password:
                target.config_set("masterauth", source_hook.password)  # never logged
            target.replicaof(*source_hook.address)
            self.log.info("Target %s: REPLICAOF %s again", target_hook.describe(), source_hook.describe())
        source.delete(SWITCH_MARKER)
        offset = replication_state(source).offset
        self.log.info("Switch marker deleted: Redis rolled back (source offset %d)", offset)
        return {
            "mode": "replicaof",
            "changed": True,
            "offset": offset,
            "seconds": round(time.time() - started, 2),
            **moved,
        }

    def _move_back(self, endpoint: RedisEndpointHook, replicated: bool) -> dict[str, Any]:
        """The writers back to the source through the endpoint, in a freeze (redis/switch.py)."""
        source, target = self.servers()
        try:
            move = move_writers(target, source, endpoint, float(self.freeze_seconds), replicated=replicated)
        except MigrationError as exc:
            raise fail(f"{self.task_id}: {exc}") from None
        return {"stall_ms": move.stall_ms, "catch_up_ms": move.catch_up_ms}

    def _refuse_an_emptied_target(self, source: redis.Redis, target: redis.Redis) -> None:
        problem = emptied_target(target.dbsize() - 1, source.dbsize())
        if problem:
            raise fail(f"{self.task_id}: {problem}")

    def _stage(
        self,
        source: redis.Redis,
        target: redis.Redis,
        source_address: tuple[str, int],
        target_address: tuple[str, int],
        endpoint: RedisEndpointHook | None,
    ) -> Stage:
        """Where the rollback stands (redis/stages.py), logged."""
        try:
            if endpoint is not None:
                stage, why = endpoint_rollback_stage(
                    replication_state(source),
                    replication_state(target),
                    source_address,
                    target_address,
                    routed_side(endpoint, source_address, target_address),
                    switch_marker(source),
                    switch_marker(target),
                )
            else:
                stage, why = rollback_stage(
                    replication_state(source),
                    replication_state(target),
                    source_address,
                    target_address,
                    switch_marker(source),
                    switch_marker(target),
                )
        except MigrationError as exc:
            raise fail(f"{self.task_id}: {exc}") from None
        self.log.info("Redis rollback: %s -> %s", why, "nothing to undo" if stage == "nothing" else stage)
        return stage

    def _copy_back(self, started: float) -> dict[str, Any]:
        source_hook, target_hook = self.hooks()
        source, target = source_hook.client(), target_hook.client()
        switched_at = switch_marker(target)
        endpoint = self.endpoint()
        if endpoint is not None:
            # The endpoint's routing says where writers are; the markers only what is left to tidy.
            if routed_side(endpoint, source_hook.address, target_hook.address) == "target":
                moved = self._move_back(endpoint, replicated=False)
            elif switched_at or switch_marker(source):
                moved = {}
            else:
                self.log.info(
                    "The endpoint %s routes to the source, no marker: nothing to undo", endpoint.describe()
                )
                return {"mode": "copy", "changed": False, "seconds": round(time.time() - started, 2)}
            source.delete(SWITCH_MARKER)
            target.delete(SWITCH_MARKER)
            self.log.info("Writers on the source through %s; markers deleted %s", endpoint.describe(), moved)
            return {"mode": "copy", "changed": True, "seconds": round(time.time() - started, 2), **moved}
        if not switched_at:
            self.log.info(
                "No switch marker on the target %s: never switched (or rolled back); nothing to undo",
                target_hook.describe(),
            )
            return {"mode": "copy", "changed": False, "seconds": round(time.time() - started, 2)}
        result = copy_keys(target, source)
        # The source too (a marker replicated there by an unfinished replicaof rollback); the target's
        # last, since it is what says there is still something to undo.
        source.delete(SWITCH_MARKER)
        target.delete(SWITCH_MARKER)
        self.log.info(
            "Copied %d key(s) of the target (switched at %s) back to the source (%d expired meanwhile) in "
            "%.1f s; marker deleted",
            result.copied,
            switched_at,
            result.vanished,
            result.seconds,
        )
        return {
            "mode": "copy",
            "changed": True,
            "copied": result.copied,
            "expired_meanwhile": result.vanished,
            "seconds": round(time.time() - started, 2),
        }


class SwitchoverUndoOperator(PhaseUndo, RollbackRedisOperator):
    """The migration's own way back for the writers: clear this task alone, after the switchover
    ended, and every writer goes back to the source: PostgreSQL's through the pooler(s), then Redis's.

    Hangs beside the switchover phase (after `switchover.full_backup`, trigger rule `all_done`,
    upstream of nothing). Like `services.undo` it never acts by itself (a failed step is fixed and
    cleared with downstream) and acts only when the run was cleared after the phase ended, without
    it (`PhaseUndo`, `acts_on_failure` off). Refuses, changing nothing, while any weighted record
    sends users to production, naming them: clear `traffic.undo` first.

    PostgreSQL: the rollback DAG's `database.repoint_poolers`, the write-switch engine in reverse
    (postgres/switchover.py): freeze, the source catches up through reverse replication, sequences,
    poolers repointed to the source, resume; reverse replication dropped. Redis: the rollback DAG's
    `redis.rollback`, this module's RollbackRedisOperator (through the write endpoint, in a freeze).
    The forward replication's drop (`database.drop_forward_replication`) stays in the rollback DAG:
    after a switchover there is none left to drop. The operator lives here, not in switchover.py,
    because the Redis rollback's logic is in this module and an operator module imports no other.

    :param database: the write switch's clusters, poolers, reverse replication, sequence margin and
        freeze limit (plan.write_switch_arguments)
    :param route53: the weighted records (plan.route53_arguments), read for the users' guard
    """

    template_fields: Sequence[str] = (*RollbackRedisOperator.template_fields, "database", "route53")
    not_asked = (
        "not cleared alone after the switchover ended (clear this task alone to move every writer back "
        "to the source; a failed step is fixed and cleared with downstream)"
    )

    database: Mapping[str, Any]
    route53: Mapping[str, Any]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._write_switch: WriteSwitch | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        why = self.undo_or_skip(context)
        poolers = ", ".join(p["name"] for p in self.database["poolers"])
        if self.planned(
            context,
            f"refuse while any of {', '.join(self.route53['records'])} sends users to production",
            f"PAUSE pooler(s) {poolers}; wait until {self.database['source_conn_id']} has every write; "
            f"sync sequences; repoint to the source, RESUME; drop {self.database['reverse_subscription']}",
            f"move Redis writers back to {self.source_conn_id} as redis.rollback does",
        ):
            return {"mode": "plan", "why": why}
        self.refuse_while_users_on_production(self.route53, "moving writers back to the source")
        self.log.info("Every writer back to the source: %s", why)
        postgres = self.move_postgres_writers_back(context)
        # Kept in XCom: the Redis rollback may defer, and its resumed task reports both.
        context["ti"].xcom_push(key="postgres", value=postgres)
        return {"mode": "apply", "postgres": postgres, "redis": super().execute(context)}

    def execute_complete(
        self, context: Context, event: dict[str, Any], started: float | None = None
    ) -> dict[str, Any]:
        redis = super().execute_complete(context, event, started)
        postgres = context["ti"].xcom_pull(task_ids=self.task_id, key="postgres")
        return {"mode": "apply", "postgres": postgres, "redis": redis}

    def move_postgres_writers_back(self, context: Context) -> dict[str, Any]:
        """The rollback DAG's `database.repoint_poolers`: the write-switch engine, in reverse."""
        database = self.database
        self._write_switch = WriteSwitch(
            rollback_direction(
                MigrationPostgresHook(database["source_conn_id"]),
                MigrationPostgresHook(database["target_conn_id"]),
                database["reverse_publication"],
                database["reverse_subscription"],
            ),
            [Pooler.of(p) for p in database["poolers"]],
            sequence_margin=int(database["sequence_margin"]),
            timeout_seconds=float(database["timeout_seconds"]),
            marker_id=f"rollback:{context.get('run_id') or 'manual'}",
            log=self.log,
        )
        try:
            return self._write_switch.run()
        except MigrationError as exc:
            raise fail(f"{self.task_id}: {exc}") from None
        finally:
            self._write_switch = None

    def on_kill(self) -> None:
        switch = self._write_switch
        if switch is not None and switch.freezing:
            self.log.warning("Killed during the write freeze: undoing it and resuming writers")
            for line in switch.abort():
                self.log.warning("Undone: %s", line)
