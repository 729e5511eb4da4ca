"""The database phase: preflight, schema copy, publication, subscription, initial sync, deferred
indexes, lag gate and validation, each one operator over the hooks in `hooks/`.

    copy_schema -> create_publication -> create_subscription -> wait_initial_sync
        -> build_deferred_indexes -> lag_gate -> validate_data

Every operator reads the state first and changes only what differs, so clearing and re-running
any of them is safe; each logs what it observed and changed and pushes a small summary. In plan
mode (run param `mode` = plan) each logs what it would do and returns without connecting.

Tables without a primary key: PostgreSQL refuses UPDATE/DELETE on a table without a replica
identity as soon as a FOR ALL TABLES publication exists. Only the tables named in the config's
`database.replica_identity_full` get REPLICA IDENTITY FULL (set by create_publication on the
source and by copy_schema on the target, whose reverse publication needs it too); preflight
fails, naming every other such table, before anything is changed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
from airflow.sdk import Context
from psycopg2 import sql

from pyairtable_migration.hooks.database import (
    MIGRATION_SCHEMA,
    MigrationError,
    MigrationPostgresHook,
    Table,
    display_identifier,
    drop_subscription,
    ensure_publication,
    ensure_replica_identity_full,
    fetch_dicts,
    fetch_value,
    get_publication,
    get_slot,
    get_subscription,
    lacking_replica_identity,
    parse_tables,
    quiet_statement_logging,
    server_facts,
    statement,
    table_states,
    user_tables,
)
from pyairtable_migration.hooks.validation import Validator
from pyairtable_migration.operators.base import (
    DatabaseOperator,
    ReplicationOperator,
    ReplicationTopologyOperator,
    bulleted,
    fail,
)
from pyairtable_migration.postgres.replication import catch_up
from pyairtable_migration.topology import Pooler, first_line, writers
from pyairtable_migration.triggers.database import InitialSyncTrigger, ReplicationLagTrigger

DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
MIN_SERVER_VERSION = 100000  # logical replication

T = TypeVar("T")


# --- preflight ----------------------------------------------------------------------------------


class CheckDatabaseOperator(ReplicationTopologyOperator):
    """Preflight: everything the database phase and the switchover rely on, checked, nothing changed.

    Fails with one message listing every problem: connections, server versions, wal_level on both
    sides (the target's for the reverse replication that makes rollback lossless), free slots and
    WAL senders, privileges, replica identity of every table the publication will carry, unlogged
    tables, large objects, the target empty or already this migration's, pg_dump, the poolers.

    :param pg_bin_dir: where pg_dump is (the schema copy runs it)
    """

    template_fields: Sequence[str] = (*ReplicationTopologyOperator.template_fields, "pg_bin_dir")

    def __init__(self, *, pg_bin_dir: str = DEFAULT_PG_BIN, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pg_bin_dir = pg_bin_dir

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"check {self.source_conn_id} and {self.target_conn_id}: versions, wal_level, slots, senders, "
            "privileges, replica identities, unlogged tables, large objects, target empty or ours",
            *(f"check pooler {p['name']} via {p['admin_conn_id']}" for p in self.poolers),
        ):
            return {"mode": "plan"}
        problems: list[str] = []
        notes: list[str] = []
        facts: dict[str, dict[str, Any]] = {}
        cursors: dict[str, Any] = {}
        connections = []
        for side, hook in (("source", self.source()), ("target", self.target())):
            try:
                connection = hook.connect(connect_timeout=5)
            except Exception as exc:
                problems.append(
                    f"{side}: cannot connect with {getattr(hook, 'migration_conn_id', side)} "
                    f"({_safe_describe(hook)}): {first_line(exc)}"
                )
                continue
            connections.append(connection)
            cursors[side] = connection.cursor()
            facts[side] = server_facts(cursors[side])
            self.log.info(
                "%s %s: PostgreSQL %s, wal_level=%s, slots %d/%d, senders %d/%d, role %s (superuser %s, "
                "replication %s)",
                side,
                hook.describe(),
                facts[side]["server_version"],
                facts[side]["wal_level"],
                facts[side]["used_replication_slots"],
                facts[side]["max_replication_slots"],
                facts[side]["used_wal_senders"],
                facts[side]["max_wal_senders"],
                facts[side]["role_name"],
                facts[side]["is_superuser"],
                facts[side]["has_replication"],
            )
        try:
            for side, fact in facts.items():
                problems.extend(self._server_problems(side, fact))
            if "source" in cursors:
                problems.extend(self._source_problems(cursors["source"], facts["source"], notes))
            if "target" in cursors:
                problems.extend(self._target_problems(cursors["target"], notes))
            if "source" in facts and "target" in facts:
                source_major = facts["source"]["server_version_num"] // 10000
                target_major = facts["target"]["server_version_num"] // 10000
                if target_major < source_major:
                    problems.append(
                        f"target runs PostgreSQL {target_major}, older than the source's {source_major}: the "
                        "target must be the same major version or newer"
                    )
                problems.extend(self._pg_dump_problems(source_major))
        finally:
            for connection in connections:
                connection.close()
        problems.extend(self._pooler_problems(notes))
        for note in notes:
            self.log.info("Note: %s", note)
        if problems:
            raise fail(bulleted(f"database preflight found {len(problems)} problem(s)", problems))
        self.log.info("Database preflight passed")
        return {
            "passed": True,
            "notes": notes,
            "versions": {side: fact["server_version"] for side, fact in facts.items()},
        }

    def _server_problems(self, side: str, fact: dict[str, Any]) -> list[str]:
        problems = []
        role = fact["role_name"]
        if fact["server_version_num"] < MIN_SERVER_VERSION:
            problems.append(f"{side}: PostgreSQL {fact['server_version']} has no logical replication (10+)")
        if fact["wal_level"] != "logical":
            why = (
                "logical replication to the target" if side == "source" else "reverse replication (rollback)"
            )
            problems.append(
                f"{side}: wal_level is {fact['wal_level']}, {why} needs wal_level = logical (ALTER SYSTEM "
                "SET wal_level = logical; then restart the server)"
            )
        free_slots = fact["max_replication_slots"] - fact["used_replication_slots"]
        if free_slots < 1:
            problems.append(
                f"{side}: no free replication slot ({fact['used_replication_slots']} of "
                f"max_replication_slots {fact['max_replication_slots']} in use)"
            )
        free_senders = fact["max_wal_senders"] - fact["used_wal_senders"]
        if free_senders < 1:
            problems.append(
                f"{side}: no free WAL sender ({fact['used_wal_senders']} of max_wal_senders "
                f"{fact['max_wal_senders']} in use)"
            )
        if side == "target" and fact["max_logical_replication_workers"] < 2:
            problems.append(
                f"target: max_logical_replication_workers is {fact['max_logical_replication_workers']}; the "
                "subscription needs at least 2 (apply + sync)"
            )
        if not fact["is_superuser"]:
            problems.append(
                f"{side}: role {role} is not a superuser; PostgreSQL 15 allows only superusers to CREATE "
                "PUBLICATION ... FOR ALL TABLES and CREATE SUBSCRIPTION (forward and reverse)"
            )
            if not fact["has_replication"]:
                problems.append(
                    f"{side}: role {role} lacks the REPLICATION privilege (ALTER ROLE "
                    f"{display_identifier(role)} REPLICATION)"
                )
        if fact["large_objects"]:
            problems.append(
                f"{side}: {fact['large_objects']} large object(s): logical replication does not carry large "
                "objects; move them into bytea columns or copy them separately before the switchover"
            )
        return problems

    def _source_problems(self, cursor: Any, fact: dict[str, Any], notes: list[str]) -> list[str]:
        problems = []
        allowed = set(parse_tables(self.replica_identity_full))
        lacking = lacking_replica_identity(cursor)
        unlisted = [t for t in lacking if t not in allowed]
        listed = [t for t in lacking if t in allowed]
        for table in unlisted:
            problems.append(
                f"source: table {table} has no replica identity: with a FOR ALL TABLES publication its "
                f"UPDATE and DELETE would fail on the source. Add a primary key, or ALTER TABLE {table} "
                "REPLICA IDENTITY FULL, or list it under database.replica_identity_full to let the "
                "migration set REPLICA IDENTITY FULL"
            )
        if listed:
            notes.append(
                "REPLICA IDENTITY FULL will be set on "
                + ", ".join(str(t) for t in listed)
                + " (database.replica_identity_full)"
            )
        present = set(user_tables(cursor))
        for table in sorted(allowed - present):
            notes.append(f"database.replica_identity_full names {table}, which does not exist on the source")
        for row in fetch_dicts(cursor, statement("preflight_unlogged_tables")):
            table = Table(row["schema_name"], row["table_name"])
            problems.append(
                f"source: table {table} is UNLOGGED: logical replication never carries it; ALTER TABLE "
                f"{table} SET LOGGED (or drop it if it only caches)"
            )
        publication = get_publication(cursor, self.publication)
        if publication is not None and not publication["puballtables"]:
            problems.append(
                f"source: publication {self.publication} exists but is not FOR ALL TABLES: not this "
                "migration's; drop it or configure another name"
            )
        elif publication is not None:
            notes.append(
                f"publication {self.publication} exists on the source (a re-run): it will be verified"
            )
        slot = get_slot(cursor, self.subscription)
        if slot is not None and slot["slot_type"] != "logical":
            problems.append(f"source: replication slot {self.subscription} exists and is not a logical slot")
        elif slot is not None:
            notes.append(
                f"replication slot {self.subscription} exists on the source "
                f"({'active' if slot['active'] else 'inactive'}, lag {slot['lag_bytes']} bytes)"
            )
        return problems

    def _target_problems(self, cursor: Any, notes: list[str]) -> list[str]:
        problems = []
        tables = user_tables(cursor)
        ours = bool(fetch_value(cursor, statement("target_ownership")))
        subscription = get_subscription(cursor, self.subscription)
        if tables and not ours:
            sample = ", ".join(str(t) for t in sorted(tables)[:5])
            problems.append(
                f"target: not empty ({len(tables)} table(s): {sample}) and not a copy made by this migration "
                f"(no {MIGRATION_SCHEMA} schema): point target_conn_id at an empty database"
            )
        elif tables:
            notes.append(f"target already holds this migration's schema ({len(tables)} tables): a re-run")
        if subscription is not None:
            if list(subscription["subpublications"]) != [self.publication]:
                problems.append(
                    f"target: subscription {self.subscription} exists but subscribes to "
                    f"{subscription['subpublications']}, not [{self.publication}]"
                )
            else:
                notes.append(
                    f"subscription {self.subscription} exists on the target "
                    f"({'enabled' if subscription['subenabled'] else 'DISABLED'})"
                )
        return problems

    def _pg_dump_problems(self, source_major: int) -> list[str]:
        pg_dump = Path(self.pg_bin_dir) / "pg_dump"
        if not os.access(pg_dump, os.X_OK):
            return [f"pg_dump not found at {pg_dump} (pg_bin_dir): the schema copy needs it"]
        output = subprocess.run(
            [str(pg_dump), "--version"], capture_output=True, text=True, check=False
        ).stdout
        match = re.search(r"(\d+)(?:\.\d+)?", output)
        if match and int(match.group(1)) < source_major:
            return [f"{pg_dump} is version {match.group(1)}, older than the source server ({source_major})"]
        return []

    def _pooler_problems(self, notes: list[str]) -> list[str]:
        problems = []
        poolers = [Pooler.of(p) for p in self.poolers]
        source, target = self._address(self.source()), self._address(self.target())
        found = writers(poolers, source, target)
        for pooler, endpoint in zip(poolers, found.seen, strict=True):
            if endpoint.error is not None or endpoint.address is None:
                problems.append(f"pooler {endpoint.describe()}")
                continue
            try:
                path = pooler.hook.ini_path()
                configured = pooler.hook.configured(pooler.database)
            except (MigrationError, OSError) as exc:
                problems.append(f"pooler {pooler.name}: {first_line(exc)}")
                continue
            if not os.access(path, os.W_OK):
                problems.append(
                    f"pooler {pooler.name}: {path} is not writable by this worker (the switchover edits it)"
                )
            host, port = endpoint.address
            if endpoint.side is None:
                problems.append(
                    f"pooler {pooler.name}: database {pooler.database} goes to {host}:{port}, neither the "
                    f"source {source[0]}:{source[1]} nor the target {target[0]}:{target[1]}"
                )
            else:
                paused = ", PAUSED" if endpoint.paused else ""
                notes.append(
                    f"pooler {pooler.name}: {pooler.database} -> the {endpoint.side} ({host}:{port}, ini "
                    f"{configured.get('host')}:{configured.get('port')}){paused}"
                )
        return problems

    @staticmethod
    def _address(hook: MigrationPostgresHook) -> tuple[str, int]:
        try:
            host, port, _ = hook.address
        except Exception:
            return ("?", 0)
        return host, port


def _safe_describe(hook: MigrationPostgresHook) -> str:
    try:
        return hook.describe()
    except Exception as exc:
        return f"connection not found: {first_line(exc)}"


# --- schema ---------------------------------------------------------------------------------------


def strip_psql_meta(text: str) -> str:
    """pg_dump 15.14+ frames its script with psql's \\restrict / \\unrestrict: not SQL."""
    return "\n".join(
        line for line in text.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


HEADER = re.compile(r"^-- Name: (?P<name>.*?); Type: (?P<type>[^;]+); Schema: (?P<schema>[^;]*);", re.M)


def remove_objects(script: str, kind: str, names: set[tuple[str, str]]) -> tuple[str, list[str]]:
    """Drop the (schema, name) objects of `kind` from a pg_dump script; returns (script, removed)."""
    blocks = re.split(r"(?m)^(?=--\n-- Name: )", script)
    kept, removed = [], []
    for block in blocks:
        header = HEADER.search(block)
        if header and header["type"] == kind and (header["schema"], header["name"]) in names:
            removed.append(f"{display_identifier(header['schema'])}.{display_identifier(header['name'])}")
            continue
        kept.append(block)
    return "".join(kept), removed


class BeforeSwitchoverOperator(DatabaseOperator):
    """Base of the steps that prepare the target while writers use the source: the schema, the
    publication, the initial copy. Once any pooler sends writers to the target, the target is
    production's primary, and these steps refuse to run at all: cleared, or in a second run of
    the migration, they would copy staging over it. The rollback (writers back on the source)
    lifts the refusal.

    :param poolers: [{name, admin_conn_id, database}] as in the config: where writers go is read
        from each pooler's admin console, the one place that decides it
    """

    template_fields: Sequence[str] = (*DatabaseOperator.template_fields, "poolers")

    def __init__(self, *, poolers: Sequence[Mapping[str, str]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poolers = [dict(p) for p in poolers]

    def run(self, action: str, function: Callable[..., T], *args: Any) -> T:
        def guarded() -> T:
            self.refuse_after_switchover()
            return function(*args)

        return super().run(action, guarded)

    def refuse_after_switchover(self) -> None:
        target = self.target().address[:2]
        found = writers([Pooler.of(p) for p in self.poolers], self.source().address[:2], target)
        if found.unreadable:
            raise MigrationError(
                "cannot tell where writers go: "
                + "; ".join(f"pooler {endpoint.describe()}" for endpoint in found.unreadable)
                + "; nothing changed"
            )
        on_target = found.on("target")
        if on_target:
            raise MigrationError(
                f"writers are on the target (pooler(s) {', '.join(on_target)} point at "
                f"{target[0]}:{target[1]}): it is production's primary now, and this step is for while "
                "writers use the source; nothing changed. To migrate again, roll back first "
                "(pyairtable_production_rollback)"
            )


class CopySchemaOperator(BeforeSwitchoverOperator):
    """Copy the source's schema to the target with pg_dump, in one transaction.

    Non-unique secondary indexes are left out (built CONCURRENTLY after the initial sync, which
    is faster); primary keys, unique constraints and foreign keys are created before the copy
    because logical replication applies UPDATE/DELETE by key. Publications and subscriptions are
    never copied; owners and privileges only when every role they name exists on the target.

    Before dumping, the migration's own schema (`pyairtable_migration.switchover_marker`, the
    switchover's catch-up marker) is created on the source, so the target gets it too.
    Re-run: a target that already holds this migration's copy is verified, not copied again.
    """

    template_fields: Sequence[str] = (
        *BeforeSwitchoverOperator.template_fields,
        "replica_identity_full",
        "pg_bin_dir",
    )

    def __init__(
        self, *, replica_identity_full: Sequence[str] = (), pg_bin_dir: str = DEFAULT_PG_BIN, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.replica_identity_full = list(replica_identity_full)
        self.pg_bin_dir = pg_bin_dir

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"create schema {MIGRATION_SCHEMA} (switchover markers) on {self.source_conn_id}",
            f"copy the schema of {self.source_conn_id} to {self.target_conn_id} with pg_dump --schema-only, "
            "non-unique secondary indexes deferred",
        ):
            return {"mode": "plan"}
        return self.run("copy_schema", self._copy)

    def _copy(self) -> dict[str, Any]:
        started = time.monotonic()
        source, target = self.source(), self.target()
        with source.cursor() as cursor:
            had_marker = fetch_value(cursor, "SELECT to_regclass('pyairtable_migration.switchover_marker')")
            if had_marker is None:
                cursor.execute(statement("marker_schema"))
                self.log.info(
                    "Source: created %s.switchover_marker (switchover catch-up markers)", MIGRATION_SCHEMA
                )
            source_tables = set(user_tables(cursor))
            deferred = {
                (row["schema_name"], row["index_name"]): row["definition"]
                for row in fetch_dicts(cursor, statement("indexes_deferrable"))
            }
            referenced = [r["role_name"] for r in fetch_dicts(cursor, statement("roles_referenced"))]
        identity_tables = parse_tables(self.replica_identity_full)
        with target.cursor() as cursor:
            target_tables = set(user_tables(cursor))
            ours = bool(fetch_value(cursor, statement("target_ownership")))
            if target_tables and not ours:
                raise MigrationError(
                    f"the target holds {len(target_tables)} table(s) not created by this migration; refusing"
                )
            if ours:
                missing = sorted(source_tables - target_tables)
                if missing:
                    raise MigrationError(
                        "the target holds an earlier copy of the schema without table(s) "
                        + ", ".join(str(t) for t in missing)
                        + ": the source's schema changed since; reset the target and run again"
                    )
                changed = ensure_replica_identity_full(cursor, identity_tables)
                for line in changed:
                    self.log.info("Target: %s", line)
                self.log.info(
                    "Target already holds this migration's copy of the schema (%d tables): nothing copied",
                    len(target_tables),
                )
                return {"copied": False, "tables": len(target_tables), "changed": changed}
            existing = {
                r["rolname"] for r in fetch_dicts(cursor, statement("roles_exist"), {"names": referenced})
            }
        missing_roles = sorted(set(referenced) - existing)
        options = ["--schema-only", "--no-publications", "--no-subscriptions"]
        if missing_roles:
            self.log.info(
                "Role(s) %s do not exist on the target: copying without owners and privileges",
                ", ".join(missing_roles),
            )
            options += ["--no-owner", "--no-privileges"]
        pre_data = strip_psql_meta(self._dump(source, [*options, "--section=pre-data"]))
        post_data = strip_psql_meta(self._dump(source, [*options, "--section=post-data"]))
        post_data, removed = remove_objects(post_data, "INDEX", set(deferred))
        connection = target.connect(autocommit=False)
        try:
            with connection.cursor() as cursor:
                cursor.execute(pre_data)
                cursor.execute(post_data)
                changed = ensure_replica_identity_full(cursor, identity_tables)
                copied = len(user_tables(cursor))
            connection.commit()
        finally:
            connection.close()
        seconds = time.monotonic() - started
        self.log.info(
            "Target: schema copied in one transaction in %.1f s: %d tables; %d secondary index(es) "
            "deferred (%s)%s",
            seconds,
            copied,
            len(removed),
            ", ".join(removed) or "none",
            "; " + "; ".join(changed) if changed else "",
        )
        return {
            "copied": True,
            "tables": copied,
            "deferred_indexes": removed,
            "owners_and_privileges": not missing_roles,
            "seconds": round(seconds, 2),
        }

    def _dump(self, source: MigrationPostgresHook, options: list[str]) -> str:
        pg_dump = Path(self.pg_bin_dir) / "pg_dump"
        if not os.access(pg_dump, os.X_OK):
            found = shutil.which("pg_dump")
            if found is None:
                raise MigrationError(f"pg_dump not found at {pg_dump} nor on PATH")
            pg_dump = Path(found)
        # Connection settings and the password reach pg_dump through its environment only.
        environment = {**os.environ, **source.libpq_environment()}
        result = subprocess.run(
            [str(pg_dump), *options],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
            timeout=3600,
        )
        if result.returncode != 0:
            raise MigrationError(
                f"pg_dump {' '.join(options)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout


# --- publication and subscription ------------------------------------------------------------------


class CreatePublicationOperator(BeforeSwitchoverOperator):
    """On the source: REPLICA IDENTITY FULL on the listed tables lacking one, then the FOR ALL TABLES
    publication, created when absent, verified when present."""

    template_fields: Sequence[str] = (
        *BeforeSwitchoverOperator.template_fields,
        "publication",
        "replica_identity_full",
    )

    def __init__(self, *, publication: str, replica_identity_full: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.publication = publication
        self.replica_identity_full = list(replica_identity_full)

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"set REPLICA IDENTITY FULL on {', '.join(self.replica_identity_full) or 'no table'} where "
            "missing",
            f"create or verify publication {self.publication} FOR ALL TABLES on {self.source_conn_id}",
        ):
            return {"mode": "plan"}
        return self.run("create_publication", self._publish)

    def _publish(self) -> dict[str, Any]:
        with self.source().cursor() as cursor:
            changed = ensure_replica_identity_full(cursor, parse_tables(self.replica_identity_full))
            for line in changed:
                self.log.info("Source: %s", line)
            lacking = lacking_replica_identity(cursor)
            if lacking:
                raise MigrationError(
                    f"table(s) {', '.join(map(str, lacking))} have no replica identity and are not listed "
                    "under database.replica_identity_full: a publication now would break their UPDATE/DELETE"
                )
            action = ensure_publication(cursor, self.publication)
        self.log.info("Source: publication %s %s (FOR ALL TABLES)", self.publication, action)
        return {"publication": self.publication, "action": action, "replica_identity_changes": changed}


class CreateSubscriptionOperator(BeforeSwitchoverOperator, ReplicationOperator):
    """On the target: the subscription to the source's publication, created when absent (initial
    copy of every table), verified when present.

    A slot of the same name left on the source by an interrupted earlier attempt (no subscription
    on the target) is dropped first; so are rows an abandoned copy left in the target's tables
    (never once writers are on the target: BeforeSwitchoverOperator).
    """

    template_fields: Sequence[str] = (*ReplicationOperator.template_fields, "poolers")

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"create or verify subscription {self.subscription} on {self.target_conn_id} to publication "
            f"{self.publication} (replication slot {self.subscription} on {self.source_conn_id})",
        ):
            return {"mode": "plan"}
        return self.run("create_subscription", self._subscribe)

    def _subscribe(self) -> dict[str, Any]:
        source, target = self.source(), self.target()
        with target.cursor() as target_cursor, source.cursor() as source_cursor:
            existing = get_subscription(target_cursor, self.subscription)
            if existing is not None:
                slot = get_slot(source_cursor, existing["subslotname"] or self.subscription)
                if list(existing["subpublications"]) != [self.publication]:
                    raise MigrationError(
                        f"subscription {self.subscription} subscribes to {existing['subpublications']}, not "
                        f"[{self.publication}]"
                    )
                if slot is None:
                    raise MigrationError(
                        f"subscription {self.subscription} exists but its slot is gone from the source: "
                        "changes since then are lost to it; reset the target and run the database phase "
                        "again"
                    )
                states = table_states(target_cursor, self.subscription)
                ready = sum(1 for s in states.values() if s == "r")
                self.log.info(
                    "Target: subscription %s exists (%s), slot on the source %s, lag %s bytes; %d/%d "
                    "tables ready",
                    self.subscription,
                    "enabled" if existing["subenabled"] else "DISABLED",
                    "active" if slot["active"] else "inactive",
                    slot["lag_bytes"],
                    ready,
                    len(states),
                )
                return {
                    "subscription": self.subscription,
                    "action": "verified",
                    "enabled": existing["subenabled"],
                }
            leftover = get_slot(source_cursor, self.subscription)
            if leftover is not None:
                if leftover["active"]:
                    raise MigrationError(
                        f"the source has an active replication slot {self.subscription} but the target has "
                        "no such subscription: another subscriber uses it; configure another subscription "
                        "name"
                    )
                source_cursor.execute(statement("replication_slot_drop"), {"name": self.subscription})
                self.log.info(
                    "Source: dropped replication slot %s left by an earlier attempt", self.subscription
                )
            tables = sorted(user_tables(target_cursor))
            filled = [
                table
                for table in tables
                if fetch_value(target_cursor, statement("tables_with_rows", table=(table.schema, table.name)))
            ]
            if filled:
                # All of them in one statement: foreign keys allow no less, and all are copied anew.
                target_cursor.execute(
                    statement("tables_truncate", tables=sql.SQL(", ").join(t.identifier for t in tables))
                )
                self.log.info(
                    "Target: emptied every table before the initial copy (%s held rows of an abandoned copy)",
                    ", ".join(str(t) for t in filled),
                )
            quiet_statement_logging(target_cursor)
            target_cursor.execute(
                statement(
                    "subscription_create", subscription=self.subscription, publication=self.publication
                ),
                {"conninfo": source.replication_conninfo(), "slot": self.subscription},
            )
            states = table_states(target_cursor, self.subscription)
        self.log.info(
            "Target: created subscription %s to %s (%s): initial copy of %d tables started; slot %s on the "
            "source",
            self.subscription,
            self.publication,
            source.describe(),
            len(states),
            self.subscription,
        )
        return {"subscription": self.subscription, "action": "created", "tables": len(states)}


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
        return self.run("drop_forward_replication", self._drop)

    def _drop(self) -> dict[str, Any]:
        dropped = []
        with self.target().cursor() as target:
            if get_subscription(target, self.subscription) is not None:
                drop_subscription(target, self.subscription)
                dropped.append(f"subscription {self.subscription} on the target (and its slot on the source)")
        with self.source().cursor() as source:
            if get_publication(source, self.publication) is not None:
                source.execute(statement("publication_drop", publication=self.publication))
                dropped.append(f"publication {self.publication} on the source")
        for line in dropped:
            self.log.info("Dropped %s", line)
        if not dropped:
            self.log.info("No forward replication between the source and the target: nothing to drop")
        return {"dropped": dropped, "changed": bool(dropped)}


class WaitInitialSyncOperator(ReplicationOperator):
    """Wait (deferred) until every table of the subscription is in state r; logs done / total."""

    template_fields: Sequence[str] = (*ReplicationOperator.template_fields, "timeout_seconds", "poll_seconds")

    def __init__(self, *, timeout_seconds: float, poll_seconds: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds

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
    """Build, CONCURRENTLY, every secondary index of the source the target lacks.

    The definitions are the source's own (pg_get_indexdef, correctly quoted); an index a killed
    earlier build left INVALID is dropped (CONCURRENTLY) and built again. `parallelism` builds run
    at once, biggest tables first (PostgreSQL 14+ lets concurrent builds of plain indexes proceed
    without waiting for each other).
    """

    template_fields: Sequence[str] = (*DatabaseOperator.template_fields, "parallelism")

    def __init__(self, *, parallelism: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parallelism = parallelism

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context, f"build the source's secondary indexes on {self.target_conn_id} CONCURRENTLY"
        ):
            return {"mode": "plan"}
        return self.run("build_deferred_indexes", self._build)

    def _build(self) -> dict[str, Any]:
        with self.source().cursor() as cursor:
            wanted = fetch_dicts(cursor, statement("indexes_deferrable"))
        with self.target().cursor() as cursor:
            existing = {
                (r["schema_name"], r["index_name"]): r["indisvalid"]
                for r in fetch_dicts(cursor, statement("indexes_present"))
            }
        todo = [i for i in wanted if existing.get((i["schema_name"], i["index_name"])) is not True]
        present = len(wanted) - len(todo)
        for index in todo:
            if not str(index["definition"]).startswith("CREATE INDEX "):
                raise MigrationError(f"unexpected index definition: {str(index['definition'])[:80]}")
        # One table's indexes one after the other (concurrent builds on one table block each
        # other); different tables in parallel, the biggest first.
        by_table: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for index in todo:
            by_table.setdefault((index["schema_name"], index["table_name"]), []).append(index)
        groups = sorted(by_table.values(), key=lambda group: -int(group[0]["table_bytes"]))
        with ThreadPoolExecutor(max(1, int(self.parallelism)), thread_name_prefix="index") as pool:
            outcomes = list(pool.map(lambda group: self._build_group(group, existing), groups))
        results = [result for outcome in outcomes for result in outcome]
        # A build that lost a deadlock to a parallel one is left INVALID: built again, alone.
        failed = [
            index for index, (_, error) in zip([i for g in groups for i in g], results, strict=True) if error
        ]
        if failed:
            with self.target().cursor() as cursor:
                now = {
                    (r["schema_name"], r["index_name"]): r["indisvalid"]
                    for r in fetch_dicts(cursor, statement("indexes_present"))
                }
            results = [r for r in results if not r[1]] + [(self._build_one(i, now), None) for i in failed]
        built = [name for (name, _), _error in results]
        rebuilt = [name for (name, was_invalid), _error in results if was_invalid]
        self.log.info("Deferred indexes: %d built, %d already present", len(built), present)
        return {"built": built, "rebuilt_invalid": rebuilt, "already_present": present}

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
        with self.target().cursor() as cursor:
            cursor.execute(statement("index_build_session"))
            invalid = existing.get(key) is False
            if invalid:
                cursor.execute(statement("index_drop_concurrently", index=key))
                self.log.info("Target: dropped invalid index %s (left by an interrupted build)", name)
            began = time.monotonic()
            # pg_get_indexdef's own text: only the leading keyword changes, no identifier is built here.
            cursor.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS " + definition[len("CREATE INDEX ") :])
        self.log.info("Target: built index %s concurrently in %.1f s", name, time.monotonic() - began)
        return name, invalid


class LagGateOperator(ReplicationOperator):
    """Wait (deferred) until the source slot's lag stays below the threshold for N samples.

    A disabled subscription or new apply errors fail it with the table, the LSN and the remedy.

    :param lag_threshold_bytes: templated; the DAG passes `{{ params.lag_threshold_bytes }}`
    """

    template_fields: Sequence[str] = (
        *ReplicationOperator.template_fields,
        "lag_threshold_bytes",
        "consecutive_samples",
        "sample_seconds",
        "timeout_seconds",
    )

    def __init__(
        self,
        *,
        lag_threshold_bytes: int | str,
        consecutive_samples: int,
        sample_seconds: float,
        timeout_seconds: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lag_threshold_bytes = lag_threshold_bytes
        self.consecutive_samples = consecutive_samples
        self.sample_seconds = sample_seconds
        self.timeout_seconds = timeout_seconds

    def execute(self, context: Context) -> dict[str, Any]:
        threshold = int(float(self.lag_threshold_bytes))
        if self.planned(
            context,
            f"wait until slot {self.subscription} lags < {threshold} bytes for {self.consecutive_samples} "
            f"samples {self.sample_seconds}s apart (timeout {self.timeout_seconds}s)",
        ):
            return {"mode": "plan"}
        self.log.info(
            "Lag gate: < %d bytes for %s consecutive samples, one every %s s, within %s s",
            threshold,
            self.consecutive_samples,
            self.sample_seconds,
            self.timeout_seconds,
        )
        self.defer_to(
            ReplicationLagTrigger(
                source_conn_id=self.source_conn_id,
                target_conn_id=self.target_conn_id,
                subscription=self.subscription,
                publication=self.publication,
                threshold_bytes=threshold,
                consecutive=int(self.consecutive_samples),
                sample_seconds=float(self.sample_seconds),
                timeout_seconds=float(self.timeout_seconds),
            ),
            self.timeout_seconds,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.raise_on_failure(event, "lag_gate")
        self.log.info("Lag gate passed: last samples %s bytes (%.1f s)", event["lags"], event["seconds"])
        return {"passed": True, "lags": event["lags"], "seconds": event["seconds"]}


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

    def __init__(
        self,
        *,
        subscription: str,
        chunk_rows: int,
        parallelism: int = 2,
        recheck_rounds: int = 3,
        catch_up_timeout_seconds: float = 120.0,
        tables: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.subscription = subscription
        self.chunk_rows = chunk_rows
        self.parallelism = parallelism
        self.recheck_rounds = recheck_rounds
        self.catch_up_timeout_seconds = catch_up_timeout_seconds
        self.tables = list(tables) if tables is not None else None

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
