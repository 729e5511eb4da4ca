"""The initial copy in parallel, under the forward slot's exported snapshot (issue #18).

PostgreSQL's own initial copy (CREATE SUBSCRIPTION ... copy_data = true) gives each table one sync
worker, so the biggest table (`records`) alone bounds how long the copy takes. This engine copies
ranges of tables side by side instead, and hands over to logical replication at the exact point
the copy saw:

1. `exported_snapshot` creates the forward slot over a replication connection with
   CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT: the slot's consistent point and the exported
   snapshot are the same instant, so the copy holds every commit before it and the slot streams
   every commit after it. The session stays open and idle while the snapshot must stay importable.
2. `copy_snapshot` splits every table above `split_bytes` into ranges (by its primary key when that
   is one integer column, else by CTID pages, which works for any table) and copies them with N
   workers. Each worker reads through one `psql` of its own on the source, whose one read-only
   REPEATABLE READ transaction imports the snapshot, and streams each range's COPY ... TO STDOUT
   through a pipe into the worker's COPY ... FROM STDIN on the target (binary where both sides'
   column types allow), never held in memory. (psql, not this process, reads the rows: the source
   sends one message per row, and a Python reader handling each of them under the GIL cost as much
   CPU as the source itself. One psql per worker, not per range: a connection cost about 28 ms of
   CPU between psql and the source's backend, 2.4 CPU-s for the 122 ranges of 10 M records.)
3. Each range is recorded as copied in the target transaction of its COPY (the progress tables of
   include/sql/snapshot_copy_progress_schema.sql): killed half-way and run again under the same
   snapshot, the copy does only the ranges not recorded and never one twice. A run under another
   snapshot (a new slot) empties the target's tables first and starts over.
4. Progress (rows and bytes per table and in total, rate, ETA) goes to a callback at a steady
   cadence; `read_progress` reads it back from the target.
5. The caller builds the deferred secondary indexes (`indexes.IndexBuilder`), then
   `create_subscription_on_slot` subscribes on the slot without copying: streaming starts where the
   snapshot ends.

A snapshot lives only as long as the session that exported it. Resuming needs that session alive
(held by the process that supervises the copy); once it has ended, the copy must start over with a
new slot and snapshot (`exported_snapshot` drops the leftover slot, `copy_snapshot` empties the
target's tables).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
from psycopg2 import sql

from pyairtable_migration.hooks.database import (
    APPLICATION_NAME,
    DEFAULT_PG_BIN_DIR,
    MigrationError,
    MigrationPostgresHook,
    Table,
    client_program,
    display_identifier,
    empty_tables,
    fetch_dicts,
    fetch_one,
    fetch_value,
    get_publication,
    get_slot,
    get_subscription,
    lsn_number,
    quiet_statement_logging,
    statement,
)

HOLDER_APPLICATION = f"{APPLICATION_NAME}-snapshot"
WORKER_APPLICATION = f"{APPLICATION_NAME}-copy"
PIPE_CHUNK = 1 << 20
PSQL_INPUT_LOCATION = re.compile(r"^psql:<stdin>:\d+: ")


@dataclass(frozen=True)
class ExportedSnapshot:
    """The forward slot and the snapshot exported with it: the copy and the stream meet here."""

    slot: str
    consistent_point: str
    name: str


# --- the slot and its snapshot --------------------------------------------------------------------


def holder_application_name(slot: str) -> str:
    """The application name of the session holding `slot`'s snapshot (at most 63 bytes are kept)."""
    return f"{HOLDER_APPLICATION} {slot}"[:63]


@contextlib.contextmanager
def exported_snapshot(
    source: MigrationPostgresHook,
    target: MigrationPostgresHook,
    *,
    slot: str,
    publication: str,
    log: Any,
) -> Iterator[ExportedSnapshot]:
    """Create `slot` on the source with its snapshot exported; the snapshot stays importable until
    the block ends (the slot stays, for `create_subscription_on_slot`).

    The publication must exist first: pgoutput reads it as of each change it decodes. A slot of
    that name left by an interrupted attempt (no session holds its snapshot any more, no
    subscription on the target streams from it) is dropped, since its snapshot cannot be had again.
    """
    with source.cursor() as source_cursor, target.cursor() as target_cursor:
        if get_publication(source_cursor, publication) is None:
            raise MigrationError(
                f"publication {publication} does not exist on the source ({source.describe()}): create it "
                f"before slot {slot}, whose changes pgoutput decodes with the publication as it was then"
            )
        existing = get_slot(source_cursor, slot)
        if existing is not None:
            _refuse_slot_in_use(source_cursor, target_cursor, slot, existing)
            source_cursor.execute(statement("replication_slot_drop"), {"name": slot})
            log.info(
                "Source: dropped slot %s left by an interrupted copy (its snapshot is gone with its session)",
                slot,
            )
    connection = source.connect(application_name=holder_application_name(slot), replication=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute(_replication_command(connection, "snapshot_copy_create_slot", slot=slot))
            _name, consistent_point, snapshot_name, _plugin = cursor.fetchone()
        log.info(
            "Source: created slot %s at %s with snapshot %s exported (held while the copy runs)",
            slot,
            consistent_point,
            snapshot_name,
        )
        yield ExportedSnapshot(slot, consistent_point, snapshot_name)
    finally:
        connection.close()


def _refuse_slot_in_use(source_cursor: Any, target_cursor: Any, slot: str, existing: dict[str, Any]) -> None:
    feeding = [
        row["subname"]
        for row in fetch_dicts(target_cursor, statement("snapshot_copy_slot_subscriptions"), {"slot": slot})
    ]
    if feeding:
        raise MigrationError(
            f"slot {slot} already feeds subscription(s) {', '.join(feeding)} on the target: the initial copy "
            "is done; nothing to export"
        )
    holder = fetch_value(
        source_cursor,
        statement("snapshot_copy_snapshot_holder"),
        {"application_name": holder_application_name(slot)},
    )
    if holder is not None:
        raise MigrationError(
            f"a session (pid {holder}) on the source still holds the snapshot of slot {slot}: another copy "
            "runs; let it finish or end it first"
        )
    if existing["active"]:
        raise MigrationError(
            f"slot {slot} on the source is in use (pid {existing['active_pid']}) by a consumer that is not "
            "this migration's: configure another slot name"
        )


def _replication_command(connection: Any, name: str, **identifiers: str) -> str:
    """A replication-protocol command from include/sql/: its grammar has no comments, so none is sent."""
    text = statement(name, **identifiers).as_string(connection)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--")).strip()


# --- ranges -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyRange:
    """A part of one table, copied (and recorded) in one target transaction.

    method `whole`: the table; `key`: `key` in [low, high); `ctid`: pages [low, high). A None bound
    is open, so the first and last ranges hold whatever lies beyond the planned span.
    """

    table: Table
    number: int
    method: str
    key: str | None
    low: int | None
    high: int | None
    estimated_bytes: int
    estimated_rows: int

    def describe(self) -> str:
        if self.method == "whole":
            return f"{self.table} (whole table)"
        low = "" if self.low is None else str(self.low)
        high = "" if self.high is None else str(self.high)
        if self.method == "key":
            assert self.key is not None
            key = display_identifier(self.key)
            return f"{self.table} range {self.number}: {key} in [{low or '-∞'}, {high or '∞'})"
        return f"{self.table} range {self.number}: pages [{low or 0}, {high or 'end'})"

    def row_key(self) -> dict[str, Any]:
        return {"table_schema": self.table.schema, "table_name": self.table.name, "range_number": self.number}

    def select(self, columns: sql.Composable) -> tuple[sql.Composed, dict[str, Any]]:
        """The query reading this range on the source, and its parameters."""
        table = self.table.identifier
        if self.method == "whole":
            return statement("snapshot_copy_select_whole", columns=columns, table=table), {}
        if self.method == "key":
            assert self.key is not None
            query = statement("snapshot_copy_select_key_range", columns=columns, table=table, key=self.key)
            return query, {"low": self.low, "high": self.high}
        query = statement("snapshot_copy_select_ctid_range", columns=columns, table=table)
        return query, {"low": _tid(self.low), "high": _tid(self.high)}


def _tid(page: int | None) -> str | None:
    return None if page is None else f"({page},0)"


def plan_ranges(cursor: Any, split_bytes: int) -> list[CopyRange]:
    """Every carried table as ranges of about `split_bytes` on disk, biggest first; `cursor` must
    see the snapshot (a table's key bounds are read under it)."""
    ranges: list[CopyRange] = []
    for row in fetch_dicts(cursor, statement("snapshot_copy_tables")):
        table = Table(row["schema_name"], row["table_name"])
        size, rows = int(row["table_bytes"]), int(row["estimated_rows"])
        parts = max(1, math.ceil(size / split_bytes))
        bounds: list[tuple[int | None, int | None]] = [(None, None)]
        method, key = "whole", None
        if parts > 1 and row["key_column"]:
            cursor.execute(statement("validation_key_bounds", key=row["key_column"], table=table.identifier))
            low, high = cursor.fetchone()
            if low is not None:
                method, key = "key", row["key_column"]
                bounds = _split(int(low), int(high) + 1, parts)
        elif parts > 1 and not row["is_partitioned"] and row["pages"] > 1:
            method = "ctid"
            bounds = _split(0, int(row["pages"]), parts)
        count = len(bounds)
        ranges.extend(
            CopyRange(table, number, method, key, low, high, size // count, rows // count)
            for number, (low, high) in enumerate(bounds, 1)
        )
    return sorted(ranges, key=lambda r: (-r.estimated_bytes, r.table, r.number))


def _split(low: int, high: int, parts: int) -> list[tuple[int | None, int | None]]:
    """[low, high) in at most `parts` equal ranges, the first open below, the last open above."""
    width = max(1, math.ceil((high - low) / parts))
    starts = list(range(low, high, width))
    bounds: list[tuple[int | None, int | None]] = [(start, start + width) for start in starts]
    bounds[0] = (None, bounds[0][1])
    bounds[-1] = (bounds[-1][0], None)
    return bounds


@dataclass(frozen=True)
class TableShape:
    """How one table travels: the source's columns, in binary when both sides' types allow."""

    columns: tuple[str, ...]
    binary: bool

    @property
    def column_list(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(column) for column in self.columns)

    @property
    def format(self) -> str:
        return "binary" if self.binary else "text"


def table_shapes(source_cursor: Any, target_cursor: Any, tables: Sequence[Table]) -> dict[Table, TableShape]:
    """Each table's shape; refuses, naming every one, tables or columns the target lacks."""

    def columns(cursor: Any) -> dict[Table, dict[str, Any]]:
        return {
            Table(row["schema_name"], row["table_name"]): row
            for row in fetch_dicts(cursor, statement("snapshot_copy_columns"))
        }

    on_source, on_target = columns(source_cursor), columns(target_cursor)
    problems: list[str] = []
    shapes: dict[Table, TableShape] = {}
    for table in tables:
        source_row, target_row = on_source.get(table), on_target.get(table)
        if target_row is None:
            problems.append(f"table {table} does not exist on the target")
            continue
        if source_row is None:
            problems.append(f"table {table} has no column COPY can write: the parallel copy cannot carry it")
            continue
        target_types = dict(zip(target_row["columns"], target_row["types"], strict=True))
        missing = [c for c in source_row["columns"] if c not in target_types]
        if missing:
            problems.append(
                f"table {table} on the target lacks column(s) {', '.join(map(display_identifier, missing))}"
            )
            continue
        same_types = all(
            target_types[c] == t for c, t in zip(source_row["columns"], source_row["types"], strict=True)
        )
        binary = same_types and bool(source_row["binary_ok"]) and bool(target_row["binary_ok"])
        shapes[table] = TableShape(tuple(source_row["columns"]), binary)
    if problems:
        raise MigrationError(
            "the target does not match the source's schema (copy the schema first): " + "; ".join(problems)
        )
    return shapes


# --- progress -------------------------------------------------------------------------------------


@dataclass
class TableProgress:
    table: Table
    ranges: int = 0
    ranges_copied: int = 0
    rows: int = 0  # in ranges committed
    bytes: int = 0  # streamed, ranges in flight included
    estimated_rows: int = 0
    estimated_bytes: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "table": str(self.table),
            "ranges": self.ranges,
            "ranges_copied": self.ranges_copied,
            "rows": self.rows,
            "bytes": self.bytes,
            "estimated_rows": self.estimated_rows,
        }


@dataclass
class CopyProgress:
    """Where a copy stands: per table and in total, this attempt's rate and the time it has left.

    Rows count when their range commits, bytes (COPY's, binary or text) as they stream. The ETA is
    the share of the tables' on-disk size still to copy at the rate this attempt has copied it.
    """

    slot: str
    snapshot: str
    consistent_point: str
    attempt: int
    tables: list[TableProgress] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    bytes_per_second: float = 0.0
    rows_per_second: float = 0.0
    eta_seconds: float | None = None
    finished: bool = False

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    @property
    def ranges(self) -> int:
        return sum(t.ranges for t in self.tables)

    @property
    def ranges_copied(self) -> int:
        return sum(t.ranges_copied for t in self.tables)

    def describe(self) -> str:
        eta = (
            "done"
            if self.finished
            else "unknown"
            if self.eta_seconds is None
            else f"{self.eta_seconds:.0f} s"
        )
        return (
            f"{self.ranges_copied}/{self.ranges} ranges of {len(self.tables)} tables, {self.rows:,} rows, "
            f"{self.bytes / 1e6:,.1f} MB in {self.elapsed_seconds:.1f} s "
            f"({self.rows_per_second:,.0f} rows/s, {self.bytes_per_second / 1e6:,.1f} MB/s); ETA {eta}"
        )

    def summary(self) -> dict[str, Any]:
        """Small enough for XCom: totals, and the tables not done or split."""
        return {
            "slot": self.slot,
            "snapshot": self.snapshot,
            "consistent_point": self.consistent_point,
            "attempt": self.attempt,
            "finished": self.finished,
            "ranges": self.ranges,
            "ranges_copied": self.ranges_copied,
            "rows": self.rows,
            "bytes": self.bytes,
            "seconds": round(self.elapsed_seconds, 2),
            "rows_per_second": round(self.rows_per_second),
            "bytes_per_second": round(self.bytes_per_second),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "tables": [t.summary() for t in self.tables if t.ranges > 1 or t.ranges_copied < t.ranges],
        }


@dataclass
class _RangeState:
    range: CopyRange
    copied: bool  # committed
    copied_before: bool  # by an earlier attempt
    rows: int = 0
    bytes: int = 0


class _Tracker:
    """The live state of every range, shared by the workers and the reporting thread."""

    def __init__(self, snapshot: ExportedSnapshot, attempt: int, states: list[_RangeState]) -> None:
        self.snapshot = snapshot
        self.attempt = attempt
        self.states = states
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def progress(self, elapsed: float | None = None) -> CopyProgress:
        """The progress now; `elapsed` (seconds of this attempt) when measured elsewhere."""
        with self.lock:
            elapsed = time.monotonic() - self.started if elapsed is None else elapsed
            tables: dict[Table, TableProgress] = {}
            total_estimate = done_estimate = done_before = 0
            this_attempt_rows = this_attempt_bytes = 0
            for state in self.states:
                copy_range = state.range
                table = tables.setdefault(copy_range.table, TableProgress(copy_range.table))
                table.ranges += 1
                table.ranges_copied += state.copied
                table.rows += state.rows if state.copied else 0
                table.bytes += state.bytes
                table.estimated_rows += copy_range.estimated_rows
                table.estimated_bytes += copy_range.estimated_bytes
                total_estimate += copy_range.estimated_bytes
                if state.copied:
                    done_estimate += copy_range.estimated_bytes
                else:
                    done_estimate += min(state.bytes, copy_range.estimated_bytes)
                if state.copied_before:
                    done_before += copy_range.estimated_bytes
                else:
                    this_attempt_bytes += state.bytes
                    this_attempt_rows += state.rows if state.copied else 0
        finished = all(state.copied for state in self.states)
        return CopyProgress(
            slot=self.snapshot.slot,
            snapshot=self.snapshot.name,
            consistent_point=self.snapshot.consistent_point,
            attempt=self.attempt,
            tables=sorted(tables.values(), key=lambda t: t.table),
            elapsed_seconds=elapsed,
            bytes_per_second=this_attempt_bytes / elapsed if elapsed else 0.0,
            rows_per_second=this_attempt_rows / elapsed if elapsed else 0.0,
            eta_seconds=0.0 if finished else _eta(total_estimate, done_estimate, done_before, elapsed),
            finished=finished,
        )


def _eta(total: int, done: int, done_before: int, elapsed: float) -> float | None:
    rate = (done - done_before) / elapsed if elapsed else 0.0
    return (total - done) / rate if rate > 0 else None


def read_progress(target: MigrationPostgresHook) -> CopyProgress | None:
    """The copy's progress as the target records it (for `make status`); None when no parallel copy
    ever ran there. Without the workers' live counters, bytes count committed ranges only."""
    with target.cursor() as cursor:
        if not fetch_value(cursor, statement("snapshot_copy_progress_exists")):
            return None
        run = fetch_one(cursor, statement("snapshot_copy_run_get"))
        if run is None:
            return None
        rows = fetch_dicts(cursor, statement("snapshot_copy_ranges"))
    snapshot = ExportedSnapshot(run["slot"], run["consistent_point"], run["snapshot"])
    states = [_range_state(row, int(run["attempts"])) for row in rows]
    ended = run["finished_at"] or run["now"]
    elapsed = (ended - run["attempt_started_at"]).total_seconds()
    return _Tracker(snapshot, int(run["attempts"]), states).progress(elapsed)


def completed_copy(
    source: MigrationPostgresHook, target: MigrationPostgresHook, slot: str
) -> CopyProgress | None:
    """The finished copy under `slot`'s snapshot that the target holds, while the slot still starts
    where that snapshot ends (nothing consumed it yet): a copy step run again then has nothing to
    do, and `create_subscription_on_slot` can still follow it. None otherwise."""
    progress = read_progress(target)
    if progress is None or not progress.finished or progress.slot != slot:
        return None
    with source.cursor() as cursor:
        state = get_slot(cursor, slot)
    if state is None or lsn_number(state["confirmed_flush_lsn"]) != lsn_number(progress.consistent_point):
        return None
    return progress


def _range_state(row: dict[str, Any], attempt: int) -> _RangeState:
    """A range as the target recorded it, seen from attempt number `attempt`."""
    copied = row["copied_at"] is not None
    return _RangeState(
        _range_of(row),
        copied=copied,
        copied_before=copied and row["copied_in_attempt"] != attempt,
        rows=int(row["copied_rows"] or 0),
        bytes=int(row["copied_bytes"] or 0),
    )


def _range_of(row: dict[str, Any]) -> CopyRange:
    return CopyRange(
        Table(row["table_schema"], row["table_name"]),
        int(row["range_number"]),
        row["method"],
        row["key_column"],
        row["low"],
        row["high"],
        int(row["estimated_bytes"]),
        int(row["estimated_rows"]),
    )


# --- the copy -------------------------------------------------------------------------------------


def copy_snapshot(
    source: MigrationPostgresHook,
    target: MigrationPostgresHook,
    snapshot: ExportedSnapshot,
    *,
    workers: int,
    split_bytes: int,
    refuse_if_writers_on_target: Callable[[], None],
    log: Any,
    on_progress: Callable[[CopyProgress], None] | None = None,
    progress_seconds: float = 10.0,
    pg_bin_dir: str = DEFAULT_PG_BIN_DIR,
) -> CopyProgress:
    """Copy every table the source's publication would carry, as `snapshot` saw it, into the
    target's (empty or partly copied) tables; returns the final progress.

    Run again under the same snapshot (its session still open), it copies only the ranges the
    target has not recorded as copied. Under another snapshot, it empties every copied table on the
    target (in the transaction that records the new plan) and starts over.

    :param workers: ranges copied at once (each a reader on the source and a target session)
    :param split_bytes: tables bigger on disk (TOAST included) are copied in ranges of about this size
    :param refuse_if_writers_on_target: called before anything on the target changes, every run;
        raises to refuse (the operators pass their check of where the poolers send writers: rows
        copied now would overwrite production's)
    :param on_progress: called with the progress every `progress_seconds` and once at the end, on
        the caller's thread
    :param pg_bin_dir: where psql is (each range's reader on the source), else on PATH
    """
    psql = client_program(pg_bin_dir, "psql")
    if workers < 1:
        raise MigrationError(f"workers must be at least 1, got {workers}")
    if split_bytes < 1:
        raise MigrationError(f"split_bytes must be at least 1, got {split_bytes}")
    refuse_if_writers_on_target()
    with source.cursor() as source_cursor, target.cursor() as target_cursor:
        _check_slot(source_cursor, target_cursor, snapshot)
        target_cursor.execute(statement("snapshot_copy_progress_schema"))
        run = fetch_one(target_cursor, statement("snapshot_copy_run_get"))
    same_run = run is not None and (run["slot"], run["snapshot"]) == (snapshot.slot, snapshot.name)
    if same_run and run is not None and run["finished_at"] is not None:
        done = read_progress(target)
        assert done is not None
        log.info("Parallel copy under snapshot %s complete already: %s", snapshot.name, done.describe())
        if on_progress is not None:
            on_progress(done)
        return done
    reading = _snapshot_session(source, snapshot)
    try:
        with reading.cursor() as snapshot_cursor, target.cursor() as target_cursor:
            if same_run:
                planned = [
                    _range_of(row) for row in fetch_dicts(target_cursor, statement("snapshot_copy_ranges"))
                ]
            else:
                planned = plan_ranges(snapshot_cursor, split_bytes)
            shapes = table_shapes(snapshot_cursor, target_cursor, sorted({r.table for r in planned}))
    finally:
        reading.close()
    if not same_run:
        _start_over(target, snapshot, planned, log, earlier=run)
    with target.cursor() as cursor:
        attempt = int(fetch_value(cursor, statement("snapshot_copy_run_attempt")))
        states = [
            _range_state(row, attempt) for row in fetch_dicts(cursor, statement("snapshot_copy_ranges"))
        ]
    tracker = _Tracker(snapshot, attempt, states)
    pending = [state for state in states if not state.copied]
    log.info(
        "Parallel copy under snapshot %s (slot %s at %s), attempt %d: %d of %d range(s) of %d table(s) to "
        "copy with %d worker(s)",
        snapshot.name,
        snapshot.slot,
        snapshot.consistent_point,
        attempt,
        len(pending),
        len(states),
        len(shapes),
        workers,
    )
    _Copy(source, target, snapshot, shapes, tracker, attempt, psql).run(
        pending, workers, on_progress, progress_seconds
    )
    with target.cursor() as cursor:
        cursor.execute(statement("snapshot_copy_run_finish"))
    final = tracker.progress()
    if on_progress is not None:
        on_progress(final)
    log.info("Parallel copy done: %s", final.describe())
    return final


def _check_slot(source_cursor: Any, target_cursor: Any, snapshot: ExportedSnapshot) -> None:
    """The slot must still start where the snapshot ends, and no subscription may stream from it yet."""
    feeding = [
        row["subname"]
        for row in fetch_dicts(
            target_cursor, statement("snapshot_copy_slot_subscriptions"), {"slot": snapshot.slot}
        )
    ]
    if feeding:
        raise MigrationError(
            f"subscription(s) {', '.join(feeding)} on the target already stream from slot {snapshot.slot}: "
            "the copy is over; copying again would overwrite replicated rows"
        )
    slot = get_slot(source_cursor, snapshot.slot)
    if slot is None:
        raise MigrationError(
            f"slot {snapshot.slot} is gone from the source: changes since its snapshot are lost to this "
            "copy; export a new snapshot (exported_snapshot) and copy again"
        )
    if lsn_number(slot["confirmed_flush_lsn"]) != lsn_number(snapshot.consistent_point):
        raise MigrationError(
            f"slot {snapshot.slot} has moved from {snapshot.consistent_point} (its snapshot) to "
            f"{slot['confirmed_flush_lsn']}: something consumed it, so it no longer starts where the "
            "snapshot ends; export a new snapshot and copy again"
        )


def _snapshot_session(source: MigrationPostgresHook, snapshot: ExportedSnapshot) -> Any:
    """A source session in a read-only transaction that sees exactly `snapshot`."""
    connection = source.connect(application_name=WORKER_APPLICATION)
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement("snapshot_copy_import_snapshot"), {"snapshot": snapshot.name})
    except psycopg2.Error as exc:
        connection.close()
        if isinstance(
            exc, psycopg2.errors.InvalidParameterValue | psycopg2.errors.ObjectNotInPrerequisiteState
        ):
            raise MigrationError(
                f"snapshot {snapshot.name} of slot {snapshot.slot} can no longer be imported: the session "
                "that exported it has ended, and rows copied under it cannot be completed consistently: "
                "export a new snapshot (exported_snapshot drops the leftover slot) and copy again "
                f"({_first_line(exc)})"
            ) from exc
        raise
    return connection


def _start_over(
    target: MigrationPostgresHook,
    snapshot: ExportedSnapshot,
    planned: list[CopyRange],
    log: Any,
    earlier: dict[str, Any] | None,
) -> None:
    """Empty the copied tables and record the new plan, in one target transaction."""
    tables = sorted({r.table for r in planned})
    connection = target.connect(autocommit=False)
    try:
        with connection.cursor() as cursor:
            filled = empty_tables(cursor, tables)
            cursor.execute(statement("snapshot_copy_run_reset"))
            cursor.execute(
                statement("snapshot_copy_run_create"),
                {
                    "slot": snapshot.slot,
                    "consistent_point": snapshot.consistent_point,
                    "snapshot": snapshot.name,
                },
            )
            for copy_range in planned:
                cursor.execute(
                    statement("snapshot_copy_range_plan"),
                    {
                        **copy_range.row_key(),
                        "method": copy_range.method,
                        "key_column": copy_range.key,
                        "low": copy_range.low,
                        "high": copy_range.high,
                        "estimated_bytes": copy_range.estimated_bytes,
                        "estimated_rows": copy_range.estimated_rows,
                    },
                )
        connection.commit()
    finally:
        connection.close()
    if earlier is not None:
        log.info(
            "Target: the earlier copy ran under snapshot %s of slot %s, not this one: starting over",
            earlier["snapshot"],
            earlier["slot"],
        )
    if filled:
        log.info("Target: emptied every table before the copy (%s held rows)", ", ".join(map(str, filled)))
    split = sorted({str(r.table) for r in planned if r.method != "whole"})
    log.info("Planned %d range(s); split: %s", len(planned), ", ".join(split) or "none")


@dataclass(eq=False)
class _Copy:
    """The workers of one attempt: each holds a target session and a reader on the source (whose
    transaction imports the snapshot), and copies ranges until none is left or one fails (then the
    others' statements are cancelled, their readers killed, and the first error is raised)."""

    source: MigrationPostgresHook
    target: MigrationPostgresHook
    snapshot: ExportedSnapshot
    shapes: dict[Table, TableShape]
    tracker: _Tracker
    attempt: int
    psql: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[_RangeState] = field(default_factory=list)
    connections: list[Any] = field(default_factory=list)
    readers: list[_RangeReader] = field(default_factory=list)
    failure: BaseException | None = None

    def run(
        self,
        pending: list[_RangeState],
        workers: int,
        on_progress: Callable[[CopyProgress], None] | None,
        every: float,
    ) -> None:
        self.queue = list(reversed(pending))  # popped from the end: biggest first
        threads = [
            threading.Thread(target=self._work, name=f"snapshot-copy-{n}", daemon=True)
            for n in range(min(workers, len(pending)))
        ]
        for thread in threads:
            thread.start()
        next_report = time.monotonic() + every
        while alive := [thread for thread in threads if thread.is_alive()]:
            alive[0].join(max(0.0, min(next_report - time.monotonic(), 1.0)))
            if time.monotonic() >= next_report:  # the next report's time moves on with or without a callback
                if on_progress is not None:
                    on_progress(self.tracker.progress())
                next_report += every
        if self.failure is not None:
            raise self.failure

    def _next(self) -> _RangeState | None:
        with self.lock:
            return self.queue.pop() if self.queue and self.failure is None else None

    def _fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.failure is not None:
                return
            self.failure = exc
            opened, reading = list(self.connections), list(self.readers)
        for connection in opened:
            with contextlib.suppress(Exception):
                connection.cancel()
        for reader in reading:
            reader.kill()

    def _opened(self, connection: Any) -> Any:
        with self.lock:
            self.connections.append(connection)
        return connection

    def _reader(self, begin: str) -> _RangeReader:
        """The worker's reader on the source: psql, the connection and password in its environment."""
        reader = _RangeReader(
            [self.psql, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1"],
            self.source.client_environment(WORKER_APPLICATION),
        )
        with self.lock:
            self.readers.append(reader)
            if self.failure is not None:
                reader.kill()
        try:
            reader.start(begin)
            reader.finish_empty()
        except _SourceFailed as exc:
            reader.close()
            raise MigrationError(f"a copy worker's reader could not start: {exc}") from exc
        return reader

    def _work(self) -> None:
        target: Any = None
        reader: _RangeReader | None = None
        try:
            target = self._opened(self.target.connect(autocommit=False, application_name=WORKER_APPLICATION))
            _as_replica(target)
            # The reader's statements are quoted by the target's session (quoting is the client's).
            with target.cursor() as cursor:
                begin = cursor.mogrify(
                    statement("snapshot_copy_import_snapshot"), {"snapshot": self.snapshot.name}
                ).decode()
            while (state := self._next()) is not None:
                if reader is None:
                    reader = self._reader(begin)
                self._copy(state, target, reader)
        except BaseException as exc:
            self._fail(exc)
        finally:
            if reader is not None:
                reader.close()
            if target is not None:
                with contextlib.suppress(Exception):
                    target.close()

    def _copy(self, state: _RangeState, target: Any, reader: _RangeReader) -> None:
        copy_range = state.range
        shape = self.shapes[copy_range.table]
        query, params = copy_range.select(shape.column_list)
        with target.cursor() as target_cursor:
            copy_out = target_cursor.mogrify(
                statement("snapshot_copy_out", query=query, format=shape.format), params
            ).decode()
            copy_in = statement(
                "snapshot_copy_in",
                table=copy_range.table.identifier,
                columns=shape.column_list,
                format=shape.format,
            )
            started = time.monotonic()
            try:
                target_cursor.execute(statement("snapshot_copy_range_claim"), copy_range.row_key())
                claimed = target_cursor.fetchone()
                if claimed is None:
                    raise MigrationError(f"{copy_range.describe()} is not in the target's plan any more")
                if not claimed[0]:
                    target.rollback()  # copied meanwhile by another run of the same snapshot
                    with self.tracker.lock:
                        state.copied = True
                    return
                rows = _stream(reader, copy_out, target_cursor, copy_in, state)
                target_cursor.execute(
                    statement("snapshot_copy_range_done"),
                    {
                        **copy_range.row_key(),
                        "rows": rows,
                        "bytes": state.bytes,
                        "seconds": time.monotonic() - started,
                        "attempt": self.attempt,
                    },
                )
                if target_cursor.rowcount != 1:
                    raise MigrationError(f"{copy_range.describe()} was recorded as copied by someone else")
                target.commit()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    target.rollback()
                with self.tracker.lock:
                    state.bytes = 0
                if isinstance(exc, psycopg2.Error | _SourceFailed):
                    raise MigrationError(
                        f"copying {copy_range.describe()} failed: {_first_line(exc)}"
                    ) from exc
                raise
        with self.tracker.lock:
            state.rows = rows
            state.copied = True


def _as_replica(connection: Any) -> None:
    """The target session skips foreign keys and triggers, as an apply worker does."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement("snapshot_copy_replica_role"))
        connection.commit()
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise MigrationError(
            "the target's role may not set session_replication_role, which the parallel copy needs (ranges "
            "arrive in any order, so foreign keys must not fire): make it a superuser, or on PostgreSQL 15+ "
            "GRANT SET ON PARAMETER session_replication_role TO it"
        ) from exc


class _SourceFailed(Exception):
    """The worker's reader on the source (psql) failed: its first error line."""


class _RangeReader:
    """One psql on the source, fed statements on its input: each statement's output, up to a line
    only this reader knows (`\\echo` of 128 random bits, never logged), is read back as one stream
    (`read`, for the target's COPY FROM STDIN). psql stops at the first error (ON_ERROR_STOP) and
    ends: its output ends before the line, and the stream raises with psql's first error line."""

    def __init__(self, command: list[str], environment: dict[str, str]) -> None:
        self.boundary = secrets.token_hex(16).encode() + b"\n"
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 (psql's whole stderr, kept until close())
        self.process = subprocess.Popen(
            command, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors
        )
        assert self.process.stdout is not None
        self.output = self.process.stdout.fileno()
        with contextlib.suppress(OSError):  # fewer, bigger reads; the default pipe holds 64 KiB
            fcntl.fcntl(self.output, fcntl.F_SETPIPE_SZ, PIPE_CHUNK)
        self.held = b""  # the last bytes read, where they may begin the boundary
        self.streaming = False

    def start(self, text: str) -> None:
        """Run `text` (one SQL statement, without its semicolon); `read` then streams its output."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(text.encode() + b";\n\\echo " + self.boundary)
            self.process.stdin.flush()
        except OSError:
            raise _SourceFailed(self.error_line()) from None
        self.streaming = True

    def read(self, size: int = PIPE_CHUNK) -> bytes:
        """Up to about `size` bytes of the running statement's output; b"" once it is all read.
        Most reads hand on what the pipe gave as it is: the stream carries gigabytes."""
        while self.streaming:
            chunk = os.read(self.output, size)
            if not chunk:
                raise _SourceFailed(self.error_line())
            data = self.held + chunk
            end = data.find(self.boundary)
            if end >= 0:
                self.streaming = False
                self.held = b""
                return data[:end]
            held = self._boundary_start(data)
            self.held = data[held:]
            if held:
                return data if held == len(data) else data[:held]
        return b""

    def _boundary_start(self, data: bytes) -> int:
        """Where the boundary might begin in `data`'s last bytes (it may arrive split over two
        reads): the first place its end could be a start of the boundary, else len(data)."""
        first = self.boundary[:1]
        start = data.find(first, max(0, len(data) - len(self.boundary) + 1))
        while start >= 0:
            if self.boundary.startswith(data[start:]):
                return start
            start = data.find(first, start + 1)
        return len(data)

    def finish_empty(self) -> None:
        """Wait for a statement with no output to end (raises if it failed)."""
        if self.read():
            raise _SourceFailed("psql on the source: unexpected output")

    def error_line(self) -> str:
        self.kill()
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        # psql puts where in its input the statement was first ("psql:<stdin>:7: "): not ours to show.
        first = PSQL_INPUT_LOCATION.sub("", lines[0]) if lines else "ended without a message"
        return f"psql on the source: {first}"

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """End psql (its transaction with it) and free its pipes."""
        self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.errors):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class _CountingReader:
    """The reader's output, counting the bytes the target's COPY takes from it (in chunks); only this
    range's worker writes `state.bytes`."""

    def __init__(self, reader: _RangeReader, state: _RangeState) -> None:
        self.reader = reader
        self.state = state
        self.failure: _SourceFailed | None = None  # psycopg2 reports it as the COPY's cancellation

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.reader.read(size if size > 0 else PIPE_CHUNK)
        except _SourceFailed as exc:
            self.failure = exc
            raise
        self.state.bytes += len(data)
        return data


def _stream(
    reader: _RangeReader, copy_out: str, target_cursor: Any, copy_in: sql.Composable, state: _RangeState
) -> int:
    """`copy_out` (COPY TO STDOUT) run by the reader into COPY FROM STDIN on the target; the rows the
    target took (the reader raises where the source's rows end short of the reader's boundary)."""
    reader.start(copy_out)
    counting = _CountingReader(reader, state)
    try:
        target_cursor.copy_expert(copy_in, counting, size=PIPE_CHUNK)
    except psycopg2.Error:
        if counting.failure is not None:
            raise counting.failure from None
        raise
    return int(target_cursor.rowcount)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- streaming from the slot ----------------------------------------------------------------------


def create_subscription_on_slot(
    source: MigrationPostgresHook,
    target: MigrationPostgresHook,
    *,
    publication: str,
    subscription: str,
    slot: str,
    log: Any,
) -> dict[str, Any]:
    """The subscription streaming from `slot` without copying (copy_data = false, create_slot =
    false): it applies every change committed after the snapshot the copy ran under. Created when
    the copy of that slot's snapshot is complete on the target, verified when it exists."""
    with target.cursor() as target_cursor, source.cursor() as source_cursor:
        existing = get_subscription(target_cursor, subscription)
        if existing is not None:
            if (existing["subslotname"], list(existing["subpublications"])) != (slot, [publication]):
                raise MigrationError(
                    f"subscription {subscription} exists with slot {existing['subslotname']} and "
                    f"publication(s) {existing['subpublications']}, not slot {slot} and [{publication}]"
                )
            log.info("Target: subscription %s streams from slot %s already", subscription, slot)
            return {"subscription": subscription, "action": "verified", "slot": slot}
        run = None
        if fetch_value(target_cursor, statement("snapshot_copy_progress_exists")):
            run = fetch_one(target_cursor, statement("snapshot_copy_run_get"))
        if run is None or run["slot"] != slot:
            raise MigrationError(
                f"no parallel copy under slot {slot}'s snapshot on the target: subscribing without copying "
                "would leave every table without the rows committed before the slot"
            )
        if run["finished_at"] is None:
            copied = read_progress(target)
            done = f"{copied.ranges_copied} of {copied.ranges} ranges" if copied else "not every range"
            raise MigrationError(
                f"the parallel copy under slot {slot}'s snapshot is not complete on the target ({done} "
                "copied): run it to the end first"
            )
        state = get_slot(source_cursor, slot)
        if state is None:
            raise MigrationError(
                f"slot {slot} is gone from the source: the changes since the copy's snapshot are lost; "
                "export a new snapshot and copy again"
            )
        if lsn_number(state["confirmed_flush_lsn"]) != lsn_number(run["consistent_point"]):
            raise MigrationError(
                f"slot {slot} has moved from {run['consistent_point']} (the copy's snapshot) to "
                f"{state['confirmed_flush_lsn']}: something consumed it; export a new snapshot and copy again"
            )
        if state["active"]:
            raise MigrationError(f"slot {slot} is in use on the source (pid {state['active_pid']})")
        if get_publication(source_cursor, publication) is None:
            raise MigrationError(f"publication {publication} does not exist on the source")
        quiet_statement_logging(target_cursor)
        target_cursor.execute(
            statement("subscription_create_on_slot", subscription=subscription, publication=publication),
            {"conninfo": source.replication_conninfo(), "slot": slot},
        )
    log.info(
        "Target: created subscription %s on slot %s: streaming from %s, where the copy's snapshot ends",
        subscription,
        slot,
        run["consistent_point"],
    )
    return {
        "subscription": subscription,
        "action": "created",
        "slot": slot,
        "start_lsn": run["consistent_point"],
    }
