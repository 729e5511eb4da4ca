"""Where a Redis rollback stands, read from both servers' roles and switch markers, and the bounded
wait before a promotion.

replicaof rolls back in stages, and a run killed between any two is completed by the next, which
reads the servers first and continues from there:
  1. `replicate`: the source REPLICAOF the target;
  2. `catch_up`: once its offset reaches the target's, the source REPLICAOF NO ONE (it holds the
     target's keys, and the marker with them);
  3. `repoint_target`: the target REPLICAOF the source (the pre-switch arrangement);
  4. `unmark`: the marker deleted on the source (the replica follows).
The marker leaves the source last on purpose: with both servers primaries, a marked source is how
a re-run tells "stopped after stage 2" from "switched, rollback not begun".
"""

from __future__ import annotations

import time
from typing import Literal

import redis

from pyairtable_migration.hooks.database import MigrationError
from pyairtable_migration.hooks.redis_hook import SWITCH_MARKER, ReplicationState, replication_state

Stage = Literal["nothing", "replicate", "catch_up", "repoint_target", "unmark"]


def rollback_stage(
    source: ReplicationState,
    target: ReplicationState,
    source_address: tuple[str, int],
    target_address: tuple[str, int],
    source_marker: str | None,
    target_marker: str | None,
) -> tuple[Stage, str]:
    """The stage to continue from, and why; neither switched nor staging's arrangement is refused."""
    if target.replicates(*source_address):
        if source_marker:
            return "unmark", "the target replicates the source again; the marker is left"
        return "nothing", "the target replicates the source (never switched, or rolled back)"
    if source.replicates(*target_address):
        return "catch_up", "the source replicates the target"
    if source.role == target.role == "master":
        if source_marker:
            return "repoint_target", "the source was promoted with the target's keys"
        if target_marker:
            return "replicate", f"the target was switched at {target_marker}"
        return "nothing", "no switch marker on the target: it was never switched"
    raise MigrationError(
        f"neither switched nor the staging arrangement: the source is a {source.role} of "
        f"{source.master_host}:{source.master_port}, the target a {target.role} of "
        f"{target.master_host}:{target.master_port}"
    )


def endpoint_rollback_stage(
    source: ReplicationState,
    target: ReplicationState,
    source_address: tuple[str, int],
    target_address: tuple[str, int],
    routed: str,
    source_marker: str | None,
    target_marker: str | None,
) -> tuple[Stage, str]:
    """The stage to continue from when a write endpoint carries the writers (redis/switch.py): the
    side it routes to is the truth, the markers only say whether the last tidy-up ran.

    `catch_up` then means: wait until the source has caught up, then move the writers in a freeze.
    A marked target that is a primary of its own while the endpoint routes to the source never had
    writers since (a switch stopped before its commit point, or a rollback after it): it replicates
    the source again. Unmarked on both sides, two primaries are staging's own arrangement before
    any sync (nothing to undo)."""
    if routed == "target":
        if source.replicates(*target_address):
            return "catch_up", "the endpoint routes to the target, which the source replicates"
        if source.role == target.role == "master":
            return "replicate", "the endpoint routes to the target; the source is a primary of its own"
    elif target.replicates(*source_address):
        if source_marker:
            return (
                "unmark",
                "the endpoint routes to the source, which the target replicates; the marker is left",
            )
        return "nothing", "the endpoint routes to the source, which the target replicates"
    elif source.role == target.role == "master":
        if source_marker or target_marker:
            return "repoint_target", "the endpoint routes to the source; the target is a primary of its own"
        return "nothing", "the endpoint routes to the source; no switch marker: never switched"
    raise MigrationError(
        f"the Redis write endpoint routes to the {routed}, but the source is a {source.role} of "
        f"{source.master_host}:{source.master_port} and the target a {target.role} of "
        f"{target.master_host}:{target.master_port}: not an arrangement the migration makes"
    )


def emptied_target(target_keys: int, source_keys: int) -> str | None:
    """Why replicating the target would be wrong: a switched target held every source key, so one
    holding none (but its marker) while the source still has keys lost its data."""
    if target_keys <= 0 < source_keys:
        return (
            f"the target holds no keys but its switch marker, the source {source_keys}: replicating the "
            "target would empty the source; nothing changed. If the target lost its data, delete its "
            f"marker (DEL {SWITCH_MARKER}) and the source stays as it is; if empty is right, empty the "
            "source (FLUSHALL) and run again."
        )
    return None


def wait_caught_up(
    primary: redis.Redis, replica: redis.Redis, timeout_seconds: float
) -> tuple[bool, int, int]:
    """The bounded wait right before a promotion: (caught up?, the replica's offset, the primary's)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        wanted = replication_state(primary).offset
        state = replication_state(replica)
        if state.link_up and not state.sync_in_progress and state.offset >= wanted:
            return True, state.offset, wanted
        if time.monotonic() > deadline:
            return False, state.offset, wanted
        time.sleep(0.05)
