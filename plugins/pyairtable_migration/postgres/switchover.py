"""The write switchover (and its way back): every writer moves between the clusters at once,
through the pooler(s), with a short stall instead of errors, and nothing lost.

Forward (`SwitchDatabaseOperator`), writers leave the source for the target:

    before the freeze   reverse publication on the target (every table), leftovers of an
                        aborted attempt removed
    freeze              PAUSE every pooler (running transactions finish, new ones wait)
                        marker row written on the source; wait until the target has applied it:
                          every commit before the pause is now on the target
                        every sequence on the target := source's last_value + margin steps
                        forward subscription DISABLEd (PostgreSQL 15 has no origin filter, so the
                          two directions must never run at once)
                        reverse replication slot created on the target: it keeps every change
                          writers make from here on
                        repoint every pooler to the target (ini line + RELOAD)
    commit point        RESUME every pooler: writers continue, on the target, once each pooler
                        has logged in there. Clients still waiting SERVE_SECONDS later with no
                        server connection and no transaction served on the target (PgBouncer
                        could not log in: it tries again only server_login_retry later): PAUSE
                        again, and with nothing written on the target the switch is undone
    after               reverse subscription on the source, on that slot (copy_data = false);
                        forward subscription dropped (with its slot on the source), then the
                        forward publication: only the reverse path is left

Anything failing before the commit point, or the freeze outlasting `timeout_seconds`, aborts
cleanly: poolers pointed back, the reverse slot dropped, the forward subscription re-enabled,
RESUME on the untouched source. After the commit point a re-run completes what is left. A
re-run after success finds everything in place and changes nothing. Either checks again that every
pooler serves its writers (the check after RESUME), so a run again confirms a mended login.

Rollback (`RollbackDatabaseOperator`) is the same engine in reverse: pause, marker on the target
until the source has it (reverse replication), sequences on the source, reverse subscription
disabled, repoint to the source, resume, reverse subscription and publication dropped.

The measured write stall (PAUSE issued -> RESUME done) is logged and in the XCom summary, with the
time until the joining side served the waiting writers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pyairtable_migration.hooks.database import (
    MigrationError,
    MigrationPostgresHook,
    drop_subscription,
    ensure_publication,
    fetch_value,
    get_publication,
    get_slot,
    get_subscription,
    lacking_replica_identity,
    quiet_statement_logging,
    statement,
    sync_sequences,
)
from pyairtable_migration.hooks.pgbouncer import Serving
from pyairtable_migration.postgres.drift import drift, read_catalog
from pyairtable_migration.topology import Pooler, Writers, writers

POLL_SECONDS = 0.002
# PgBouncer logs in to a server within milliseconds; after a failed login it tries again only
# server_login_retry (15 s by default) later, its clients waiting meanwhile. Clients still waiting
# this long after RESUME, with no server connection, mean it cannot log in.
SERVE_SECONDS = 5.0
SERVE_POLL_SECONDS = 0.02
REFREEZE_SECONDS = 5.0


@dataclass
class Side:
    name: str
    hook: MigrationPostgresHook

    @property
    def address(self) -> tuple[str, int, str]:
        return self.hook.address


@dataclass
class Direction:
    """Writers move from `leaving` to `joining`; `catch_up_subscription` (on `joining`) replicates
    leaving -> joining from `catch_up_publication` (on `leaving`). A forward switch also starts
    reverse replication joining -> leaving."""

    label: str
    leaving: Side
    joining: Side
    catch_up_subscription: str
    catch_up_publication: str
    reverse_publication: str | None = None
    reverse_subscription: str | None = None

    @property
    def starts_reverse(self) -> bool:
        return self.reverse_publication is not None and self.reverse_subscription is not None


def rollback_direction(
    source: MigrationPostgresHook,
    target: MigrationPostgresHook,
    reverse_publication: str,
    reverse_subscription: str,
) -> Direction:
    """Writers back from the target to the source, which reverse replication kept current: the
    rollback DAG's `database.repoint_poolers` and the migration's `switchover.undo` alike."""
    return Direction(
        label="rollback",
        leaving=Side("target", target),
        joining=Side("source", source),
        catch_up_subscription=reverse_subscription,
        catch_up_publication=reverse_publication,
    )


@dataclass
class Observed:
    """Where the poolers send writers, and the replication objects of both directions."""

    writers: Writers = field(default_factory=lambda: Writers("unknown"))
    catch_up: dict[str, Any] | None = None
    catch_up_publication: dict[str, Any] | None = None
    reverse_subscription: dict[str, Any] | None = None
    reverse_slot: dict[str, Any] | None = None

    def describe(self, direction: Direction) -> str:
        parts = [f"pooler {endpoint.describe()}" for endpoint in self.writers.seen]
        catch_up = self.catch_up
        parts.append(
            f"subscription {direction.catch_up_subscription} on the {direction.joining.name}: "
            + ("absent" if catch_up is None else "enabled" if catch_up["subenabled"] else "disabled")
        )
        if direction.starts_reverse:
            parts.append(
                f"subscription {direction.reverse_subscription} on the {direction.leaving.name}: "
                + ("present" if self.reverse_subscription else "absent")
            )
            parts.append(
                f"slot {direction.reverse_subscription} on the {direction.joining.name}: "
                + ("present" if self.reverse_slot else "absent")
            )
        return "; ".join(parts)


@dataclass
class Timings:
    started: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()

    def ms(self, start: str, end: str) -> float:
        return round((self.marks[end] - self.marks[start]) * 1000, 1)


class WriteSwitch:
    """The engine both operators share; see the module docstring for the steps."""

    def __init__(
        self,
        direction: Direction,
        poolers: Sequence[Pooler],
        *,
        sequence_margin: int,
        timeout_seconds: float,
        marker_id: str,
        log: Any,
    ) -> None:
        self.direction = direction
        self.poolers = list(poolers)
        self.sequence_margin = sequence_margin
        self.timeout_seconds = timeout_seconds
        self.marker_id = marker_id
        self.log = log
        self.freezing = False
        self.unserved: list[str] = []
        self._undo: list[tuple[str, Callable[[], Any]]] = []

    # --- observation --------------------------------------------------------------------------
    def observe(self) -> Observed:
        d = self.direction
        sides = {d.leaving.name: d.leaving.address[:2], d.joining.name: d.joining.address[:2]}
        observed = Observed(writers(self.poolers, sides["source"], sides["target"]))
        unreadable = observed.writers.unreadable
        if any(endpoint.unreachable for endpoint in unreadable):
            # A console that did not answer may answer the retry: not a MigrationError.
            raise ConnectionError("; ".join(f"pooler {endpoint.describe()}" for endpoint in unreadable))
        if unreadable:
            raise MigrationError("; ".join(f"pooler {endpoint.describe()}" for endpoint in unreadable))
        with d.joining.hook.cursor() as cursor:
            observed.catch_up = get_subscription(cursor, d.catch_up_subscription)
            if d.reverse_subscription is not None:
                observed.reverse_slot = get_slot(cursor, d.reverse_subscription)
        with d.leaving.hook.cursor() as cursor:
            observed.catch_up_publication = get_publication(cursor, d.catch_up_publication)
            if d.reverse_subscription is not None:
                observed.reverse_subscription = get_subscription(cursor, d.reverse_subscription)
        return observed

    def _at(self, observed: Observed, side: Side) -> list[str]:
        return observed.writers.on(side.name)

    def finished(self, observed: Observed) -> bool:
        d = self.direction
        return (
            len(self._at(observed, d.joining)) == len(self.poolers)
            and not any(endpoint.paused for endpoint in observed.writers.seen)
            and observed.catch_up is None
            and observed.catch_up_publication is None
            and (not d.starts_reverse or observed.reverse_subscription is not None)
        )

    # --- the switch ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        d = self.direction
        observed = self.observe()
        self.log.info("Observed before the %s: %s", d.label, observed.describe(d))
        if self.finished(observed):
            self._fail_if_unserved(self._still_unserved())
            self.log.info(
                "Writers already go to the %s and the %s is complete: nothing to change",
                d.joining.name,
                d.label,
            )
            return {"changed": False, "writers_on": d.joining.name}
        stray = [endpoint.name for endpoint in observed.writers.seen if endpoint.side is None]
        if stray:
            raise MigrationError(f"pooler(s) {', '.join(stray)} point at neither the source nor the target")
        if self._at(observed, d.joining):
            self.log.info("Past the commit point of an earlier attempt: completing it")
            completed = self._complete(observed)
            self._fail_if_unserved(self._still_unserved())
            return {**completed, "changed": True, "completed_earlier_attempt": True}
        self._prepare(observed)
        summary = self._freeze_and_flip()
        summary.update(self._complete(self.observe()))
        self._fail_if_unserved(self.unserved)
        return {**summary, "changed": True}

    def _still_unserved(self) -> list[str]:
        """Past the commit point (a run again): the poolers whose clients wait with no server
        connection and nothing served for SERVE_SECONDS, as the flip checks after RESUME."""
        before = {pooler.name: pooler.hook.serving(pooler.database) for pooler in self.poolers}
        return [_not_serving(name, state) for name, state in self._unserved(before).items()]

    def _fail_if_unserved(self, unserved: list[str]) -> None:
        """Writes are on the joining side: the switch stands, and the task fails naming who waits."""
        if unserved:
            d = self.direction
            raise MigrationError(
                f"writers are on the {d.joining.name} and the {d.label} is complete, but "
                + "; ".join(unserved)
                + f": fix that pooler's login to the {d.joining.name} (role password, pg_hba.conf); "
                "PgBouncer tries again server_login_retry after a failed login, and this task, run "
                "again then, checks again"
            )

    def _prepare(self, observed: Observed) -> None:
        """Before the freeze: preconditions, leftovers of an aborted attempt, reverse publication."""
        d = self.direction
        catch_up = observed.catch_up
        if catch_up is None:
            raise MigrationError(
                f"writers use the {d.leaving.name} but subscription {d.catch_up_subscription} (which keeps "
                f"the {d.joining.name} current) does not exist on the {d.joining.name}: there is nothing to "
                "switch to; run the database phase first"
            )
        with d.joining.hook.cursor() as joining, d.leaving.hook.cursor() as leaving:
            differences = drift(read_catalog(leaving), read_catalog(joining), joining=d.joining.name)
            if differences:
                raise MigrationError(
                    f"schema drift between the {d.leaving.name} and the {d.joining.name}; nothing was "
                    "switched, writers stay on the "
                    + d.leaving.name
                    + ":\n"
                    + "\n".join(f"  - {line}" for line in differences)
                )
            if d.starts_reverse and observed.reverse_subscription is not None:
                self._drop_subscription(leaving, d.reverse_subscription, "left by an aborted attempt")
            elif d.starts_reverse and observed.reverse_slot is not None:
                if observed.reverse_slot["active"]:
                    raise MigrationError(
                        f"slot {d.reverse_subscription} on the {d.joining.name} is in use by another "
                        "subscriber"
                    )
                joining.execute(statement("replication_slot_drop"), {"name": d.reverse_subscription})
                self.log.info(
                    "Dropped slot %s on the %s (left by an aborted attempt)",
                    d.reverse_subscription,
                    d.joining.name,
                )
            if not catch_up["subenabled"]:
                if not any(endpoint.paused for endpoint in observed.writers.seen):
                    raise MigrationError(
                        f"subscription {d.catch_up_subscription} on the {d.joining.name} is disabled (an "
                        "apply error?): the lag gate names the cause; nothing was changed"
                    )
                joining.execute(statement("subscription_enable", subscription=d.catch_up_subscription))
                self.log.info(
                    "Re-enabled subscription %s (disabled by an interrupted attempt)", d.catch_up_subscription
                )
            if d.starts_reverse:
                lacking = lacking_replica_identity(joining)
                if lacking:
                    raise MigrationError(
                        f"table(s) {', '.join(map(str, lacking))} on the {d.joining.name} have no replica "
                        "identity: the reverse publication would break their UPDATE/DELETE"
                    )
                action = ensure_publication(joining, d.reverse_publication)  # type: ignore[arg-type]
                self.log.info(
                    "Reverse publication %s on the %s: %s", d.reverse_publication, d.joining.name, action
                )

    def _freeze_and_flip(self) -> dict[str, Any]:
        d = self.direction
        timings = Timings()
        deadline = time.monotonic() + self.timeout_seconds
        leaving_connection = d.leaving.hook.connect()
        joining_connection = d.joining.hook.connect()
        leaving, joining = leaving_connection.cursor(), joining_connection.cursor()
        self._undo = []
        changes: list[str] = []
        try:
            self.freezing = True
            timings.mark("freeze")
            for pooler in self.poolers:
                state = pooler.hook.database(pooler.database)
                if not (state and state["paused"]):
                    pooler.hook.pause(pooler.database, max(0.05, deadline - time.monotonic()))
                self._undo.append(
                    (f"RESUME pooler {pooler.name}", partial(pooler.hook.resume, pooler.database))
                )
            timings.mark("paused")
            written_at = fetch_value(
                leaving, statement("marker_write"), {"id": self.marker_id, "side": d.leaving.name}
            )
            while fetch_value(joining, statement("marker_seen"), {"id": self.marker_id}) != written_at:
                if time.monotonic() > deadline:
                    raise MigrationError(
                        f"the {d.joining.name} did not apply the catch-up marker within "
                        f"{self.timeout_seconds:.0f} s"
                    )
                time.sleep(POLL_SECONDS)
            timings.mark("caught_up")
            sequence_changes, missing = sync_sequences(leaving, joining, self.sequence_margin)
            if missing:
                raise MigrationError(f"sequence(s) {', '.join(missing)} missing on the {d.joining.name}")
            timings.mark("sequences")
            joining.execute(statement("subscription_disable", subscription=d.catch_up_subscription))
            enable = statement("subscription_enable", subscription=d.catch_up_subscription)
            self._undo.append(
                (f"ENABLE subscription {d.catch_up_subscription}", partial(self._on, d.joining, enable))
            )
            if d.reverse_subscription is not None:
                slot = {"name": d.reverse_subscription}
                joining.execute(statement("replication_slot_create"), slot)
                drop = statement("replication_slot_drop")
                self._undo.append(
                    (f"drop slot {d.reverse_subscription}", partial(self._on, d.joining, drop, slot))
                )
            timings.mark("replication")
            host, port, dbname = d.joining.address
            for pooler in self.poolers:
                back = partial(pooler.hook.point, pooler.database, *d.leaving.address)
                self._undo.append((f"point pooler {pooler.name} back", back))
                if pooler.hook.point(pooler.database, host, port, dbname):
                    changes.append(
                        f"pooler {pooler.name}: {pooler.database} -> {d.joining.name} {host}:{port}/{dbname}"
                    )
            timings.mark("repointed")
            if time.monotonic() > deadline:
                raise MigrationError(f"the freeze outlasted {self.timeout_seconds:.0f} s")
            before = {pooler.name: pooler.hook.serving(pooler.database) for pooler in self.poolers}
            for pooler in self.poolers:
                pooler.hook.resume(pooler.database)
            timings.mark("resumed")
            unserved = self._unserved(before)
            if unserved:
                self._refreeze_unless_served(before, unserved)
            timings.mark("served")
            self.freezing = False
        except BaseException as exc:
            undone = self.abort()
            stalled = (time.monotonic() - timings.marks.get("freeze", time.monotonic())) * 1000
            self.log.warning(
                "Aborted after a %.0f ms stall (%s); undone: %s", stalled, exc, "; ".join(undone)
            )
            raise MigrationError(
                f"{d.label} aborted cleanly after a {stalled:.0f} ms stall: {exc}. Undone: "
                f"{'; '.join(undone) or 'nothing to undo'}. Writers continue on the {d.leaving.name}, "
                "untouched."
            ) from exc
        finally:
            leaving_connection.close()
            joining_connection.close()
        stall = timings.ms("freeze", "resumed")
        summary = {
            "write_stall_ms": stall,
            "pause_ms": timings.ms("freeze", "paused"),
            "catch_up_ms": timings.ms("paused", "caught_up"),
            "sequences_ms": timings.ms("caught_up", "sequences"),
            "replication_ms": timings.ms("sequences", "replication"),
            "repoint_ms": timings.ms("replication", "repointed"),
            "resume_ms": timings.ms("repointed", "resumed"),
            "served_ms": timings.ms("resumed", "served"),
            "sequences_moved": len(sequence_changes),
            "writers_on": d.joining.name,
        }
        for moved in sequence_changes:
            self.log.info("Sequence on the %s: %s", d.joining.name, moved)
        for line in changes:
            self.log.info("Changed %s", line)
        self.log.info(
            "Writers resumed on the %s. Write stall %.1f ms (pause %.1f, catch-up %.1f, sequences %.1f, "
            "replication %.1f, repoint %.1f, resume %.1f); the %s serving them %.1f ms after; %d "
            "sequence(s) moved",
            d.joining.name,
            stall,
            summary["pause_ms"],
            summary["catch_up_ms"],
            summary["sequences_ms"],
            summary["replication_ms"],
            summary["repoint_ms"],
            summary["resume_ms"],
            d.joining.name,
            summary["served_ms"],
            len(sequence_changes),
        )
        return summary

    def _unserved(self, before: dict[str, Serving]) -> dict[str, Serving]:
        """The poolers whose clients still wait SERVE_SECONDS after RESUME with no server connection
        and no transaction served since (PAUSE closed every server connection: any now is on the
        joining side). A pooler no client is waiting on has nothing to show and is not one."""
        deadline = time.monotonic() + SERVE_SECONDS
        pending = list(self.poolers)
        while True:
            now = {pooler.name: pooler.hook.serving(pooler.database) for pooler in pending}
            pending = [pooler for pooler in pending if not _served(before[pooler.name], now[pooler.name])]
            if not pending or time.monotonic() > deadline:
                return {pooler.name: now[pooler.name] for pooler in pending}
            time.sleep(SERVE_POLL_SECONDS)

    def _refreeze_unless_served(self, before: dict[str, Serving], unserved: dict[str, Serving]) -> None:
        """PAUSE again; if no pooler has served a transaction since RESUME, nothing reached the
        joining side and the switch is undone (raises); else it stands (writes are there now) and
        the poolers still not serving are named once it is complete."""
        d = self.direction
        paused = True
        for pooler in self.poolers:
            try:
                pooler.hook.pause(pooler.database, REFREEZE_SECONDS)
            except MigrationError:  # a transaction kept it from pausing: it is being served
                paused = False
        now = {pooler.name: pooler.hook.serving(pooler.database) for pooler in self.poolers}
        if paused and all(now[name].transactions == before[name].transactions for name in now):
            retry = {pooler.hook.setting("server_login_retry") for pooler in self.poolers}
            raise MigrationError(
                f"no writer was served by the {d.joining.name} {SERVE_SECONDS:.0f} s after RESUME: "
                + "; ".join(_not_serving(name, state) for name, state in unserved.items())
                + f". PgBouncer could not log in to the {d.joining.name} as the writers' role (its log "
                "says why: the role's password there, pg_hba.conf for the pooler's address); it tries "
                f"again only server_login_retry ({', '.join(sorted(map(str, retry)))} s) after a failed "
                "login, its clients waiting meanwhile wherever it points"
            )
        for pooler in self.poolers:
            pooler.hook.resume(pooler.database)
        self.unserved = [
            _not_serving(name, state)
            for name, state in now.items()
            if name in unserved and not _served(before[name], state)
        ]

    def abort(self) -> list[str]:
        """Undo the freeze's steps in reverse order, best effort; what was undone."""
        undone = []
        for label, action in reversed(self._undo):
            try:
                action()
                undone.append(label)
            except Exception as exc:
                self.log.error("Abort: could not %s: %s", label, exc)
                undone.append(f"{label} FAILED ({exc})")
        self._undo = []
        self.freezing = False
        return undone

    def _on(self, side: Side, query: Any, params: Any = None) -> None:
        with side.hook.cursor() as cursor:
            cursor.execute(query, params)

    def _drop_subscription(self, cursor: Any, name: str | None, why: str) -> None:
        assert name is not None
        drop_subscription(cursor, name)
        self.log.info("Dropped subscription %s (%s)", name, why)

    def _complete(self, observed: Observed) -> dict[str, Any]:
        """After the commit point (idempotent): every pooler on the joining side and resumed, reverse
        replication running, the catch-up subscription and its publication gone (nothing of the way
        writers came is left behind; the reverse path is the way back)."""
        d = self.direction
        done: list[str] = []
        host, port, dbname = d.joining.address
        for pooler in self.poolers:
            if pooler.hook.point(pooler.database, host, port, dbname):
                done.append(f"pooler {pooler.name} -> {d.joining.name}")
            if pooler.hook.resume(pooler.database):
                done.append(f"pooler {pooler.name} resumed")
        if d.starts_reverse and observed.reverse_subscription is None:
            if observed.reverse_slot is None:
                raise MigrationError(
                    f"writers are on the {d.joining.name} but its reverse slot {d.reverse_subscription} is "
                    "gone: a rollback now would lose their writes; investigate before anything else"
                )
            with d.leaving.hook.cursor() as leaving:
                quiet_statement_logging(leaving)
                leaving.execute(
                    statement(
                        "subscription_create_on_slot",
                        subscription=d.reverse_subscription,
                        publication=d.reverse_publication or "",
                    ),
                    {"conninfo": d.joining.hook.replication_conninfo(), "slot": d.reverse_subscription},
                )
            done.append(
                f"reverse replication {d.joining.name} -> {d.leaving.name}: subscription "
                f"{d.reverse_subscription} on the {d.leaving.name} (slot on the {d.joining.name}, copy_data "
                "= false)"
            )
        if observed.catch_up is not None:
            with d.joining.hook.cursor() as joining:
                self._drop_subscription(joining, d.catch_up_subscription, "writers moved to this side")
            done.append(
                f"subscription {d.catch_up_subscription} on the {d.joining.name} dropped (and its slot)"
            )
        if observed.catch_up_publication is not None:
            with d.leaving.hook.cursor() as leaving:
                leaving.execute(statement("publication_drop", publication=d.catch_up_publication))
            done.append(f"publication {d.catch_up_publication} on the {d.leaving.name} dropped")
        for line in done:
            self.log.info("Completed: %s", line)
        return {"completed": done}


def _served(before: Serving, now: Serving) -> bool:
    """Whether a pooler is serving (or has served) since RESUME, or has no client to serve."""
    return not now.waiting or now.logged_in > 0 or now.transactions != before.transactions


def _not_serving(pooler: str, state: Serving) -> str:
    return f"pooler {pooler}: {state.waiting} client(s) waiting, no server connection"
