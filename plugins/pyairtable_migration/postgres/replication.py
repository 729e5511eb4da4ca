"""Forward replication set up and taken down (publication, subscription), and the wait for a
subscriber to catch up with its publisher inside a task (not on the triggerer).

The subscription's initial copy starts from empty tables: rows an abandoned attempt left are
emptied first (never once writers are on the target: the operators refuse before that). The
validators re-check a differing range only after the side that follows has applied the
writers' side's WAL up to where it was when the difference was seen: a write in flight is then
not reported as loss. The wait is short (seconds), so it blocks instead of deferring.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pyairtable_migration.hooks.database import (
    MigrationError,
    MigrationPostgresHook,
    Table,
    applied_lsn,
    current_lsn,
    drop_subscription,
    empty_tables,
    ensure_publication,
    ensure_replica_identity_full,
    fetch_value,
    get_publication,
    get_slot,
    get_subscription,
    lacking_replica_identity,
    lsn_reached,
    quiet_statement_logging,
    statement,
    table_states,
    user_tables,
)


def catch_up(
    publisher: MigrationPostgresHook,
    subscriber: MigrationPostgresHook,
    subscription: str,
    timeout_seconds: float,
    log: Any = None,
) -> None:
    """Return once the subscriber has applied the publisher's WAL up to its current position."""
    with publisher.cursor() as pub, subscriber.cursor() as sub:
        state = get_subscription(sub, subscription)
        if state is None:
            if log is not None:
                log.info("No subscription %s on the subscriber: nothing in flight to wait for", subscription)
            return
        wanted = current_lsn(pub)
        slot_name = state["subslotname"] or subscription
        deadline = time.monotonic() + timeout_seconds
        while True:
            if lsn_reached(sub, applied_lsn(sub, subscription), wanted):
                return
            slot = get_slot(pub, slot_name)
            if slot is not None and lsn_reached(pub, slot["confirmed_flush_lsn"], wanted):
                return
            if time.monotonic() > deadline:
                raise MigrationError(
                    f"the subscriber did not reach the publisher's LSN {wanted} within {timeout_seconds:.0f} "
                    f"s (subscription {subscription} {'enabled' if state['subenabled'] else 'DISABLED'})"
                )
            time.sleep(0.1)


LAG_PROBE = "lag-probe"


def marker_delay(
    source: MigrationPostgresHook, target: MigrationPostgresHook, timeout_seconds: float, poll: float = 0.02
) -> float:
    """Seconds from a marker row's write on the source until the target has applied it: the lag
    in time, end to end (the slot's lag in bytes says how much is behind, not how long). The clock
    starts before the write, so a marker applied before the first look still counts its commit's
    round trip, not nothing."""
    with source.cursor() as source_cursor, target.cursor() as target_cursor:
        started = time.monotonic()
        written_at = fetch_value(
            source_cursor, statement("marker_write"), {"id": LAG_PROBE, "side": "source"}
        )
        while fetch_value(target_cursor, statement("marker_seen"), {"id": LAG_PROBE}) != written_at:
            if time.monotonic() - started > timeout_seconds:
                raise MigrationError(
                    f"a marker committed on the source did not reach the target in {timeout_seconds:.0f} s"
                )
            time.sleep(poll)
        return time.monotonic() - started


def publish(
    source: MigrationPostgresHook, publication: str, replica_identity_full: Sequence[Table], log: Any
) -> dict[str, Any]:
    """On the source: REPLICA IDENTITY FULL where allowed and missing, then the publication of
    every user table, created when absent, verified (and completed) when present."""
    with source.cursor() as cursor:
        changed = ensure_replica_identity_full(cursor, replica_identity_full)
        for line in changed:
            log.info("Source: %s", line)
        lacking = lacking_replica_identity(cursor)
        if lacking:
            raise MigrationError(
                f"table(s) {', '.join(map(str, lacking))} have no replica identity and are not listed "
                "under database.replica_identity_full: a publication now would break their UPDATE/DELETE"
            )
        action = ensure_publication(cursor, publication)
    log.info("Source: publication %s %s", publication, action)
    return {"publication": publication, "action": action, "replica_identity_changes": changed}


def subscribe(
    source: MigrationPostgresHook,
    target: MigrationPostgresHook,
    publication: str,
    subscription: str,
    log: Any,
) -> dict[str, Any]:
    """On the target: the subscription to the source's publication, created when absent (after
    removing what an abandoned attempt left: its slot on the source, rows in the target's tables),
    verified when present."""
    with target.cursor() as target_cursor, source.cursor() as source_cursor:
        existing = get_subscription(target_cursor, subscription)
        if existing is not None:
            slot = get_slot(source_cursor, existing["subslotname"] or subscription)
            if list(existing["subpublications"]) != [publication]:
                raise MigrationError(
                    f"subscription {subscription} subscribes to {existing['subpublications']}, not "
                    f"[{publication}]"
                )
            if slot is None:
                raise MigrationError(
                    f"subscription {subscription} exists but its slot is gone from the source: "
                    "changes since then are lost to it; reset the target and run the database phase "
                    "again"
                )
            states = table_states(target_cursor, subscription)
            ready = sum(1 for s in states.values() if s == "r")
            log.info(
                "Target: subscription %s exists (%s), slot on the source %s, lag %s bytes; %d/%d "
                "tables ready",
                subscription,
                "enabled" if existing["subenabled"] else "DISABLED",
                "active" if slot["active"] else "inactive",
                slot["lag_bytes"],
                ready,
                len(states),
            )
            return {
                "subscription": subscription,
                "action": "verified",
                "enabled": existing["subenabled"],
            }
        leftover = get_slot(source_cursor, subscription)
        if leftover is not None:
            if leftover["active"]:
                raise MigrationError(
                    f"the source has an active replication slot {subscription} but the target has "
                    "no such subscription: another subscriber uses it; configure another subscription "
                    "name"
                )
            source_cursor.execute(statement("replication_slot_drop"), {"name": subscription})
            log.info("Source: dropped replication slot %s left by an earlier attempt", subscription)
        filled = empty_tables(target_cursor, sorted(user_tables(target_cursor)))
        if filled:
            log.info(
                "Target: emptied every table before the initial copy (%s held rows of an abandoned copy)",
                ", ".join(str(t) for t in filled),
            )
        quiet_statement_logging(target_cursor)
        target_cursor.execute(
            statement("subscription_create", subscription=subscription, publication=publication),
            {"conninfo": source.replication_conninfo(), "slot": subscription},
        )
        states = table_states(target_cursor, subscription)
    log.info(
        "Target: created subscription %s to %s (%s): initial copy of %d tables started; slot %s on the "
        "source",
        subscription,
        publication,
        source.describe(),
        len(states),
        subscription,
    )
    return {"subscription": subscription, "action": "created", "tables": len(states)}


def drop_forward_replication(
    source: MigrationPostgresHook,
    target: MigrationPostgresHook,
    publication: str,
    subscription: str,
    log: Any,
) -> dict[str, Any]:
    """The subscription on the target (its slot on the source with it), then the publication on the
    source; what was dropped."""
    dropped = []
    with target.cursor() as cursor:
        if get_subscription(cursor, subscription) is not None:
            drop_subscription(cursor, subscription)
            dropped.append(f"subscription {subscription} on the target (and its slot on the source)")
    with source.cursor() as cursor:
        if get_publication(cursor, publication) is not None:
            cursor.execute(statement("publication_drop", publication=publication))
            dropped.append(f"publication {publication} on the source")
    for line in dropped:
        log.info("Dropped %s", line)
    if not dropped:
        log.info("No forward replication between the source and the target: nothing to drop")
    return {"dropped": dropped, "changed": bool(dropped)}
