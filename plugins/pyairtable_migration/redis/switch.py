"""Moving Redis writers from one server to the other through the one write endpoint, in a freeze.

Both environments' services reach Redis through one endpoint (HAProxy in TCP mode in the lab; on
AWS a proxy in front of ElastiCache, or the replication group's primary endpoint), as they reach
PostgreSQL through PgBouncer. A move from `old` to `new` (the switchover: source -> target; the
rollback: target -> source):
  1. CLIENT PAUSE WRITE on `old`, bounded by the freeze: writers' commands wait, and Redis holds
     its replication offset still while paused, so "caught up" is a fixed mark;
  2. `new`'s offset reaches it (a bounded wait inside the freeze);
  3. REPLICAOF NO ONE on `new`: no writer reaches it yet, the endpoint still routes to `old`;
  4. the endpoint routes to `new` and cuts the connections to `old` — the commit point. A command
     waiting in the pause on a cut connection is dropped unexecuted; its client retries through the
     endpoint and lands on `new`;
  5. `old` REPLICAOF `new` (kept current for the way back), then CLIENT UNPAUSE: a command still
     waiting on `old` answers READONLY, and its client retries through the endpoint.
A failure before the commit point puts everything back (`new` replicates `old` again, the pause is
lifted): writers never left `old`. A failure after it leaves writers on `new`; `finish` completes
step 5 on the next run. When the endpoint cannot be read after a failed move, nothing is undone:
undoing a promotion the endpoint already routes to would drop `new`'s writes, while a `new` left
promoted but unrouted is resynchronised by the next run (no writer reached it).
Checked on Redis 7.0: the offset stands still during CLIENT PAUSE WRITE; a paused command whose
connection closes is never executed; one still open answers READONLY once its server is a replica.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from pyairtable_migration.hooks.database import MigrationError
from pyairtable_migration.hooks.redis_endpoint import same_address
from pyairtable_migration.hooks.redis_hook import SWITCH_MARKER, copy_keys, replication_state
from pyairtable_migration.redis.stages import wait_caught_up

Address = tuple[str, int]
# The share of the freeze the catch-up may take, and the point past which the endpoint is no
# longer moved (the pause could lift before the move completes, letting writes reach `old`).
CATCH_UP_SHARE = 0.5
LAST_MOVE_SHARE = 0.8

log = logging.getLogger(__name__)


class WriteEndpoint(Protocol):
    """What a move needs of the endpoint (hooks/redis_endpoint.py's RedisEndpointHook)."""

    def describe(self) -> str: ...

    def routed_to(self) -> Address | None: ...

    def route_to(self, address: Address) -> bool: ...


@dataclass(frozen=True)
class Server:
    """One Redis server as a move sees it: a name for messages, a client, the address the endpoint
    and the other server know it by, and its password (for the other's masterauth; never logged)."""

    name: str
    client: redis.Redis
    address: Address
    password: str | None = None

    def follow(self, leader: Server) -> None:
        """REPLICAOF `leader`, unless it already does."""
        if replication_state(self.client).replicates(*leader.address):
            return
        if leader.password:
            self.client.config_set("masterauth", leader.password)
        self.client.replicaof(*leader.address)
        log.info("%s: REPLICAOF %s:%d", self.name, *leader.address)


@dataclass(frozen=True)
class Move:
    """What a move did: the writers' stall (pause to the endpoint's move), the catch-up (or copy)
    inside it, and the offset `new` was promoted at (or the keys copied)."""

    stall_ms: float
    catch_up_ms: float
    offset: int


def side_of(routed: Address | None, source: Address, target: Address) -> str | None:
    """Which server an endpoint's routed address is (`source`, `target`), or None for neither."""
    if routed is not None and same_address(routed, source):
        return "source"
    if routed is not None and same_address(routed, target):
        return "target"
    return None


def routed_side(endpoint: WriteEndpoint, source: Address, target: Address) -> str:
    """`source` or `target`: where the endpoint sends writers; anything else is refused, named."""
    routed = endpoint.routed_to()
    side = side_of(routed, source, target)
    if side is not None:
        return side
    where = "no server" if routed is None else f"{routed[0]}:{routed[1]}"
    raise MigrationError(
        f"the Redis write endpoint {endpoint.describe()} routes to {where}, neither the source "
        f"{source[0]}:{source[1]} nor the target {target[0]}:{target[1]}"
    )


def move_writers(
    old: Server,
    new: Server,
    endpoint: WriteEndpoint,
    freeze_seconds: float,
    *,
    replicated: bool = True,
    on_promoted: Callable[[redis.Redis], object] = lambda client: None,
) -> Move:
    """Steps 1-5 above, `new` replicating `old`. Without replication (`replicated=False`: copy mode,
    for managed servers that refuse REPLICAOF) steps 2-3 are a last copy pass of every key and
    step 5 only lifts the pause: `old` cannot follow. `on_promoted` runs on `new` right before the
    endpoint moves (the switchover marks it switched there)."""
    started = time.monotonic()
    old.client.client_pause(max(1, int(freeze_seconds * 1000)), all=False)
    try:
        offset = _take_over(old, new, freeze_seconds, replicated)
        caught_up_ms = (time.monotonic() - started) * 1000
        on_promoted(new.client)
        if replication_state(new.client).role != "master":  # still there, still promoted
            raise MigrationError(f"{new.name} is no longer a primary right before the endpoint moves")
        if time.monotonic() - started > freeze_seconds * LAST_MOVE_SHARE:
            raise MigrationError(
                f"the freeze ({freeze_seconds} s) is nearly spent before the endpoint moves: it stays, "
                "since the pause could lift while it moves"
            )
        try:
            endpoint.route_to(new.address)
        except Exception:
            if not _routes_to(_routed_to_after_failure(endpoint), new):
                raise
        stall_ms = (time.monotonic() - started) * 1000  # the commit point: writers reach `new`
    except Exception as exc:
        _undo(old, new, endpoint, replicated, exc)
        raise MigrationError(
            f"moving Redis writers {old.name} -> {new.name} failed before the commit point "
            f"({str(exc).strip() or type(exc).__name__}); undone: writers stay on {old.name}, nothing lost"
        ) from exc
    log.info(
        "Redis writers moved %s -> %s through %s: %s in %.0f ms, %.0f ms stall",
        old.name,
        new.name,
        endpoint.describe(),
        f"caught up at offset {offset}" if replicated else f"{offset} key(s) copied",
        caught_up_ms,
        stall_ms,
    )
    if replicated:
        finish(old, new)
    else:
        old.client.client_unpause()
    return Move(stall_ms=round(stall_ms, 1), catch_up_ms=round(caught_up_ms, 1), offset=offset)


def _take_over(old: Server, new: Server, freeze_seconds: float, replicated: bool) -> int:
    """Inside the freeze: `new` holds everything `old` acknowledged, and takes writes. The offset it
    was promoted at (replicated), or the keys copied."""
    if not replicated:
        return copy_keys(old.client, new.client).copied
    caught_up, offset, wanted = wait_caught_up(old.client, new.client, freeze_seconds * CATCH_UP_SHARE)
    if not caught_up:
        raise MigrationError(
            f"{new.name} offset {offset} did not reach {old.name}'s {wanted} within "
            f"{freeze_seconds * CATCH_UP_SHARE:.2f} s of the freeze"
        )
    new.client.replicaof("NO", "ONE")
    return offset


def finish(old: Server, new: Server) -> bool:
    """After the commit point: `old` follows `new` and its pause is lifted. Whether `old` had to be
    repointed (a run stopped after the commit point)."""
    repointed = not replication_state(old.client).replicates(*new.address)
    old.follow(new)
    old.client.client_unpause()
    return repointed


def _routes_to(routed: Address | None, server: Server) -> bool:
    return routed is not None and same_address(routed, server.address)


def _routed_to_after_failure(endpoint: WriteEndpoint) -> Address | None:
    try:
        return endpoint.routed_to()
    except Exception as exc:
        raise MigrationError(
            f"the Redis write endpoint {endpoint.describe()} failed to move and cannot be read now "
            f"({exc}): writers may be on either server, so nothing is undone. Read the endpoint; "
            "clear this task once it answers (a promoted server it does not route to is synchronised "
            "again, losing nothing)"
        ) from exc


def _undo(old: Server, new: Server, endpoint: WriteEndpoint, replicated: bool, cause: BaseException) -> None:
    """Before the commit point: the endpoint on `old` and its pause lifted first (writers carry on),
    then `new` unmarked and its replica again; `new` not answering (it may be what failed) is left
    for the next run, which finds it promoted but unrouted and synchronises it again."""
    try:
        if not _routes_to(_routed_to_after_failure(endpoint), old):
            endpoint.route_to(old.address)
        old.client.client_unpause()
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationError(
            f"moving Redis writers {old.name} -> {new.name} failed before the commit point ({cause}), "
            f"and putting the endpoint back on {old.name} failed too ({exc}): read the endpoint; the "
            f"pause on {old.name} lifts by itself; clear this task"
        ) from exc
    try:
        if replication_state(new.client).role == "master":
            new.client.delete(SWITCH_MARKER)  # a full resync would drop it too; not left to chance
            if replicated:
                new.follow(old)
    except redis.RedisError as exc:
        log.warning(
            "%s did not answer while being put back (%s): the next run synchronises it", new.name, exc
        )
    log.warning("Redis move %s -> %s failed before the commit point: undone (%s)", old.name, new.name, cause)
