"""The database phase's waiting, on the triggerer: the initial sync, the lag gate, Redis catching up.

Like the traffic triggers, each calls the project's synchronous hooks in a thread
(`asyncio.to_thread`), so the triggerer's event loop never blocks and connections resolve as in
any task. Each yields exactly one event: `status` "ok", "failed" (with a `message` that names the
table, the LSN and the remedy when there is one) or "timeout".
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent

from pyairtable_migration.hooks.database import (
    MigrationPostgresHook,
    get_slot,
    get_subscription,
    statement,
    subscription_errors,
    subscription_failure,
    table_states,
)
from pyairtable_migration.hooks.redis_hook import MigrationRedisHook, replication_state
from pyairtable_migration.triggers.base import PollingTrigger, failure, success, trigger_fields

STATE_NAMES = {"i": "waiting", "d": "copying", "f": "copied", "s": "catching up", "r": "ready"}


# `disable_on_error` also stops a subscription on a lost connection (the publisher restarted, the
# network dropped), not only on a conflicting row. A failure that names no conflicting row is
# resumed (ENABLE) up to this many times for the same pending transaction; a conflict, or the same
# transaction failing again, fails the task with the diagnosis.
RESUMES_PER_TRANSACTION = 2


class DisabledSubscriptionHandler:
    """Decides, each time the subscription is found disabled, whether to resume it or to fail."""

    def __init__(self, trigger: SubscriptionTrigger) -> None:
        self.trigger = trigger
        self.source = MigrationPostgresHook(trigger.source_conn_id)
        self.target = MigrationPostgresHook(trigger.target_conn_id)
        self.publication = trigger.publication
        self.resumed: Counter[str] = Counter()

    def handle(self, subscription: str, slot: str) -> str | None:
        """None when the subscription was enabled again; else the failure message."""
        with self.source.cursor() as publisher, self.target.cursor() as subscriber:
            failure = subscription_failure(
                subscription=subscription,
                publication=self.publication,
                subscriber=subscriber,
                publisher=publisher,
                slot=slot,
                subscriber_name=f"the target ({self.target.describe()})",
            )
            apply_errors, sync_errors = subscription_errors(subscriber, subscription)
            counted = f"errors counted: {apply_errors} apply, {sync_errors} table sync"
            key = failure.pending_lsn or "none pending"
            if failure.conflicting or self.resumed[key] >= RESUMES_PER_TRANSACTION:
                again = f"; it failed again after {self.resumed[key]} resume(s)" if self.resumed[key] else ""
                return f"{failure.message} ({counted}{again})"
            self.resumed[key] += 1
            subscriber.execute(statement("subscription_enable", subscription=subscription))
        self.trigger.log.warning(
            "Subscription %s was disabled with no conflicting row on the target (%s; pending: %s): a lost "
            "connection, e.g. the source restarted. Enabled it again (resume %d of %d for this transaction)",
            subscription,
            counted,
            key,
            self.resumed[key],
            RESUMES_PER_TRANSACTION,
        )
        return None


@trigger_fields
class SubscriptionTrigger(PollingTrigger):
    """Base of the waits on the target's subscription to the source's publication, which both
    watch for the subscription being disabled (DisabledSubscriptionHandler)."""

    source_conn_id: str
    target_conn_id: str
    subscription: str
    publication: str


@trigger_fields
class InitialSyncTrigger(SubscriptionTrigger):
    """Waits until every table of `subscription` is in state r (ready), logging done / total."""

    timeout_seconds: float
    poll_seconds: float = 2.0

    def sample(self) -> dict[str, Any]:
        target = MigrationPostgresHook(self.target_conn_id)
        with target.cursor() as cursor:
            subscription = get_subscription(cursor, self.subscription)
            states = table_states(cursor, self.subscription) if subscription else {}
            errors = subscription_errors(cursor, self.subscription) if subscription else (0, 0)
        return {
            "subscription": subscription,
            "states": {str(t): s for t, s in states.items()},
            "errors": errors,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        last_line = None
        states: dict[str, str] = {}
        disabled = DisabledSubscriptionHandler(self)
        async for observed in self.poll(
            self.poll_seconds, "Could not read the subscription's state (will retry): %s"
        ):
            if observed is not None:
                subscription, states = observed["subscription"], observed["states"]
                if subscription is None:
                    yield failure(
                        "failed",
                        f"subscription {self.subscription} does not exist on the target; "
                        "run create_subscription first",
                    )
                    return
                ready = sorted(t for t, s in states.items() if s == "r")
                pending = {t: s for t, s in states.items() if s != "r"}
                line = f"Initial sync: {len(ready)} / {len(states)} tables ready" + (
                    "; " + ", ".join(f"{t} {STATE_NAMES.get(s, s)}" for t, s in sorted(pending.items())[:8])
                    if pending
                    else ""
                )
                if line != last_line:
                    self.log.info("%s (%.0f s)", line, time.monotonic() - started)
                    last_line = line
                if states and not pending:
                    yield success(
                        f"every table of {self.subscription} ready ({len(states)})",
                        tables=len(states),
                        seconds=round(time.monotonic() - started, 1),
                    )
                    return
                if not subscription["subenabled"]:
                    message = await asyncio.to_thread(
                        disabled.handle, self.subscription, subscription["subslotname"] or self.subscription
                    )
                    if message is None:  # resumed: look again after the interval
                        continue
                    stuck = ", ".join(f"{t} ({STATE_NAMES.get(s, s)})" for t, s in sorted(pending.items()))
                    yield failure(
                        "failed",
                        f"initial sync stopped with {len(pending)} table(s) not ready: {stuck}. {message}. "
                        "A table stuck while copying usually means the target already holds rows of it: "
                        "empty that table on the target (TRUNCATE) and ENABLE.",
                    )
                    return
            if time.monotonic() - started > self.timeout_seconds:
                counts = Counter(STATE_NAMES.get(s, s) for s in states.values())
                yield failure(
                    "timeout",
                    f"initial sync not done after {self.timeout_seconds:.0f} s: "
                    + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
                )
                return


@trigger_fields
class ReplicationLagTrigger(SubscriptionTrigger):
    """Passes once the slot's lag (current WAL vs confirmed flush) is below the threshold for
    `lag_consecutive_samples` samples in a row; fails at once on a disabled subscription or new
    apply errors. Arguments are named as in the config (database.lag_*)."""

    lag_threshold_bytes: int
    lag_consecutive_samples: int
    lag_sample_seconds: float
    lag_timeout_seconds: float

    def sample(self) -> dict[str, Any]:
        target = MigrationPostgresHook(self.target_conn_id)
        source = MigrationPostgresHook(self.source_conn_id)
        with target.cursor() as cursor:
            subscription = get_subscription(cursor, self.subscription)
            errors = subscription_errors(cursor, self.subscription) if subscription else (0, 0)
        slot_name = (subscription or {}).get("subslotname") or self.subscription
        with source.cursor() as cursor:
            slot = get_slot(cursor, slot_name)
        return {"subscription": subscription, "errors": list(errors), "slot": slot, "slot_name": slot_name}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        streak: list[int] = []
        samples = 0
        first_errors: list[int] | None = None
        disabled = DisabledSubscriptionHandler(self)
        async for observed in self.poll(
            self.lag_sample_seconds, "Lag sample failed (counts as not below the threshold): %s"
        ):
            if observed is None:
                streak = []
            else:
                samples += 1
                subscription, slot = observed["subscription"], observed["slot"]
                if subscription is None or slot is None:
                    missing = (
                        f"subscription {self.subscription} on the target"
                        if subscription is None
                        else f"replication slot {observed['slot_name']} on the source"
                    )
                    yield failure("failed", f"{missing} does not exist")
                    return
                if not subscription["subenabled"]:
                    slot_name = observed["slot_name"]
                    message = await asyncio.to_thread(disabled.handle, self.subscription, slot_name)
                    if message is None:  # resumed: count apply errors from here on
                        streak, first_errors = [], None
                        continue
                    yield failure("failed", message, lag_bytes=slot["lag_bytes"])
                    return
                errors = observed["errors"]
                first_errors = first_errors or errors
                if errors[0] > first_errors[0]:
                    yield failure(
                        "failed",
                        f"subscription {self.subscription} hit {errors[0] - first_errors[0]} apply "
                        "error(s) during the gate and keeps retrying (it was created without "
                        "disable_on_error); the failing table and LSN are in the target's server log "
                        "(`processing remote data ... finished at <LSN>`); fix the conflicting row or "
                        f"ALTER SUBSCRIPTION {self.subscription} SKIP (lsn = '<LSN>')",
                    )
                    return
                lag = int(slot["lag_bytes"] or 0)
                streak = [*streak, lag] if lag < self.lag_threshold_bytes else []
                self.log.info(
                    "Lag %d bytes (threshold %d): %d / %d consecutive sample(s) below",
                    lag,
                    self.lag_threshold_bytes,
                    len(streak),
                    self.lag_consecutive_samples,
                )
                if len(streak) >= self.lag_consecutive_samples:
                    yield success(
                        f"lag below {self.lag_threshold_bytes} bytes for {self.lag_consecutive_samples} "
                        "consecutive samples",
                        samples=samples,
                        lags=streak[-self.lag_consecutive_samples :],
                        seconds=round(time.monotonic() - started, 1),
                    )
                    return
            if time.monotonic() - started > self.lag_timeout_seconds:
                yield failure(
                    "timeout",
                    f"lag not below {self.lag_threshold_bytes} bytes for {self.lag_consecutive_samples} "
                    f"consecutive samples within {self.lag_timeout_seconds:.0f} s ({samples} samples)",
                )
                return


@trigger_fields
class RedisCatchUpTrigger(PollingTrigger):
    """Waits until the target Redis replicates the source with its offset at the source's."""

    source_conn_id: str
    target_conn_id: str
    timeout_seconds: float
    poll_seconds: float = 0.5

    def sample(self) -> dict[str, Any]:
        source_hook = MigrationRedisHook(self.source_conn_id)
        source = replication_state(source_hook.client())
        target = replication_state(MigrationRedisHook(self.target_conn_id).client())
        host, port = source_hook.address
        return {
            "source_offset": source.offset,
            "target_offset": target.offset,
            "replicating": target.replicates(host, port),
            "link_up": target.link_up,
            "syncing": target.sync_in_progress,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        last: dict[str, Any] = {}
        async for observed in self.poll(self.poll_seconds, "Redis sample failed (will retry): %s"):
            last = observed or last  # a failed sample leaves the last one standing
            if last and not last["replicating"]:
                yield failure("failed", "the target no longer replicates the source")
                return
            if (
                last
                and last["link_up"]
                and not last["syncing"]
                and last["target_offset"] >= last["source_offset"]
            ):
                yield success(
                    "the target has caught up with the source",
                    **last,
                    seconds=round(time.monotonic() - started, 2),
                )
                return
            if time.monotonic() - started > self.timeout_seconds:
                yield failure(
                    "timeout", f"target Redis not caught up after {self.timeout_seconds:.0f} s: {last}"
                )
                return
