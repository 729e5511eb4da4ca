"""Data validation independent of replication: both sides hashed, compared, differences named.

Per table, on both sides in parallel:
  * an integer primary key: the key space is cut into ranges of `chunk_rows` keys; one scan per
    range returns its row count and the sum of its row hashes (order independent). A range that
    differs is compared row by row (key, row hash), which names the keys missing on the target,
    extra on the target, or changed;
  * any other primary key: the whole table's count and hash, then row by row on a difference;
  * no primary key (REPLICA IDENTITY FULL): the multiset of row hashes.
A difference may be a write still in flight. So before anything is reported, the caller's
`catch_up` waits until the target has applied the source's WAL up to the current position, and
the differing keys are read again; only what still differs after `rounds` such re-checks is a
finding.

A row's hash is `hash_record(row)` (each column's own hash function, PostgreSQL 14+: ~2.7 M rows/s
per core, independent of time zone and output formats). A table with a column type that has no
hash function is hashed as `hashtext(row::text)` instead, in sessions set to render identically on
both sides (UTC, ISO dates, same float digits).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg2
from psycopg2 import sql

from pyairtable_migration.hooks.database import (
    MigrationPostgresHook,
    Table,
    display_identifier,
    fetch_dicts,
    sql_text,
    statement,
)

INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
MAX_RANGES = 4096
CHUNKS_PER_SLICE = 16  # ranges per scan: one pass over a slice answers all its ranges
EXAMPLES = 10
NO_KEY = "(no key)"


@dataclass(frozen=True)
class TableShape:
    table: Table
    key_columns: tuple[str, ...]
    key_types: tuple[str, ...]
    hashed_as_text: bool = False

    @property
    def row_hash(self) -> sql.Composable:
        return sql.SQL(
            sql_text("validation_hash_text" if self.hashed_as_text else "validation_hash_record").strip()
        )

    @property
    def integer_key(self) -> str | None:
        if len(self.key_columns) == 1 and self.key_types[0] in INTEGER_TYPES:
            return self.key_columns[0]
        return None

    def key_text(self) -> str:
        return ", ".join(display_identifier(c) for c in self.key_columns) or NO_KEY


@dataclass
class Difference:
    """One table's key range that differs, with the rows that make it differ."""

    table: Table
    key: str
    low: int | None = None  # integer key range [low, high); None: the whole table
    high: int | None = None
    source_rows: int = 0
    target_rows: int = 0
    missing: list[Any] = field(default_factory=list)  # keys on the source, not on the target
    extra: list[Any] = field(default_factory=list)  # keys on the target, not on the source
    changed: list[Any] = field(default_factory=list)  # keys on both, rows differ

    @property
    def keys(self) -> list[Any]:
        return [*self.missing, *self.extra, *self.changed]

    @property
    def empty(self) -> bool:
        return not self.keys

    def where(self) -> str:
        if self.key == NO_KEY:
            return f"{self.table} (no primary key: rows compared as a multiset)"
        if self.low is None:
            return f"{self.table} (whole table, key {self.key})"
        return f"{self.table} {self.key} in [{self.low}, {self.high})"

    def describe(self) -> str:
        parts = [f"{self.where()}: source {self.source_rows} rows, target {self.target_rows} rows"]
        key = "" if self.key == NO_KEY else f" {self.key}"
        for label, keys in (("missing on target", self.missing), ("extra on target", self.extra)):
            if keys:
                parts.append(f"{label}{key} {_sample(keys)}")
        if self.changed:
            parts.append(f"changed{key} {_sample(self.changed)}")
        return "; ".join(parts)

    def summary(self) -> dict[str, Any]:
        return {
            "table": str(self.table),
            "key": self.key,
            "range": [self.low, self.high] if self.low is not None else None,
            "missing": self.missing[:EXAMPLES],
            "extra": self.extra[:EXAMPLES],
            "changed": self.changed[:EXAMPLES],
            "counts": {"missing": len(self.missing), "extra": len(self.extra), "changed": len(self.changed)},
        }


def _sample(keys: Sequence[Any]) -> str:
    shown = ", ".join(str(k) for k in keys[:EXAMPLES])
    return f"{shown} (+{len(keys) - EXAMPLES} more)" if len(keys) > EXAMPLES else shown


@dataclass
class ValidationReport:
    tables: int = 0
    rows: int = 0
    chunks: int = 0
    seconds: float = 0.0
    differences: list[Difference] = field(default_factory=list)
    resolved_in_flight: int = 0
    rechecks: int = 0
    missing_tables: list[str] = field(default_factory=list)
    total_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def passed(self) -> bool:
        return not self.differences and not self.missing_tables

    def summary(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "tables": self.tables,
            "rows": self.rows,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
            "total_seconds": round(self.total_seconds, 3),
            "rows_per_second": round(self.rows_per_second),
            "rechecks": self.rechecks,
            "differences_resolved_as_in_flight": self.resolved_in_flight,
            "missing_tables": self.missing_tables,
            "differences": [d.summary() for d in self.differences[:EXAMPLES]],
        }


class _Sessions:
    """One validation session per (thread, side), opened on first use, closed together."""

    def __init__(self, hooks: dict[str, MigrationPostgresHook]) -> None:
        self.hooks = hooks
        self.local = threading.local()
        self.opened: list[Any] = []
        self.lock = threading.Lock()

    def cursor(self, side: str) -> Any:
        connections = self.local.__dict__.setdefault("connections", {})
        if side not in connections:
            connection = self.hooks[side].connect(application_name="pyairtable-migration-validation")
            with connection.cursor() as cursor:
                cursor.execute(statement("validation_session"))
            connections[side] = connection
            with self.lock:
                self.opened.append(connection)
        return connections[side].cursor()

    def close(self) -> None:
        for connection in self.opened:
            with contextlib.suppress(Exception):
                connection.close()


class Validator:
    """Compares every table of the source with the target (see the module docstring).

    :param catch_up: called before each re-check; returns once the target has applied what the
        source had committed when it was called (or raises on timeout)
    """

    def __init__(
        self,
        source: MigrationPostgresHook,
        target: MigrationPostgresHook,
        *,
        chunk_rows: int,
        parallelism: int = 2,
        catch_up: Callable[[], None] | None = None,
        rounds: int = 3,
        log: Any = None,
    ) -> None:
        self.sessions = _Sessions({"source": source, "target": target})
        self.chunk_rows = chunk_rows
        self.parallelism = max(1, parallelism)
        self.catch_up = catch_up
        self.rounds = rounds
        self.log = log

    def _info(self, message: str, *args: Any) -> None:
        if self.log is not None:
            self.log.info(message, *args)

    # --- discovery ----------------------------------------------------------------------------
    def shapes(self, side: str) -> dict[Table, TableShape]:
        """Every table with its key; on the source also how its rows are hashed (probed)."""
        with self.sessions.cursor(side) as cursor:
            shapes = {}
            for row in fetch_dicts(cursor, statement("validation_tables")):
                table = Table(row["schema_name"], row["table_name"])
                shape = TableShape(table, tuple(row["key_columns"]), tuple(row["key_types"]))
                if side == "source":
                    try:
                        cursor.execute(
                            statement(
                                "validation_hash_probe", row_hash=shape.row_hash, table=table.identifier
                            )
                        )
                    except psycopg2.Error as exc:
                        self._info("%s: rows hashed as text (%s)", table, str(exc).strip().splitlines()[0])
                        shape = replace(shape, hashed_as_text=True)
                shapes[table] = shape
            return shapes

    def _bounds(self, shape: TableShape) -> tuple[int, int] | None:
        key = shape.integer_key
        assert key is not None
        lows, highs = [], []
        for side in ("source", "target"):
            with self.sessions.cursor(side) as cursor:
                cursor.execute(statement("validation_key_bounds", key=key, table=shape.table.identifier))
                low, high = cursor.fetchone()
            if low is not None:
                lows.append(low)
                highs.append(high)
        return (min(lows), max(highs)) if lows else None

    # --- first pass ---------------------------------------------------------------------------
    def run(self, only: Iterable[Table] | None = None) -> ValidationReport:
        started = time.monotonic()
        report = ValidationReport()
        self.pool = ThreadPoolExecutor(self.parallelism * 2, thread_name_prefix="validate")
        try:
            source_shapes, target_shapes = self.shapes("source"), self.shapes("target")
            self._shape_cache = source_shapes
            wanted = set(only) if only is not None else set(source_shapes)
            report.missing_tables = sorted(
                str(t) for t in wanted if t in source_shapes and t not in target_shapes
            )
            shapes = [source_shapes[t] for t in sorted(wanted) if t in source_shapes and t in target_shapes]
            report.tables = len(shapes)
            keyed = [s for s in shapes if s.integer_key]
            bounds = dict(zip([s.table for s in keyed], self.pool.map(self._bounds, keyed), strict=True))
            jobs: list[Job] = []
            for shape in shapes:
                if not shape.integer_key:
                    jobs.append(Job(shape, None, None, 0))
                    continue
                span = bounds[shape.table]
                if span is None:
                    continue  # empty on both sides
                low, high = span[0], span[1] + 1
                # Sparse keys (a few rows over a huge span) would mean millions of near-empty ranges:
                # at most MAX_RANGES per table, each then wider than chunk_rows keys.
                width = max(self.chunk_rows, -(-(high - low) // MAX_RANGES))
                step = width * CHUNKS_PER_SLICE
                jobs.extend(
                    Job(shape, start, min(start + step, high), low, width) for start in range(low, high, step)
                )
            hashed = self._both(self._hash, jobs)
            suspects: list[Difference] = []
            for job, (source, target) in zip(jobs, hashed, strict=True):
                report.rows += sum(count for count, _ in source.values())
                report.chunks += job.chunks()
                suspects.extend(self._differing(job, source, target))
            report.seconds = time.monotonic() - started
            self._info(
                "First pass: %d table(s), %d source rows, %d range(s) hashed on both sides in %.2f s (%.0f "
                "rows/s); %d range(s) differ",
                report.tables,
                report.rows,
                report.chunks,
                report.seconds,
                report.rows_per_second,
                len(suspects),
            )
            if suspects:
                suspects = [d for d in self._row_diffs(suspects, rechecking=False) if not d.empty]
                first_found = sum(len(d.keys) for d in suspects)
                for difference in suspects:
                    self._info("Differs before re-check: %s", difference.describe())
                suspects = self._recheck(suspects, report)
                report.resolved_in_flight = first_found - sum(len(d.keys) for d in suspects)
            report.differences = suspects
        finally:
            self.pool.shutdown()
            self.sessions.close()
        report.total_seconds = time.monotonic() - started
        return report

    def _both(self, function: Callable[..., Any], items: Sequence[Any], *args: Any) -> list[tuple[Any, Any]]:
        """function(side, item, *args) for both sides of every item, concurrently; pairs in order."""
        futures = [
            (
                self.pool.submit(function, "source", item, *args),
                self.pool.submit(function, "target", item, *args),
            )
            for item in items
        ]
        return [(source.result(), target.result()) for source, target in futures]

    def _hash(self, side: str, job: Job) -> dict[int, tuple[int, int]]:
        with self.sessions.cursor(side) as cursor:
            if job.low is None:
                cursor.execute(
                    statement(
                        "validation_table_hash", row_hash=job.shape.row_hash, table=job.shape.table.identifier
                    )
                )
                count, digest = cursor.fetchone()
                return {0: (int(count), int(digest))}
            key = job.shape.integer_key
            assert key is not None
            cursor.execute(
                statement(
                    "validation_chunk_hashes",
                    key=key,
                    row_hash=job.shape.row_hash,
                    table=job.shape.table.identifier,
                ),
                {"origin": job.origin, "width": job.width, "low": job.low, "high": job.high},
            )
            return {int(chunk): (int(count), int(digest)) for chunk, count, digest in cursor.fetchall()}

    def _differing(
        self, job: Job, source: dict[int, tuple[int, int]], target: dict[int, tuple[int, int]]
    ) -> list[Difference]:
        key = job.shape.integer_key or job.shape.key_text()
        differing = []
        for chunk in sorted(set(source) | set(target)):
            if source.get(chunk) == target.get(chunk):
                continue
            low = None if job.low is None else job.origin + chunk * job.width
            high = None if low is None else low + job.width
            differing.append(
                Difference(
                    job.shape.table,
                    key,
                    low,
                    high,
                    source.get(chunk, (0, 0))[0],
                    target.get(chunk, (0, 0))[0],
                )
            )
        return differing

    # --- row level ------------------------------------------------------------------------------
    def _rows(self, side: str, difference: Difference, rechecking: bool) -> Any:
        """The rows that make `difference` differ on `side`: key -> row hash, or, for a table
        without a key, the multiset of row hashes."""
        shape = self._shape_cache[difference.table]
        name, parts, parameters = self._row_statement(shape, difference, rechecking)
        with self.sessions.cursor(side) as cursor:
            cursor.execute(
                statement(name, row_hash=shape.row_hash, table=shape.table.identifier, **parts), parameters
            )
            rows = cursor.fetchall()
        if shape.key_columns:  # an integer key is one of them
            return dict(rows)
        return Counter(row[0] for row in rows)

    @staticmethod
    def _row_statement(
        shape: TableShape, difference: Difference, rechecking: bool
    ) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """Which statement reads those rows, by the table's key: its name, its parts besides the
        row hash and the table, and its parameters."""
        key = shape.integer_key
        if key and rechecking:
            return "validation_key_rows", {"key": key}, {"keys": list(difference.keys)}
        if key:
            return "validation_range_rows", {"key": key}, {"low": difference.low, "high": difference.high}
        if shape.key_columns:
            columns = sql.SQL(", ").join(sql.Identifier(c) for c in shape.key_columns)
            return "validation_keyed_rows", {"keys": columns}, None
        return "validation_row_hashes", {}, None

    def _row_diffs(self, differences: Sequence[Difference], rechecking: bool) -> list[Difference]:
        results = []
        for difference, (source, target) in zip(
            differences, self._both(self._rows, differences, rechecking), strict=True
        ):
            result = Difference(
                difference.table,
                difference.key,
                difference.low,
                difference.high,
                difference.source_rows,
                difference.target_rows,
            )
            if isinstance(source, Counter):
                # No key: rows are a multiset of hashes; a changed row shows as one missing, one extra.
                result.source_rows, result.target_rows = sum(source.values()), sum(target.values())
                result.missing = [f"row hash {h}" for h in sorted((source - target).elements())]
                result.extra = [f"row hash {h}" for h in sorted((target - source).elements())]
            else:
                result.missing = sorted(k for k in source if k not in target)
                result.extra = sorted(k for k in target if k not in source)
                result.changed = sorted(k for k in source if k in target and source[k] != target[k])
            results.append(result)
        return results

    def _recheck(self, differences: list[Difference], report: ValidationReport) -> list[Difference]:
        for round_number in range(1, self.rounds + 1):
            if not differences:
                break
            waited = time.monotonic()
            if self.catch_up is not None:
                self.catch_up()
            report.rechecks += 1
            still = [d for d in self._row_diffs(differences, rechecking=True) if not d.empty]
            self._info(
                "Re-check %d, after the target caught up with the source (%.2f s): %d of %d differing "
                "range(s) still differ",
                round_number,
                time.monotonic() - waited,
                len(still),
                len(differences),
            )
            differences = still
        return differences


@dataclass(frozen=True)
class Job:
    """One scan: a slice [low, high) of an integer key, cut into ranges of `width` keys counted
    from `origin`; or (low None) a whole table."""

    shape: TableShape
    low: int | None
    high: int | None
    origin: int
    width: int = 1

    def chunks(self) -> int:
        if self.low is None or self.high is None:
            return 1
        return -(-(self.high - self.low) // self.width)
