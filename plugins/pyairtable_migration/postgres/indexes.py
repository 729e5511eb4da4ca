"""What the schema copy deferred, built on the target once the rows are in: every secondary index,
and (for the parallel copy, `schema_copy.copy_schema(defer_keys_from_bytes=...)`) every primary key,
unique constraint and the foreign keys referencing them, that the source has and the target lacks.

While a subscription streams into the target (the native copy: replication writes as the indexes
are built), each index is built CONCURRENTLY, one table's one after the other, different tables side
by side, and a foreign key is added NOT VALID, then validated without blocking writes. Before any
subscription (the parallel copy builds them before it subscribes on its slot) nothing writes the
target: each index is built plainly, in one scan instead of two, and several on one table at once.
A key is its unique index built like the others (same name), then made the constraint (USING INDEX:
no scan) with its replica identity, CLUSTER mark and comment; foreign keys come last. The
definitions are the source's own (pg_get_indexdef, pg_get_constraintdef, correctly quoted); an index
a killed earlier build left INVALID is dropped (CONCURRENTLY) and built again.

First, tables no ANALYZE has looked at get their statistics: a foreign key's check is a join
planned with them (without, one measured 4.4 s instead of 0.5 s at 10 M records), and so are the
first queries after the switchover. `parallelism` builds run at once, biggest tables first, in
`parallelism` processes together: a build has parallel workers only when fewer builds than that
are to run (plain builds of one table side by side share one read of its heap, which PostgreSQL
synchronizes: at 10 M records, in one session, the deferred builds took 7.2-8.6 s with none, 8.6-9.3 s
two at a time with one parallel worker each).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg2
from psycopg2 import sql

from pyairtable_migration.hooks.database import (
    MigrationError,
    MigrationPostgresHook,
    Table,
    fetch_dicts,
    fetch_value,
    statement,
    table_list,
)

Job = TypeVar("Job", bound=dict[str, Any])
KEY_KINDS = {"p": "PRIMARY KEY", "u": "UNIQUE"}
INDEX_PREFIXES = {"CREATE INDEX ": False, "CREATE UNIQUE INDEX ": True}


def parallel_workers(parallelism: int, groups: int) -> int:
    """Each build's parallel workers when `groups` groups of builds run `parallelism` at once, so
    that their processes together are at most `parallelism`."""
    return max(0, parallelism // max(1, min(parallelism, groups)) - 1)


class IndexBuilder:
    """The source's deferred secondary indexes and keys, built on the target."""

    # Whether the builds go CONCURRENTLY: `run` reads it from the target (a subscription streams in).
    concurrently = True

    def __init__(
        self, source: MigrationPostgresHook, target: MigrationPostgresHook, *, parallelism: int, log: Any
    ) -> None:
        self.source = source
        self.target = target
        self.parallelism = parallelism
        self.log = log
        self.build_workers = 0

    def run(self) -> dict[str, Any]:
        """Build what the target lacks; what was built, rebuilt and already there."""
        with self.source.cursor() as cursor:
            wanted = fetch_dicts(cursor, statement("indexes_deferrable"))
            keys = fetch_dicts(cursor, statement("keys_deferrable"), {"min_bytes": None})
        with self.target.cursor() as cursor:
            existing = self._indexes_present(cursor)
            present_keys = {
                (r["schema_name"], r["table_name"], r["constraint_name"])
                for r in fetch_dicts(cursor, statement("keys_present"))
            }
            self.concurrently = bool(fetch_value(cursor, statement("index_build_subscribed")))
        analyzed = self._analyze()
        keys = [
            k for k in keys if (k["schema_name"], k["table_name"], k["constraint_name"]) not in present_keys
        ]
        primary = [k for k in keys if k["kind"] in KEY_KINDS]
        foreign = [k for k in keys if k["kind"] == "f"]
        # A key's index has the key's name; built with the secondary indexes, attached after.
        key_indexes = [
            {**k, "index_name": k["constraint_name"], "definition": k["index_definition"]} for k in primary
        ]
        lacking = [
            i
            for i in [*wanted, *key_indexes]
            if existing.get((i["schema_name"], i["index_name"])) is not True
        ]
        for index in lacking:
            if not str(index["definition"]).startswith(tuple(INDEX_PREFIXES)):
                raise MigrationError(f"unexpected index definition: {str(index['definition'])[:80]}")
        # Built CONCURRENTLY, one table's indexes one after the other (such builds on one table
        # block each other); plainly, each on its own. The biggest tables first.
        groups = self._groups(
            lacking,
            lambda i: (i["schema_name"], i["table_name"], "" if self.concurrently else i["index_name"]),
        )
        self.build_workers = parallel_workers(self.parallelism, len(groups))
        results = self._run_jobs(
            groups,
            lambda index: self._build_one(index, existing),
            # A build that lost a deadlock to a parallel one is left INVALID: built again, alone,
            # knowing what the target holds now.
            lambda index: self._build_one(index, self._indexes_present_now()),
        )
        built = [(name, invalid) for index, (name, invalid) in results if "kind" not in index]
        for key in primary:
            self._attach_key(key)
        # Foreign keys after every key they reference; one table's one after another.
        added = self._run_jobs(
            self._groups(foreign, lambda key: (key["schema_name"], key["table_name"])),
            self._add_foreign_key,
            self._add_foreign_key,
        )
        present = len(wanted) - len(built)
        self.log.info(
            "Deferred: %d index(es) built (%d already present), %d key(s) and %d foreign key(s) added",
            len(built),
            present,
            len(primary),
            len(added),
        )
        return {
            "built": [name for name, _ in built],
            "rebuilt_invalid": [name for name, was_invalid in built if was_invalid],
            "already_present": present,
            "keys": [str(Table(k["schema_name"], k["constraint_name"])) for k in primary],
            "foreign_keys": [name for _, (name, _) in added],
            "concurrently": self.concurrently,
            "analyzed": analyzed,
        }

    @staticmethod
    def _groups(jobs: list[Job], group_of: Callable[[Job], tuple[str, ...]]) -> list[list[Job]]:
        """The jobs in groups run one after another, the biggest tables' first."""
        groups: dict[tuple[str, ...], list[Job]] = {}
        for job in jobs:
            groups.setdefault(group_of(job), []).append(job)
        return sorted(groups.values(), key=lambda group: -int(group[0]["table_bytes"]))

    def _run_jobs(
        self,
        groups: list[list[Job]],
        do: Callable[[Job], tuple[str, bool]],
        retry: Callable[[Job], tuple[str, bool]],
    ) -> list[tuple[Job, tuple[str, bool]]]:
        """`do` every job, `parallelism` groups at once (a group's jobs one after another); a job
        that failed (a deadlock lost to a parallel one) is retried alone."""

        def run_group(group: list[Job]) -> list[tuple[Job, tuple[str, bool] | None]]:
            outcomes: list[tuple[Job, tuple[str, bool] | None]] = []
            for job in group:
                try:
                    outcomes.append((job, do(job)))
                except psycopg2.Error as exc:
                    self.log.warning(
                        "Target: %s failed (%s); will retry alone",
                        Table(job["schema_name"], job.get("index_name") or job["constraint_name"]),
                        exc,
                    )
                    outcomes.append((job, None))
            return outcomes

        with ThreadPoolExecutor(max(1, self.parallelism), thread_name_prefix="index") as pool:
            outcomes = [outcome for group in pool.map(run_group, groups) for outcome in group]
        return [(job, result if result is not None else retry(job)) for job, result in outcomes]

    def _analyze(self) -> list[str]:
        """Statistics for the tables that have none (module docstring); which ones."""
        started = time.monotonic()
        with self.target.cursor() as cursor:
            tables = [
                Table(r["schema_name"], r["table_name"])
                for r in fetch_dicts(cursor, statement("tables_unanalyzed"))
            ]
            if tables:
                cursor.execute(statement("tables_analyze", tables=table_list(tables)))
        if tables:
            self.log.info(
                "Target: statistics gathered for %d table(s) in %.1f s (a foreign key's check plans with "
                "them, as do the first queries after the switchover)",
                len(tables),
                time.monotonic() - started,
            )
        return [str(table) for table in tables]

    def _indexes_present(self, cursor: Any) -> dict[tuple[str, str], bool]:
        return {
            (r["schema_name"], r["index_name"]): r["indisvalid"]
            for r in fetch_dicts(cursor, statement("indexes_present"))
        }

    def _indexes_present_now(self) -> dict[tuple[str, str], bool]:
        with self.target.cursor() as cursor:
            return self._indexes_present(cursor)

    def _build_one(self, index: dict[str, Any], existing: dict[tuple[str, str], bool]) -> tuple[str, bool]:
        key = (index["schema_name"], index["index_name"])
        name = str(Table(*key))
        definition: str = index["definition"]
        prefix = next(p for p in INDEX_PREFIXES if definition.startswith(p))
        with self.target.cursor() as cursor:
            cursor.execute(statement("index_build_session", workers=sql.Literal(self.build_workers)))
            invalid = existing.get(key) is False
            if invalid:
                cursor.execute(statement("index_drop_concurrently", index=key))
                self.log.info("Target: dropped invalid index %s (left by an interrupted build)", name)
            began = time.monotonic()
            # pg_get_indexdef's own text: only the leading keywords change, no identifier is built here.
            cursor.execute(
                statement(
                    "index_build" if self.concurrently else "index_build_plain",
                    unique=sql.SQL("UNIQUE" if INDEX_PREFIXES[prefix] else ""),
                    definition=sql.SQL(definition[len(prefix) :]),
                )
            )
        how = "concurrently" if self.concurrently else "before any subscription"
        self.log.info("Target: built index %s %s in %.1f s", name, how, time.monotonic() - began)
        return name, invalid

    def _attach_key(self, key: dict[str, Any]) -> None:
        """The key made of its built index, with what pg_dump's entry for it carries, at once."""
        table = (key["schema_name"], key["table_name"])
        constraint = key["constraint_name"]
        deferrable = ""
        if key["deferrable"]:
            deferrable = "DEFERRABLE INITIALLY DEFERRED" if key["initially_deferred"] else "DEFERRABLE"
        with self.target.cursor(autocommit=False) as cursor:
            cursor.execute(
                statement(
                    "key_attach",
                    table=table,
                    constraint=constraint,
                    kind=sql.SQL(KEY_KINDS[key["kind"]]),
                    deferrable=sql.SQL(deferrable),
                )
            )
            self._constraint_extras(cursor, key)
            cursor.connection.commit()
        self.log.info(
            "Target: %s %s on %s in place",
            "primary key" if key["kind"] == "p" else "unique constraint",
            constraint,
            Table(*table),
        )

    def _add_foreign_key(self, key: dict[str, Any]) -> tuple[str, bool]:
        table = (key["schema_name"], key["table_name"])
        constraint = key["constraint_name"]
        definition: str = key["definition"]
        # While replication writes the table: added NOT VALID (a brief lock), then validated beside
        # the writes; a key the source holds NOT VALID stays so.
        validate = self.concurrently and not definition.endswith(" NOT VALID")
        began = time.monotonic()
        with self.target.cursor(autocommit=False) as cursor:
            cursor.execute(statement("index_build_session", workers=sql.Literal(self.build_workers)))
            cursor.execute(
                statement(
                    "foreign_key_add",
                    only=sql.SQL("" if key["partitioned"] else "ONLY"),
                    table=table,
                    constraint=constraint,
                    definition=sql.SQL(definition + (" NOT VALID" if validate else "")),
                )
            )
            self._constraint_extras(cursor, key)
            cursor.connection.commit()
            if validate:
                cursor.execute(statement("foreign_key_validate", table=table, constraint=constraint))
                cursor.connection.commit()
        self.log.info(
            "Target: foreign key %s on %s added in %.1f s",
            constraint,
            Table(*table),
            time.monotonic() - began,
        )
        return str(Table(key["schema_name"], constraint)), False

    @staticmethod
    def _constraint_extras(cursor: Any, key: dict[str, Any]) -> None:
        table = (key["schema_name"], key["table_name"])
        constraint = key["constraint_name"]
        if key["replica_identity"]:
            cursor.execute(statement("key_replica_identity", table=table, constraint=constraint))
        if key["clustered"]:
            cursor.execute(statement("key_cluster", table=table, constraint=constraint))
        if key["comment"] is not None:
            cursor.execute(
                statement("key_comment", table=table, constraint=constraint), {"comment": key["comment"]}
            )
