"""Database preflight: everything the database phase and the switchover rely on, checked, nothing
changed, every problem listed at once.

The rules are pure functions over what was read (a server's settings and role, the source's and
the target's tables, publication, slot and subscription), so each is tested on plain data; the
`read_*` functions gather those facts with one cursor each, and `check` runs the whole preflight
over two hooks and the poolers.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyairtable_migration.hooks.database import (
    MIGRATION_SCHEMA,
    MigrationError,
    MigrationPostgresHook,
    Table,
    display_identifier,
    fetch_dicts,
    fetch_one,
    fetch_value,
    get_publication,
    get_slot,
    get_subscription,
    lacking_replica_identity,
    server_facts,
    statement,
    user_tables,
)
from pyairtable_migration.postgres.privileges import flavor, privilege_problems
from pyairtable_migration.topology import Pooler, first_line, writers

MIN_SERVER_VERSION = 100000  # logical replication


@dataclass
class SourceFacts:
    """What the source holds that the publication and its slot depend on."""

    lacking_replica_identity: list[Table]
    tables: set[Table]
    unlogged: list[Table]
    publication: dict[str, Any] | None
    slot: dict[str, Any] | None


@dataclass
class TargetFacts:
    """What the target holds: its tables, whether they are this migration's copy, the subscription."""

    tables: list[Table]
    ours: bool
    subscription: dict[str, Any] | None


@dataclass
class Findings:
    """The preflight's verdict: problems (any one refuses) and notes (logged)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


def read_source(cursor: Any, publication: str, subscription: str) -> SourceFacts:
    return SourceFacts(
        lacking_replica_identity=lacking_replica_identity(cursor),
        tables=set(user_tables(cursor)),
        unlogged=[
            Table(row["schema_name"], row["table_name"])
            for row in fetch_dicts(cursor, statement("preflight_unlogged_tables"))
        ],
        publication=get_publication(cursor, publication),
        slot=get_slot(cursor, subscription),
    )


def read_target(cursor: Any, subscription: str) -> TargetFacts:
    return TargetFacts(
        tables=sorted(user_tables(cursor)),
        ours=bool(fetch_value(cursor, statement("target_ownership"))),
        subscription=get_subscription(cursor, subscription),
    )


def server_problems(side: str, fact: Mapping[str, Any]) -> list[str]:
    """What one server's settings lack for logical replication both ways (the role's privileges:
    `privileges.privilege_problems`)."""
    problems = []
    if fact["server_version_num"] < MIN_SERVER_VERSION:
        problems.append(f"{side}: PostgreSQL {fact['server_version']} has no logical replication (10+)")
    if fact["wal_level"] != "logical":
        why = "logical replication to the target" if side == "source" else "reverse replication (rollback)"
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
    if fact["large_objects"]:
        problems.append(
            f"{side}: {fact['large_objects']} large object(s): logical replication does not carry large "
            "objects; move them into bytea columns or copy them separately before the switchover"
        )
    return problems


def pairing_problems(source: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """The target must run the source's major version or a newer one, and hold its text in the same
    encoding: the parallel copy streams rows as the source spells them, and validation compares
    each row's text, byte for byte, on both sides."""
    problems = []
    source_major = source["server_version_num"] // 10000
    target_major = target["server_version_num"] // 10000
    if target_major < source_major:
        problems.append(
            f"target runs PostgreSQL {target_major}, older than the source's {source_major}: the "
            "target must be the same major version or newer"
        )
    if source["server_encoding"] != target["server_encoding"]:
        problems.append(
            f"target database is encoded {target['server_encoding']}, the source's "
            f"{source['server_encoding']}: create the target database with ENCODING "
            f"'{source['server_encoding']}' (rows would not validate as equal otherwise)"
        )
    return problems


def source_problems(
    facts: SourceFacts, allowed: set[Table], publication: str, subscription: str, notes: list[str]
) -> list[str]:
    """Replica identities, unlogged tables, and a publication or slot by our names that is not ours."""
    problems = []
    lacking = facts.lacking_replica_identity
    unlisted = [t for t in lacking if t not in allowed]
    listed = [t for t in lacking if t in allowed]
    for table in unlisted:
        problems.append(
            f"source: table {table} has no replica identity: once the publication lists it, its "
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
    present = facts.tables
    for table in sorted(allowed - present):
        notes.append(f"database.replica_identity_full names {table}, which does not exist on the source")
    for table in facts.unlogged:
        problems.append(
            f"source: table {table} is UNLOGGED: logical replication never carries it; ALTER TABLE "
            f"{table} SET LOGGED (or drop it if it only caches)"
        )
    if facts.publication is not None:
        notes.append(
            f"publication {publication} exists on the source (a re-run): it will be verified and "
            "completed with any table it lacks"
        )
    slot = facts.slot
    if slot is not None and slot["slot_type"] != "logical":
        problems.append(f"source: replication slot {subscription} exists and is not a logical slot")
    elif slot is not None:
        notes.append(
            f"replication slot {subscription} exists on the source "
            f"({'active' if slot['active'] else 'inactive'}, lag {slot['lag_bytes']} bytes)"
        )
    return problems


def target_problems(facts: TargetFacts, publication: str, subscription: str, notes: list[str]) -> list[str]:
    """The target empty or this migration's copy; a subscription by our name subscribing to ours."""
    problems = []
    tables = facts.tables
    ours = facts.ours
    found = facts.subscription
    if tables and not ours:
        sample = ", ".join(str(t) for t in tables[:5])
        problems.append(
            f"target: not empty ({len(tables)} table(s): {sample}) and not a copy made by this migration "
            f"(no {MIGRATION_SCHEMA} schema): point target_conn_id at an empty database"
        )
    elif tables:
        notes.append(f"target already holds this migration's schema ({len(tables)} tables): a re-run")
    if found is not None:
        if list(found["subpublications"]) != [publication]:
            problems.append(
                f"target: subscription {subscription} exists but subscribes to "
                f"{found['subpublications']}, not [{publication}]"
            )
        else:
            notes.append(
                f"subscription {subscription} exists on the target "
                f"({'enabled' if found['subenabled'] else 'DISABLED'})"
            )
    return problems


def connection_problems(side: str, fact: Mapping[str, Any], needed: int) -> list[str]:
    """Whether `needed` more client sessions fit under max_connections (reserved slots aside)."""
    free = fact["max_connections"] - fact["reserved_connections"] - fact["used_connections"]
    if free >= needed:
        return []
    return [
        f"{side}: the parallel copy needs {needed} sessions (database.copy_workers' and its own), "
        f"{free} free ({fact['used_connections']} of max_connections {fact['max_connections']} in use, "
        f"{fact['reserved_connections']} reserved): lower copy_workers or raise max_connections"
    ]


def parallel_copy_problems(cursor: Any, fact: Mapping[str, Any]) -> list[str]:
    """`initial_copy: parallel` loads ranges in any order with foreign keys and triggers off
    (session_replication_role = replica): the target's role must be allowed to set that."""
    if fact["is_superuser"]:
        return []
    role = fact["role_name"]
    if fact["server_version_num"] < 150000:
        return [
            f"target: role {role} is no superuser, and before PostgreSQL 15 only a superuser may set "
            "session_replication_role, which database.initial_copy: parallel needs; use initial_copy: native"
        ]
    if fetch_value(cursor, statement("preflight_parallel_copy")):
        return []
    return [
        f"target: role {role} may not set session_replication_role, which database.initial_copy: parallel "
        f"needs: GRANT SET ON PARAMETER session_replication_role TO {role} (or use initial_copy: native)"
    ]


def client_problems(pg_bin_dir: str, name: str, needed_by: str) -> list[str]:
    """The client program `name` where the step that runs it looks first (pg_bin_dir)."""
    program = Path(pg_bin_dir) / name
    return [] if os.access(program, os.X_OK) else [f"{name} not found at {program} (pg_bin_dir): {needed_by}"]


def pg_dump_problems(pg_bin_dir: str, source_major: int) -> list[str]:
    """pg_dump where the schema copy will look for it, at least the source's major version."""
    pg_dump = Path(pg_bin_dir) / "pg_dump"
    if missing := client_problems(pg_bin_dir, "pg_dump", "the schema copy needs it"):
        return missing
    output = subprocess.run([str(pg_dump), "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    if match and int(match.group(1)) < source_major:
        return [f"{pg_dump} is version {match.group(1)}, older than the source server ({source_major})"]
    return []


def psql_problems(pg_bin_dir: str) -> list[str]:
    """psql where the parallel copy will look for it: it reads each range from the source."""
    return client_problems(pg_bin_dir, "psql", "initial_copy: parallel reads each range with it")


def pooler_problems(
    poolers: Sequence[Pooler], source: tuple[str, int], target: tuple[str, int], notes: list[str]
) -> list[str]:
    """Every pooler readable, its ini file writable here (the switch edits it), pointing at a cluster."""
    problems = []
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


def login_role_problems(cursor: Any, poolers: Sequence[Pooler], notes: list[str]) -> list[str]:
    """Each pooler logs in to the target, once writers are switched, as the roles it logs in as now:
    one missing there, NOLOGIN, expired, limited to 0 connections or without CONNECT would leave
    every writer waiting on the pooler. (A wrong password or pg_hba.conf only a login shows: the
    switchover checks the target serves the writers, and undoes the switch if it does not.)"""
    problems = []
    for pooler in poolers:
        try:
            roles = pooler.hook.login_roles(pooler.database)
        except Exception:  # an unreadable console or ini: pooler_problems names it
            continue
        if not roles:
            notes.append(
                f"pooler {pooler.name}: no writer has connected to {pooler.database} yet, so the roles "
                "they log in as are unknown; the switchover checks the target serves them"
            )
            continue
        for row in fetch_dicts(cursor, statement("preflight_login_roles"), {"names": roles}):
            role = display_identifier(row["role_name"])
            where = f"pooler {pooler.name}: writers log in as role {role}"
            if not row["present"]:
                problems.append(
                    f"{where}, which does not exist on the target: create it there (LOGIN, with the "
                    "password the pooler uses)"
                )
                continue
            database = display_identifier(row["database_name"])
            lacking = [
                fix
                for wrong, fix in (
                    (not row["can_login"], f"it may not log in (ALTER ROLE {role} LOGIN)"),
                    (
                        row["no_connections"],
                        f"its connection limit is 0 (ALTER ROLE {role} CONNECTION LIMIT -1)",
                    ),
                    (
                        row["expired"],
                        f"its password expired at {row['valid_until']} "
                        f"(ALTER ROLE {role} VALID UNTIL 'infinity')",
                    ),
                    (
                        not row["can_connect"],
                        f"it lacks CONNECT (GRANT CONNECT ON DATABASE {database} TO {role})",
                    ),
                )
                if wrong
            ]
            if lacking:
                problems.append(f"{where} on the target, where " + "; ".join(lacking))
            else:
                notes.append(f"{where}: it may log in to the target and connect to {database}")
    return problems


def address(hook: MigrationPostgresHook) -> tuple[str, int]:
    """(host, port), or ("?", 0) for a connection that cannot be resolved (reported elsewhere)."""
    try:
        host, port, _ = hook.address
    except Exception:
        return ("?", 0)
    return host, port


def has_password(hook: MigrationPostgresHook) -> bool:
    """Whether a connection carries a password (a subscription through it needs one unless its
    owner is a superuser); an unresolvable connection is reported elsewhere."""
    try:
        return hook.has_password
    except Exception:
        return True


def safe_describe(hook: MigrationPostgresHook) -> str:
    try:
        return hook.describe()
    except Exception as exc:
        return f"connection not found: {first_line(exc)}"


def check(
    source: MigrationPostgresHook,
    target: MigrationPostgresHook,
    *,
    poolers: Sequence[Pooler],
    publication: str,
    subscription: str,
    replica_identity_full: Sequence[Table],
    pg_bin_dir: str,
    log: Any,
    initial_copy: str = "native",
    copy_workers: int = 0,
) -> Findings:
    """The whole database preflight: both servers, their tables and replication objects, pg_dump,
    the poolers. A server that cannot be reached is one problem; the rest is still checked."""
    findings = Findings()
    problems, notes = findings.problems, findings.notes
    facts: dict[str, dict[str, Any]] = {}
    cursors: dict[str, Any] = {}
    connections = []
    for side, hook in (("source", source), ("target", target)):
        try:
            connection = hook.connect(connect_timeout=5)
        except Exception as exc:
            problems.append(
                f"{side}: cannot connect with {getattr(hook, 'migration_conn_id', side)} "
                f"({safe_describe(hook)}): {first_line(exc)}"
            )
            continue
        connections.append(connection)
        cursors[side] = connection.cursor()
        facts[side] = server_facts(cursors[side])
        log.info(
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
    hooks = {"source": source, "target": target}
    try:
        for side, fact in facts.items():
            problems.extend(server_problems(side, fact))
            rights = fetch_one(cursors[side], statement("preflight_privileges"))
            assert rights is not None
            peer = hooks["target" if side == "source" else "source"]
            problems.extend(privilege_problems(side, rights, peer_password=has_password(peer)))
            log.info(
                "%s: %s, role %s member of %s",
                side,
                flavor(rights).name,
                rights["role_name"],
                rights["member_of"],
            )
        if "source" in cursors:
            source_facts = read_source(cursors["source"], publication, subscription)
            problems.extend(
                source_problems(source_facts, set(replica_identity_full), publication, subscription, notes)
            )
        if "target" in cursors:
            target_facts = read_target(cursors["target"], subscription)
            problems.extend(target_problems(target_facts, publication, subscription, notes))
            problems.extend(login_role_problems(cursors["target"], poolers, notes))
        if initial_copy == "parallel" and "target" in cursors:
            problems.extend(parallel_copy_problems(cursors["target"], facts["target"]))
        if initial_copy == "parallel":
            # Each worker holds a session on each side (on the source, its reader's); the source
            # also the snapshot's holder (a WAL sender: server_problems checks one is free), and
            # each side the task's own.
            for side, needed in (("source", copy_workers + 2), ("target", copy_workers + 1)):
                if side in facts:
                    problems.extend(connection_problems(side, facts[side], needed))
            problems.extend(psql_problems(pg_bin_dir))
        if "source" in facts and "target" in facts:
            problems.extend(pairing_problems(facts["source"], facts["target"]))
            problems.extend(pg_dump_problems(pg_bin_dir, facts["source"]["server_version_num"] // 10000))
    finally:
        for connection in connections:
            connection.close()
    problems.extend(pooler_problems(poolers, address(source), address(target), notes))
    findings.versions = {side: fact["server_version"] for side, fact in facts.items()}
    return findings
