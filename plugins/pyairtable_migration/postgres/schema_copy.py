"""Copying the source's schema to the target with pg_dump, in one transaction.

Non-unique secondary indexes are left out (built after the initial copy, which is faster:
`indexes.py`). Primary keys, unique constraints and foreign keys are created with the schema for
PostgreSQL's own copy, whose catch-up applies UPDATE/DELETE by key while it copies; the parallel
copy subscribes only once its rows are in, so it defers those of the big tables
(`defer_keys_from_bytes`, with the foreign keys referencing them: the copy then writes no key index
entry per row, and each key is built afterwards from one sorted scan; a small table's keys cost the
copy little, and a foreign key added after the data must check every row, one added to the empty
table none: a key whose referencing tables hold more than its own is kept, keys_deferrable.sql).
Publications and subscriptions are never copied; owners and privileges only when every role they
name exists on the target.

Before dumping, the migration's own schema (`pyairtable_migration.switchover_marker`, the
switchover's catch-up marker) is created on the source, so the target gets it too. A target that
already holds this migration's copy is verified, not copied again.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from pyairtable_migration.hooks.database import (
    MIGRATION_SCHEMA,
    MigrationError,
    MigrationPostgresHook,
    Table,
    client_program,
    display_identifier,
    ensure_replica_identity_full,
    fetch_dicts,
    fetch_value,
    statement,
    user_tables,
)


def strip_psql_meta(text: str) -> str:
    """pg_dump 15.14+ frames its script with psql's \\restrict / \\unrestrict: not SQL."""
    return "\n".join(
        line for line in text.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


HEADER = re.compile(r"^-- Name: (?P<name>.*?); Type: (?P<type>[^;]+); Schema: (?P<schema>[^;]*);", re.M)


def remove_objects(script: str, entries: set[tuple[str, str, str]]) -> tuple[str, list[tuple[str, str, str]]]:
    """Drop pg_dump's entries named (type, schema, name) from its script; returns (script, removed)."""
    blocks = re.split(r"(?m)^(?=--\n-- Name: )", script)
    kept, removed = [], []
    for block in blocks:
        header = HEADER.search(block)
        entry = (header["type"], header["schema"], header["name"]) if header else None
        if entry in entries:
            removed.append(entry)
            continue
        kept.append(block)
    return "".join(kept), removed


def deferred_entries(
    indexes: list[dict[str, Any]], keys: list[dict[str, Any]]
) -> dict[tuple[str, str, str], str]:
    """pg_dump's entries for the deferred indexes and keys (indexes_deferrable, keys_deferrable),
    each with its name for people: an index tagged by its name, a key by its table's and its own,
    the key's comment (which goes with it) as pg_dump tags it."""
    entries = {
        ("INDEX", i["schema_name"], i["index_name"]): str(Table(i["schema_name"], i["index_name"]))
        for i in indexes
    }
    for key in keys:
        kind = "FK CONSTRAINT" if key["kind"] == "f" else "CONSTRAINT"
        table = Table(key["schema_name"], key["table_name"])
        entries[(kind, key["schema_name"], f"{key['table_name']} {key['constraint_name']}")] = (
            f"{display_identifier(key['constraint_name'])} on {table}"
        )
        entries[("COMMENT", key["schema_name"], key["comment_tag"])] = ""
    return entries


def copy_schema(
    source: MigrationPostgresHook,
    target: MigrationPostgresHook,
    *,
    replica_identity_full: Sequence[Table],
    pg_bin_dir: str,
    log: Any,
    defer_keys_from_bytes: int | None = None,
) -> dict[str, Any]:
    """The source's schema on the target, in one transaction (module docstring); what was done."""
    started = time.monotonic()
    with source.cursor() as cursor:
        if not fetch_value(cursor, statement("target_ownership")):
            cursor.execute(statement("marker_schema"))
            log.info("Source: created %s.switchover_marker (switchover catch-up markers)", MIGRATION_SCHEMA)
        source_tables = set(user_tables(cursor))
        keys = (
            []
            if defer_keys_from_bytes is None
            else fetch_dicts(cursor, statement("keys_deferrable"), {"min_bytes": defer_keys_from_bytes})
        )
        deferred = deferred_entries(fetch_dicts(cursor, statement("indexes_deferrable")), keys)
        referenced = [r["role_name"] for r in fetch_dicts(cursor, statement("roles_referenced"))]
    # A table whose identity is a deferred key has one once the key is built: never made FULL.
    keyed = {
        Table(k["schema_name"], k["table_name"]) for k in keys if k["kind"] == "p" or k["replica_identity"]
    }
    identity_tables = [table for table in replica_identity_full if table not in keyed]
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
                log.info("Target: %s", line)
            log.info(
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
        log.info(
            "Role(s) %s do not exist on the target: copying without owners and privileges",
            ", ".join(missing_roles),
        )
        options += ["--no-owner", "--no-privileges"]
    pre_data = strip_psql_meta(pg_dump(source, pg_bin_dir, [*options, "--section=pre-data"]))
    post_data = strip_psql_meta(pg_dump(source, pg_bin_dir, [*options, "--section=post-data"]))
    post_data, removed = remove_objects(post_data, set(deferred))
    deferred_indexes = [deferred[entry] for entry in removed if entry[0] == "INDEX"]
    deferred_keys = [deferred[entry] for entry in removed if entry[0].endswith("CONSTRAINT")]
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
    log.info(
        "Target: schema copied in one transaction in %.1f s: %d tables; deferred: %d secondary "
        "index(es) (%s), %d key(s) (%s)%s",
        seconds,
        copied,
        len(deferred_indexes),
        ", ".join(deferred_indexes) or "none",
        len(deferred_keys),
        ", ".join(deferred_keys) or "none",
        "; " + "; ".join(changed) if changed else "",
    )
    return {
        "copied": True,
        "tables": copied,
        "deferred_indexes": deferred_indexes,
        "deferred_keys": deferred_keys,
        "owners_and_privileges": not missing_roles,
        "seconds": round(seconds, 2),
    }


def pg_dump(source: MigrationPostgresHook, pg_bin_dir: str, options: list[str]) -> str:
    """pg_dump's output for `options` (pg_bin_dir's, else the one on PATH); the password only in
    its environment."""
    # Connection settings and the password reach pg_dump through its environment only.
    result = subprocess.run(
        [client_program(pg_bin_dir, "pg_dump"), *options],
        capture_output=True,
        text=True,
        env=source.client_environment(),
        check=False,
        timeout=3600,
    )
    if result.returncode != 0:
        raise MigrationError(
            f"pg_dump {' '.join(options)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout
