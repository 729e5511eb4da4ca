"""Secondary indexes built on the target after the initial copy (faster than copying into indexed
tables), every one the source has and the target lacks.

While a subscription streams into the target (the native copy: replication writes as the indexes
are built), each is built CONCURRENTLY, one table's one after the other, different tables side by
side. Before any subscription (the parallel copy builds them before it subscribes on its slot)
nothing writes the target: each is built plainly, in one scan instead of two, and several on one
table at once. The definitions are the source's own (pg_get_indexdef, correctly quoted); an index a
killed earlier build left INVALID is dropped (CONCURRENTLY) and built again. `parallelism` builds
run at once, biggest tables first.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2
from psycopg2 import sql

from pyairtable_migration.hooks.database import (
    MigrationError,
    MigrationPostgresHook,
    display_identifier,
    fetch_dicts,
    fetch_value,
    statement,
)


class IndexBuilder:
    """The source's deferred secondary indexes, built on the target."""

    # Whether the builds go CONCURRENTLY: `run` reads it from the target (a subscription streams in).
    concurrently = True

    def __init__(
        self, source: MigrationPostgresHook, target: MigrationPostgresHook, *, parallelism: int, log: Any
    ) -> None:
        self.source = source
        self.target = target
        self.parallelism = parallelism
        self.log = log

    def run(self) -> dict[str, Any]:
        """Build what the target lacks; what was built, rebuilt and already there."""
        with self.source.cursor() as cursor:
            wanted = fetch_dicts(cursor, statement("indexes_deferrable"))
        with self.target.cursor() as cursor:
            existing = {
                (r["schema_name"], r["index_name"]): r["indisvalid"]
                for r in fetch_dicts(cursor, statement("indexes_present"))
            }
        todo = [i for i in wanted if existing.get((i["schema_name"], i["index_name"])) is not True]
        present = len(wanted) - len(todo)
        for index in todo:
            if not str(index["definition"]).startswith("CREATE INDEX "):
                raise MigrationError(f"unexpected index definition: {str(index['definition'])[:80]}")
        with self.target.cursor() as cursor:
            self.concurrently = bool(fetch_value(cursor, statement("index_build_subscribed")))
        # Built CONCURRENTLY, one table's indexes one after the other (such builds on one table
        # block each other); plainly, each on its own. The biggest tables first.
        by_table: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for index in todo:
            key = (index["schema_name"], index["table_name"])
            by_table.setdefault(key if self.concurrently else (*key, index["index_name"]), []).append(index)
        groups = sorted(by_table.values(), key=lambda group: -int(group[0]["table_bytes"]))
        with ThreadPoolExecutor(max(1, self.parallelism), thread_name_prefix="index") as pool:
            outcomes = list(pool.map(lambda group: self._build_group(group, existing), groups))
        results = [result for outcome in outcomes for result in outcome]
        # A build that lost a deadlock to a parallel one is left INVALID: built again, alone.
        failed = [
            index for index, (_, error) in zip([i for g in groups for i in g], results, strict=True) if error
        ]
        if failed:
            with self.target.cursor() as cursor:
                now = {
                    (r["schema_name"], r["index_name"]): r["indisvalid"]
                    for r in fetch_dicts(cursor, statement("indexes_present"))
                }
            results = [r for r in results if not r[1]] + [(self._build_one(i, now), None) for i in failed]
        built = [name for (name, _), _error in results]
        rebuilt = [name for (name, was_invalid), _error in results if was_invalid]
        self.log.info("Deferred indexes: %d built, %d already present", len(built), present)
        return {
            "built": built,
            "rebuilt_invalid": rebuilt,
            "already_present": present,
            "concurrently": self.concurrently,
        }

    def _build_group(
        self, group: list[dict[str, Any]], existing: dict[tuple[str, str], bool]
    ) -> list[tuple[tuple[str, bool], Exception | None]]:
        results: list[tuple[tuple[str, bool], Exception | None]] = []
        for index in group:
            try:
                results.append((self._build_one(index, existing), None))
            except psycopg2.Error as exc:
                self.log.warning(
                    "Target: building %s failed (%s); will retry alone", index["index_name"], exc
                )
                results.append(((index["index_name"], False), exc))
        return results

    def _build_one(self, index: dict[str, Any], existing: dict[tuple[str, str], bool]) -> tuple[str, bool]:
        key = (index["schema_name"], index["index_name"])
        name = f"{display_identifier(key[0])}.{display_identifier(key[1])}"
        definition: str = index["definition"]
        with self.target.cursor() as cursor:
            cursor.execute(statement("index_build_session"))
            invalid = existing.get(key) is False
            if invalid:
                cursor.execute(statement("index_drop_concurrently", index=key))
                self.log.info("Target: dropped invalid index %s (left by an interrupted build)", name)
            began = time.monotonic()
            # pg_get_indexdef's own text: only the leading keyword changes, no identifier is built here.
            build = "index_build" if self.concurrently else "index_build_plain"
            cursor.execute(statement(build, definition=sql.SQL(definition[len("CREATE INDEX ") :])))
        how = "concurrently" if self.concurrently else "before any subscription"
        self.log.info("Target: built index %s %s in %.1f s", name, how, time.monotonic() - began)
        return name, invalid
