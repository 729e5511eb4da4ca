"""The database phase: preflight, schema copy, publication, subscription, initial sync, deferred
indexes, lag gate and validation, each one operator over the hooks in `hooks/` and the engines in
`postgres/` (preflight rules, schema copy, publication and subscription, index builds,
catch-up, the validator).

    copy_schema -> create_publication -> create_subscription -> wait_initial_sync
        -> build_deferred_indexes -> lag_gate -> validate_data

Every operator reads the state first and changes only what differs, so clearing and re-running
any of them is safe; each logs what it observed and changed and pushes a small summary. In plan
mode (run param `mode` = plan) each logs what it would do and returns without connecting.

Tables without a primary key: PostgreSQL refuses UPDATE/DELETE on a table without a replica
identity as soon as a publication lists it. Only the tables named in the config's
`database.replica_identity_full` get REPLICA IDENTITY FULL (set by create_publication on the
source and by copy_schema on the target, whose reverse publication needs it too); preflight
fails, naming every other such table, before anything is changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from airflow.sdk import Context

from pyairtable_migration.detached import Detached, DetachedError
from pyairtable_migration.hooks.database import (
    DEFAULT_PG_BIN_DIR,
    MIGRATION_SCHEMA,
    MigrationError,
    MigrationPostgresHook,
    get_subscription,
    parse_tables,
    table_states,
)
from pyairtable_migration.operators.base import (
    DatabaseOperator,
    ReplicationOperator,
    ReplicationTopologyOperator,
    WritersReader,
    bulleted,
    fail,
)
from pyairtable_migration.postgres import preflight, replication, schema_copy, snapshot_copy
from pyairtable_migration.postgres.copy_runner import CopySpec, copy_process
from pyairtable_migration.postgres.indexes import IndexBuilder
from pyairtable_migration.postgres.replication import catch_up
from pyairtable_migration.postgres.validator import Validator
from pyairtable_migration.topology import Pooler
from pyairtable_migration.triggers.database import InitialSyncTrigger, ReplicationLagTrigger

# How often the copy's task looks whether its process still runs.
COPY_POLL_SECONDS = 0.5
# A copy that finishes no range for this long is stalled (a range is at most copy_split_bytes).
COPY_STALL_SECONDS = 900.0

T = TypeVar("T")


# --- preflight ----------------------------------------------------------------------------------


class CheckDatabaseOperator(ReplicationTopologyOperator):
    """Preflight: everything the database phase and the switchover rely on, checked, nothing changed.

    Fails with one message listing every problem: connections, server versions, wal_level on both
    sides (the target's for the reverse replication that makes rollback lossless), free slots and
    WAL senders, privileges, replica identity of every table the publication will carry, unlogged
    tables, large objects, the target empty or already this migration's, pg_dump, the poolers.

    :param pg_bin_dir: where pg_dump is (the schema copy runs it)
    :param initial_copy / copy_workers: with `parallel`, also what the parallel copy needs (the
        target role's right to set session_replication_role, sessions on both sides)
    """

    template_fields: Sequence[str] = (*ReplicationTopologyOperator.template_fields, "pg_bin_dir")

    pg_bin_dir: str = DEFAULT_PG_BIN_DIR
    initial_copy: str = "native"
    copy_workers: int = 0

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"check {self.source_conn_id} and {self.target_conn_id}: versions, wal_level, slots, senders, "
            "privileges, replica identities, unlogged tables, large objects, target empty or ours",
            *(f"check pooler {p['name']} via {p['admin_conn_id']}" for p in self.poolers),
        ):
            return {"mode": "plan"}
        findings = preflight.check(
            self.source(),
            self.target(),
            poolers=[Pooler.of(p) for p in self.poolers],
            publication=self.publication,
            subscription=self.subscription,
            replica_identity_full=parse_tables(self.replica_identity_full),
            pg_bin_dir=self.pg_bin_dir,
            log=self.log,
            initial_copy=self.initial_copy,
            copy_workers=self.copy_workers,
        )
        for note in findings.notes:
            self.log.info("Note: %s", note)
        if findings.problems:
            raise fail(
                bulleted(f"database preflight found {len(findings.problems)} problem(s)", findings.problems)
            )
        self.log.info("Database preflight passed")
        return {"passed": True, "notes": findings.notes, "versions": findings.versions}


# --- schema ---------------------------------------------------------------------------------------


class BeforeSwitchoverOperator(WritersReader, DatabaseOperator):
    """Base of the steps that prepare the target while writers use the source: the schema, the
    publication, the initial copy. Once any pooler sends writers to the target, the target is
    production's primary, and these steps refuse to run at all: cleared, or in a second run of
    the migration, they would copy staging over it. The rollback (writers back on the source)
    lifts the refusal. Where writers go is read from each pooler's admin console, the one place
    that decides it.
    """

    template_fields: Sequence[str] = WritersReader.template_fields

    def run(self, action: str, function: Callable[..., T], *args: Any) -> T:
        def guarded() -> T:
            self.refuse_after_switchover()
            return function(*args)

        return super().run(action, guarded)

    def refuse_after_switchover(self) -> None:
        found = self.writers_now()
        if found.unreadable:
            raise MigrationError(
                "cannot tell where writers go: "
                + "; ".join(f"pooler {endpoint.describe()}" for endpoint in found.unreadable)
                + "; nothing changed"
            )
        on_target = found.on("target")
        if on_target:
            host, port = self.target().address[:2]
            raise MigrationError(
                f"writers are on the target (pooler(s) {', '.join(on_target)} point at "
                f"{host}:{port}): it is production's primary now, and this step is for while "
                "writers use the source; nothing changed. To migrate again, roll back first "
                "(pyairtable_production_rollback)"
            )


class CopySchemaOperator(BeforeSwitchoverOperator):
    """Copy the source's schema to the target with pg_dump, in one transaction, secondary indexes
    (and, for the parallel copy, keys) deferred (`postgres/schema_copy.py`). Re-run: a target holding
    this migration's copy is verified."""

    template_fields: Sequence[str] = (
        *BeforeSwitchoverOperator.template_fields,
        "replica_identity_full",
        "pg_bin_dir",
    )

    replica_identity_full: Sequence[str] = ()
    pg_bin_dir: str = DEFAULT_PG_BIN_DIR
    # The parallel copy's: keys of tables this big built after the data (postgres/indexes.py).
    defer_keys_from_bytes: int | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"create schema {MIGRATION_SCHEMA} (switchover markers) on {self.source_conn_id}",
            f"copy the schema of {self.source_conn_id} to {self.target_conn_id} with pg_dump --schema-only, "
            "non-unique secondary indexes deferred"
            + (
                f", and the keys of tables of {self.defer_keys_from_bytes} bytes or more"
                if self.defer_keys_from_bytes is not None
                else ""
            ),
        ):
            return {"mode": "plan"}
        return self.run(
            "copy_schema",
            lambda: schema_copy.copy_schema(
                self.source(),
                self.target(),
                replica_identity_full=parse_tables(self.replica_identity_full),
                pg_bin_dir=self.pg_bin_dir,
                log=self.log,
                defer_keys_from_bytes=self.defer_keys_from_bytes,
            ),
        )


# --- publication and subscription ------------------------------------------------------------------


class CreatePublicationOperator(BeforeSwitchoverOperator):
    """On the source: REPLICA IDENTITY FULL on the listed tables lacking one, then the publication
    of every user table, created when absent, verified (and completed) when present."""

    template_fields: Sequence[str] = (
        *BeforeSwitchoverOperator.template_fields,
        "publication",
        "replica_identity_full",
    )

    publication: str
    replica_identity_full: Sequence[str] = ()

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"set REPLICA IDENTITY FULL on {', '.join(self.replica_identity_full) or 'no table'} where "
            "missing",
            f"create or verify publication {self.publication} of every user table on {self.source_conn_id}",
        ):
            return {"mode": "plan"}
        return self.run(
            "create_publication",
            lambda: replication.publish(
                self.source(), self.publication, parse_tables(self.replica_identity_full), self.log
            ),
        )


class CreateSubscriptionOperator(BeforeSwitchoverOperator, ReplicationOperator):
    """On the target: the subscription to the source's publication, created when absent (initial
    copy of every table), verified when present.

    A slot of the same name left on the source by an interrupted earlier attempt (no subscription
    on the target) is dropped first; so are rows an abandoned copy left in the target's tables
    (never once writers are on the target: BeforeSwitchoverOperator).

    :param on_copied_slot: subscribe on the slot database.copy_snapshot created and copied under
        (`initial_copy: parallel`), copying nothing; refused unless that copy finished
    """

    template_fields: Sequence[str] = (*ReplicationOperator.template_fields, "poolers")

    on_copied_slot: bool = False

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"create or verify subscription {self.subscription} on {self.target_conn_id} to publication "
            f"{self.publication} (replication slot {self.subscription} on {self.source_conn_id}"
            + (", created by the parallel copy: nothing copied)" if self.on_copied_slot else ")"),
        ):
            return {"mode": "plan"}
        if self.on_copied_slot:
            return self.run(
                "create_subscription",
                lambda: snapshot_copy.create_subscription_on_slot(
                    self.source(),
                    self.target(),
                    publication=self.publication,
                    subscription=self.subscription,
                    slot=self.subscription,
                    log=self.log,
                ),
            )
        return self.run(
            "create_subscription",
            lambda: replication.subscribe(
                self.source(), self.target(), self.publication, self.subscription, self.log
            ),
        )


class ParallelCopyOperator(BeforeSwitchoverOperator, ReplicationOperator):
    """`initial_copy: parallel`: the forward slot created with its snapshot exported, every table
    copied under that snapshot in ranges (`postgres/snapshot_copy.py`), progress (rows, bytes, rate,
    ETA) logged every `copy_progress_seconds` and returned.

    The copy runs as a detached process (`postgres/copy_runner.py`) this task starts and watches: the
    session holding the snapshot outlives the task, so a task killed half-way and cleared (or retried)
    finds the copy still running and waits for it, and no range is copied twice. Run again once it
    finished (or once the subscription streams from its slot), it verifies; if the process itself
    died, it starts over under a new snapshot, emptying what the target holds.

    :param copy_workers: ranges copied at once
    :param copy_split_bytes: tables bigger on disk are copied in ranges of about this size
    :param copy_state_dir: the copy process's pid, log and result (on the worker that runs this task)
    :param pg_bin_dir: where psql is (it reads each range from the source)
    """

    template_fields: Sequence[str] = (
        *ReplicationOperator.template_fields,
        "poolers",
        "copy_workers",
        "copy_state_dir",
    )

    copy_workers: int
    copy_split_bytes: int
    copy_state_dir: str
    copy_progress_seconds: float = 10.0
    copy_stall_seconds: float = COPY_STALL_SECONDS
    pg_bin_dir: str = DEFAULT_PG_BIN_DIR

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"create replication slot {self.subscription} on {self.source_conn_id}, its snapshot exported",
            f"copy every table of publication {self.publication} under it to {self.target_conn_id} with "
            f"{self.copy_workers} worker(s), tables above {self.copy_split_bytes} bytes in ranges",
        ):
            return {"mode": "plan"}
        return self.run("copy_snapshot", self.copy)

    def copy(self) -> dict[str, Any]:
        source, target = self.source(), self.target()
        with target.cursor() as cursor:
            streaming = get_subscription(cursor, self.subscription) is not None
        done = snapshot_copy.read_progress(target) if streaming else None
        if streaming and done is not None and done.finished:
            self.log.info("Subscription %s streams after the copy: %s", self.subscription, done.describe())
            return {"action": "verified", **done.summary()}
        copier = copy_process(Path(self.copy_state_dir))
        if copier.running_pid() is None:
            done = snapshot_copy.completed_copy(source, target, self.subscription)
            if done is not None:
                self.log.info("The parallel copy finished already: %s", done.describe())
                return {"action": "verified", **done.summary()}
        spec = CopySpec(
            source_conn_id=self.source_conn_id,
            target_conn_id=self.target_conn_id,
            slot=self.subscription,
            publication=self.publication,
            workers=int(self.copy_workers),
            split_bytes=int(self.copy_split_bytes),
            progress_seconds=float(self.copy_progress_seconds),
            pg_bin_dir=self.pg_bin_dir,
        )
        try:
            pid, started = copier.start(spec.to_dict())
        except DetachedError as exc:
            raise MigrationError(str(exc)) from None
        self.log.info(
            "Copy process %s (pid %d; its log: %s)",
            "started" if started else "found running (an earlier try started it): waiting for it",
            pid,
            copier.path(".log"),
        )
        self.watch(copier, target)
        result = copier.result()
        if result is None or "error" in result:
            why = result["error"] if result else f"it ended without a result ({copier.log_tail()})"
            raise MigrationError(f"the parallel copy failed: {why}; run again to start over")
        progress = snapshot_copy.read_progress(target)
        summary = progress.summary() if progress else result["progress"]
        return {"action": "copied", "process": "started" if started else "found running", **summary}

    def watch(self, copier: Detached, target: MigrationPostgresHook) -> None:
        """Until the copy process ends: its progress, read from the target, every copy_progress_seconds.

        A copy that finishes no range for `copy_stall_seconds` fails the task, named (a hung
        session, a lock); its process is left running: a clear waits for it again."""
        next_report, copied, moved_at = 0.0, -1, time.monotonic()
        while (pid := copier.running_pid()) is not None:
            now = time.monotonic()
            if now >= next_report:
                progress = snapshot_copy.read_progress(target)
                if progress is not None:
                    self.log.info("Copy: %s", progress.describe())
                if progress is not None and progress.ranges_copied != copied:
                    copied, moved_at = progress.ranges_copied, now
                elif now - moved_at > float(self.copy_stall_seconds):
                    raise MigrationError(
                        f"the parallel copy (pid {pid}) finished no range for {now - moved_at:.0f} s "
                        f"({progress.describe() if progress else 'no progress recorded'}); its log: "
                        f"{copier.log_tail()}. It still runs: clear this task to wait for it again, or "
                        f"stop it (kill {pid}) and clear to start over"
                    )
                next_report = now + float(self.copy_progress_seconds)
            time.sleep(COPY_POLL_SECONDS)


class DropForwardReplicationOperator(BeforeSwitchoverOperator, ReplicationOperator):
    """The rollback's last database step, with writers back on the source: forward replication
    goes too (the subscription on the target, its slot on the source with it, and the publication
    on the source), so staging is left as before the migration, with no slot keeping WAL for a
    target nobody uses. A no-op when neither exists. The target's tables keep their rows: the next
    migration's create_subscription empties them before its initial copy.
    """

    template_fields: Sequence[str] = (*ReplicationOperator.template_fields, "poolers")

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"drop subscription {self.subscription} on {self.target_conn_id} (and its slot on "
            f"{self.source_conn_id}), then publication {self.publication} on {self.source_conn_id}",
        ):
            return {"mode": "plan"}
        return self.run(
            "drop_forward_replication",
            lambda: replication.drop_forward_replication(
                self.source(), self.target(), self.publication, self.subscription, self.log
            ),
        )


class WaitInitialSyncOperator(ReplicationOperator):
    """Wait (deferred) until every table of the subscription is in state r; logs done / total."""

    template_fields: Sequence[str] = (*ReplicationOperator.template_fields, "timeout_seconds", "poll_seconds")

    timeout_seconds: float
    poll_seconds: float = 2.0

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context, f"wait until every table of subscription {self.subscription} is ready (state r)"
        ):
            return {"mode": "plan"}
        with self.target().cursor() as cursor:
            states = table_states(cursor, self.subscription)
            subscription = get_subscription(cursor, self.subscription)
        if subscription is None:
            raise fail(f"wait_initial_sync: subscription {self.subscription} does not exist on the target")
        if states and all(s == "r" for s in states.values()):
            self.log.info("Initial sync: %d / %d tables ready: already done", len(states), len(states))
            return {"tables": len(states), "seconds": 0.0}
        ready = sum(1 for s in states.values() if s == "r")
        self.log.info("Initial sync: %d / %d tables ready; waiting on the triggerer", ready, len(states))
        self.defer_to(
            InitialSyncTrigger(
                source_conn_id=self.source_conn_id,
                target_conn_id=self.target_conn_id,
                subscription=self.subscription,
                publication=self.publication,
                timeout_seconds=float(self.timeout_seconds),
                poll_seconds=float(self.poll_seconds),
            ),
            self.timeout_seconds,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.raise_on_failure(event, "wait_initial_sync")
        self.log.info(
            "Initial sync done: %d / %d tables ready in %.1f s",
            event["tables"],
            event["tables"],
            event["seconds"],
        )
        return {"tables": event["tables"], "seconds": event["seconds"]}


class BuildDeferredIndexesOperator(DatabaseOperator):
    """Build every secondary index and key of the source the target lacks (`postgres/indexes.py`:
    CONCURRENTLY once a subscription streams into the target, plainly before).

    The definitions are the source's own (pg_get_indexdef, pg_get_constraintdef); an index a killed
    earlier build left INVALID is dropped (CONCURRENTLY) and built again. `parallelism` builds run
    at once, biggest tables first.
    """

    template_fields: Sequence[str] = (*DatabaseOperator.template_fields, "parallelism")

    parallelism: int = 2

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context, f"build the source's secondary indexes and keys {self.target_conn_id} lacks"
        ):
            return {"mode": "plan"}
        builder = IndexBuilder(self.source(), self.target(), parallelism=int(self.parallelism), log=self.log)
        return self.run("build_deferred_indexes", builder.run)


class LagGateOperator(ReplicationOperator):
    """Wait (deferred) until the source slot's lag stays below the threshold for N samples.

    A disabled subscription or new apply errors fail it with the table, the LSN and the remedy.

    :param lag_threshold_bytes: templated; the DAG passes `{{ params.lag_threshold_bytes }}`
    """

    template_fields: Sequence[str] = (
        *ReplicationOperator.template_fields,
        "lag_threshold_bytes",
        "lag_consecutive_samples",
        "lag_sample_seconds",
        "lag_timeout_seconds",
    )

    lag_threshold_bytes: int | str
    lag_consecutive_samples: int
    lag_sample_seconds: float
    lag_timeout_seconds: float

    def execute(self, context: Context) -> dict[str, Any]:
        threshold = int(float(self.lag_threshold_bytes))
        if self.planned(
            context,
            f"wait until slot {self.subscription} lags < {threshold} bytes for "
            f"{self.lag_consecutive_samples} samples {self.lag_sample_seconds}s apart (timeout "
            f"{self.lag_timeout_seconds}s)",
        ):
            return {"mode": "plan"}
        self.log.info(
            "Lag gate: < %d bytes for %s consecutive samples, one every %s s, within %s s",
            threshold,
            self.lag_consecutive_samples,
            self.lag_sample_seconds,
            self.lag_timeout_seconds,
        )
        self.defer_to(
            ReplicationLagTrigger(
                source_conn_id=self.source_conn_id,
                target_conn_id=self.target_conn_id,
                subscription=self.subscription,
                publication=self.publication,
                lag_threshold_bytes=threshold,
                lag_consecutive_samples=int(self.lag_consecutive_samples),
                lag_sample_seconds=float(self.lag_sample_seconds),
                lag_timeout_seconds=float(self.lag_timeout_seconds),
            ),
            self.lag_timeout_seconds,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.raise_on_failure(event, "lag_gate")
        delay = self.run(
            "lag_gate",
            lambda: replication.marker_delay(self.source(), self.target(), float(self.lag_timeout_seconds)),
        )
        self.log.info(
            "Lag gate passed: last samples %s bytes (%.1f s); a commit on the source reached the target in "
            "%.3f s",
            event["lags"],
            event["seconds"],
            delay,
        )
        return {
            "passed": True,
            "lags": event["lags"],
            "seconds": event["seconds"],
            "lag_seconds": round(delay, 3),
        }


# --- validation -------------------------------------------------------------------------------------


class ValidateDataOperator(DatabaseOperator):
    """Counts and hashes per table and primary-key range on both sides, in parallel; a differing
    range is re-checked after the target has passed the source's LSN, so writes in flight are not
    reported as loss. Fails naming the table, the key range and the keys.

    :param subscription: the subscription replicating source -> target (for the re-check wait)
    :param chunk_rows: keys per range
    :param parallelism: concurrent scans per side
    """

    template_fields: Sequence[str] = (
        *DatabaseOperator.template_fields,
        "subscription",
        "chunk_rows",
        "parallelism",
        "tables",
    )

    subscription: str
    chunk_rows: int
    parallelism: int = 2
    recheck_rounds: int = 3
    catch_up_timeout_seconds: float = 120.0
    tables: Sequence[str] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"compare counts and hashes of every table per {self.chunk_rows}-key range on "
            f"{self.source_conn_id} and {self.target_conn_id}",
        ):
            return {"mode": "plan"}
        source, target = self.source(), self.target()
        validator = Validator(
            source,
            target,
            chunk_rows=int(self.chunk_rows),
            parallelism=int(self.parallelism),
            rounds=self.recheck_rounds,
            catch_up=lambda: catch_up(
                source, target, self.subscription, self.catch_up_timeout_seconds, self.log
            ),
            log=self.log,
        )
        only = parse_tables(self.tables) if self.tables is not None else None
        report = self.run("validate_data", validator.run, only)
        summary = report.summary()
        if not report.passed:
            lines = [f"table {t} is missing on the target" for t in report.missing_tables]
            lines += [d.describe() for d in report.differences]
            raise fail(
                bulleted(
                    f"validate_data: {len(lines)} difference(s) persist after {report.rechecks} re-check(s) "
                    "(the target had caught up with the source each time)",
                    lines,
                )
            )
        self.log.info(
            "Validation passed: %d tables, %d rows, %d ranges in %.2f s (%.0f rows/s); %d in-flight "
            "difference(s) resolved by re-check",
            report.tables,
            report.rows,
            report.chunks,
            report.seconds,
            report.rows_per_second,
            report.resolved_in_flight,
        )
        return summary
