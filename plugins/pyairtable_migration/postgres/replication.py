"""Waiting for a subscriber to catch up with its publisher, inside a task (not on the triggerer).

The validators re-check a differing range only after the side that follows has applied the
writers' side's WAL up to where it was when the difference was seen: a write in flight is then
not reported as loss. The wait is short (seconds), so it blocks instead of deferring.
"""

from __future__ import annotations

import time
from typing import Any

from pyairtable_migration.hooks.database import (
    MigrationError,
    MigrationPostgresHook,
    applied_lsn,
    current_lsn,
    get_slot,
    get_subscription,
    lsn_reached,
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
