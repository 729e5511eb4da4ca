"""PostgreSQL for the migration: a PostgresHook handing out psycopg2 connections, the statements of
include/sql/ (one file per purpose), and the replication primitives the database operators share.

Identifiers are always composed with `psycopg2.sql.Identifier`; values always travel as query
parameters. Passwords reach PostgreSQL only through psycopg2's connect arguments, PGPASSWORD in a
child's environment, or the CONNECTION of CREATE SUBSCRIPTION (whose session first stops the
server from logging failing statements); none of them is ever logged or returned.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg2 import sql

SQL_DIR = Path(__file__).resolve().parents[3] / "include" / "sql"
APPLICATION_NAME = "pyairtable-migration"
MIGRATION_SCHEMA = "pyairtable_migration"
# Connection extras that are Airflow's, not libpq's.
AIRFLOW_EXTRAS = frozenset(
    {"cursor", "iam", "redshift", "cluster-identifier", "aws_conn_id", "azure_conn_id", "log_sql"}
)
# Extras that say how the *other* server reaches this one (CREATE SUBSCRIPTION's CONNECTION),
# when that differs from how Airflow reaches it.
REPLICATION_HOST_EXTRA = "replication_host"
REPLICATION_PORT_EXTRA = "replication_port"
# Where the PostgreSQL client programs are (Debian's packages, the Dockerfile's image).
DEFAULT_PG_BIN_DIR = "/usr/lib/postgresql/15/bin"
LIBPQ_ENVIRONMENT = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}
SIMPLE_NAME = re.compile(r"^[a-z_][a-z0-9_$]*$")


class MigrationError(Exception):
    """A problem the on-call engineer can act on; operators fail with its text."""


# --- SQL ------------------------------------------------------------------------------------------


@functools.cache
def sql_text(name: str) -> str:
    """The text of include/sql/<name>.sql."""
    return (SQL_DIR / f"{name}.sql").read_text()


Identifiable: TypeAlias = str | tuple[str, ...] | sql.Composable


def statement(name: str, **identifiers: Identifiable) -> sql.Composed:
    """include/sql/<name>.sql with each {placeholder} replaced by a quoted identifier.

    A str is one identifier, a tuple a qualified one (schema, table); a Composable goes in as is
    (e.g. a list of identifiers joined by commas). `{user_tables}` is the one definition of a user
    table (include/sql/user_tables.sql), which every statement about the tables reads.
    """

    def compose(value: Identifiable) -> sql.Composable:
        if isinstance(value, sql.Composable):
            return value
        if isinstance(value, tuple):
            return sql.Identifier(*value)
        return sql.Identifier(value)

    text = sql_text(name)
    fragments = {"user_tables": sql.SQL(sql_text("user_tables"))} if "{user_tables}" in text else {}
    return sql.SQL(text).format(**fragments, **{key: compose(value) for key, value in identifiers.items()})


def display_identifier(name: str) -> str:
    """An identifier as it must be written in SQL, for messages and remedies (never executed)."""
    return name if SIMPLE_NAME.match(name) else '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, order=True)
class Table:
    schema: str
    name: str

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{display_identifier(self.schema)}.{display_identifier(self.name)}"

    @classmethod
    def parse(cls, text: str) -> Table:
        """`table` (schema public) or `schema.table`, as SQL spells them: unquoted parts fold to
        lower case, a double-quoted part keeps its case, spaces and dots."""
        parts: list[str] = []
        current, quoted, index = "", False, 0
        while index < len(text):
            char = text[index]
            if quoted:
                if char == '"' and text[index + 1 : index + 2] == '"':
                    current += '"'
                    index += 1
                elif char == '"':
                    quoted = False
                else:
                    current += char
            elif char == '"':
                quoted = True
            elif char == ".":
                parts.append(current)
                current = ""
            else:
                current += char.lower()
            index += 1
        parts.append(current)
        if quoted or not all(parts) or len(parts) > 2:
            raise ValueError(f"not a table name: {text!r}")
        return cls("public", parts[0]) if len(parts) == 1 else cls(parts[0], parts[1])


def fetch_dicts(cursor: Any, query: sql.Composable | str, params: Any = None) -> list[dict[str, Any]]:
    cursor.execute(query, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def fetch_one(cursor: Any, query: sql.Composable | str, params: Any = None) -> dict[str, Any] | None:
    rows = fetch_dicts(cursor, query, params)
    return rows[0] if rows else None


def fetch_value(cursor: Any, query: sql.Composable | str, params: Any = None) -> Any:
    cursor.execute(query, params)
    row = cursor.fetchone()
    return row[0] if row else None


def _conninfo_value(value: object) -> str:
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- the hook --------------------------------------------------------------------------------------


def client_program(pg_bin_dir: str, name: str) -> str:
    """A PostgreSQL client program (pg_dump, psql): pg_bin_dir's, else the one on PATH."""
    program = Path(pg_bin_dir) / name
    if os.access(program, os.X_OK):
        return str(program)
    found = shutil.which(name)
    if found is None:
        raise MigrationError(f"{name} not found at {program} nor on PATH")
    return found


class MigrationPostgresHook(PostgresHook):
    """A PostgresHook whose connections are psycopg2's (for `psycopg2.sql` composition).

    :param postgres_conn_id: an Airflow `postgres` connection; its extra may carry libpq options
        (sslmode, ...) and `replication_host` / `replication_port`: how the other cluster reaches
        this one for CREATE SUBSCRIPTION, when that differs from how Airflow reaches it.
    """

    def __init__(self, postgres_conn_id: str, **kwargs: Any) -> None:
        super().__init__(postgres_conn_id=postgres_conn_id, **kwargs)
        self.migration_conn_id = postgres_conn_id

    @functools.cached_property
    def _fields(self) -> dict[str, Any]:
        connection = self.get_connection(self.migration_conn_id)
        extra = dict(connection.extra_dejson)
        return {
            "host": connection.host or "localhost",
            "port": int(connection.port or 5432),
            "user": connection.login,
            "password": connection.password,
            "dbname": connection.schema or "postgres",
            "extra": extra,
        }

    def _libpq_extras(self) -> dict[str, Any]:
        return {
            key: value
            for key, value in self._fields["extra"].items()
            if key not in AIRFLOW_EXTRAS and key not in (REPLICATION_HOST_EXTRA, REPLICATION_PORT_EXTRA)
        }

    def describe(self) -> str:
        """`user@host:port/database`: where this connection goes, without its password."""
        fields = self._fields
        return f"{fields['user']}@{fields['host']}:{fields['port']}/{fields['dbname']}"

    @property
    def has_password(self) -> bool:
        return bool(self._fields["password"])

    @property
    def address(self) -> tuple[str, int, str]:
        fields = self._fields
        return fields["host"], fields["port"], fields["dbname"]

    def connect(
        self,
        *,
        autocommit: bool = True,
        application_name: str = APPLICATION_NAME,
        connect_timeout: int = 10,
        replication: bool = False,
    ) -> psycopg2.extensions.connection:
        """A connection; `replication`: a logical replication one (replication=database), which
        takes replication-protocol commands such as CREATE_REPLICATION_SLOT."""
        fields = self._fields
        arguments: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            **self._libpq_extras(),
            "host": fields["host"],
            "port": fields["port"],
            "user": fields["user"],
            "password": fields["password"],
            "dbname": fields["dbname"],
            "application_name": application_name,
        }
        if replication:
            return psycopg2.connect(
                connection_factory=psycopg2.extras.LogicalReplicationConnection, **arguments
            )
        connection = psycopg2.connect(**arguments)
        connection.autocommit = autocommit
        return connection

    @contextlib.contextmanager
    def cursor(self, **kwargs: Any) -> Iterator[Any]:
        """An autocommit cursor on a fresh connection, closed on exit."""
        connection = self.connect(**kwargs)
        try:
            with connection.cursor() as cursor:
                yield cursor
        finally:
            connection.close()

    def libpq_environment(self) -> dict[str, str]:
        """PG* variables for a child process (pg_dump): the password never on a command line."""
        fields = self._fields
        environment = {
            "PGHOST": fields["host"],
            "PGPORT": str(fields["port"]),
            "PGDATABASE": fields["dbname"],
            "PGAPPNAME": APPLICATION_NAME,
        }
        if fields["user"]:
            environment["PGUSER"] = fields["user"]
        if fields["password"]:
            environment["PGPASSWORD"] = fields["password"]
        for key, variable in LIBPQ_ENVIRONMENT.items():
            if key in fields["extra"]:
                environment[variable] = str(fields["extra"][key])
        return environment

    def client_environment(self, application_name: str = APPLICATION_NAME) -> dict[str, str]:
        """The whole environment for a PostgreSQL client program run against this database."""
        return {**os.environ, **self.libpq_environment(), "PGAPPNAME": application_name}

    def replication_conninfo(self) -> str:
        """How the other cluster connects to this one (CREATE SUBSCRIPTION): holds the password."""
        fields = self._fields
        extra = fields["extra"]
        parts = {
            "host": extra.get(REPLICATION_HOST_EXTRA, fields["host"]),
            "port": extra.get(REPLICATION_PORT_EXTRA, fields["port"]),
            "dbname": fields["dbname"],
            "user": fields["user"],
            "password": fields["password"],
            "application_name": APPLICATION_NAME,
            **{key: extra[key] for key in LIBPQ_ENVIRONMENT if key in extra and key != "connect_timeout"},
        }
        return " ".join(
            f"{key}={_conninfo_value(value)}" for key, value in parts.items() if value is not None
        )


# --- replication primitives -------------------------------------------------------------------------


def server_facts(cursor: Any) -> dict[str, Any]:
    facts = fetch_one(cursor, statement("preflight_server"))
    assert facts is not None
    return facts


def user_tables(cursor: Any) -> dict[Table, int]:
    """The user tables logical replication carries, with their estimated row counts."""
    return {
        Table(row["schema_name"], row["table_name"]): row["estimated_rows"]
        for row in fetch_dicts(cursor, statement("user_tables_list"))
    }


def row_count(cursor: Any, table: Table) -> int:
    return int(fetch_value(cursor, statement("table_row_count", table=(table.schema, table.name))))


def replica_identity(cursor: Any, table: Table) -> str | None:
    return fetch_value(
        cursor, statement("replica_identity_of"), {"schema": table.schema, "table": table.name}
    )


def parse_tables(names: Sequence[str]) -> list[Table]:
    """The config's table names (`table` or `schema.table`, as SQL spells them) as tables."""
    return [Table.parse(name) for name in names]


def lacking_replica_identity(cursor: Any) -> list[Table]:
    """Tables whose UPDATE/DELETE a publication of every table would break (no replica identity)."""
    return [
        Table(row["schema_name"], row["table_name"])
        for row in fetch_dicts(cursor, statement("preflight_replica_identity"))
    ]


def ensure_replica_identity_full(cursor: Any, tables: Sequence[Table]) -> list[str]:
    """REPLICA IDENTITY FULL on each listed table that has no usable identity; what changed."""
    lacking = set(lacking_replica_identity(cursor))
    changed = []
    for table in tables:
        if table in lacking:
            cursor.execute(statement("replica_identity_full", table=(table.schema, table.name)))
            changed.append(f"{table}: REPLICA IDENTITY FULL")
    return changed


def get_publication(cursor: Any, name: str) -> dict[str, Any] | None:
    return fetch_one(cursor, statement("publication_get"), {"name": name})


def ensure_publication(cursor: Any, name: str) -> str:
    """Publication `name` of every user table, listed by name (no superuser needed: owning the
    tables is enough, as on managed services): created when absent, completed with the tables it
    lacks and made to publish every kind of change when present. One made FOR ALL TABLES (by an
    earlier version, as a superuser) publishes everything already and is kept."""
    tables = sorted(user_tables(cursor))
    publication = get_publication(cursor, name)
    if publication is None:
        if not tables:
            raise MigrationError(f"no user table to publish: publication {name} would carry nothing")
        cursor.execute(statement("publication_create", publication=name, tables=table_list(tables)))
        return "created"
    done = []
    if not publication["puballtables"]:
        listed = {
            Table(row["schema_name"], row["table_name"])
            for row in fetch_dicts(cursor, statement("publication_tables"), {"name": name})
        }
        missing = [table for table in tables if table not in listed]
        if missing:
            cursor.execute(statement("publication_add_tables", publication=name, tables=table_list(missing)))
            done.append(f"added {', '.join(map(str, missing))}")
    if not all(publication[key] for key in ("pubinsert", "pubupdate", "pubdelete", "pubtruncate")):
        cursor.execute(statement("publication_set_publish", publication=name))
        done.append("altered to publish insert, update, delete, truncate")
    return "; ".join(done) or "verified"


def table_list(tables: Sequence[Table]) -> sql.Composable:
    """`a.b, c.d`: tables as one SQL list, quoted."""
    return sql.SQL(", ").join(table.identifier for table in tables)


def empty_tables(cursor: Any, tables: Sequence[Table]) -> list[Table]:
    """Empty `tables` before an initial copy, in one statement (foreign keys allow no less; all are
    copied anew); the ones that held rows, which were left by an abandoned copy."""
    filled = [
        table
        for table in tables
        if fetch_value(cursor, statement("tables_with_rows", table=(table.schema, table.name)))
    ]
    if filled:
        cursor.execute(statement("tables_truncate", tables=table_list(tables)))
    return filled


def get_subscription(cursor: Any, name: str) -> dict[str, Any] | None:
    return fetch_one(cursor, statement("subscription_get"), {"name": name})


def get_slot(cursor: Any, name: str) -> dict[str, Any] | None:
    return fetch_one(cursor, statement("replication_slot_get"), {"name": name})


def drop_subscription(cursor: Any, name: str) -> None:
    """Stop, then drop, a subscription: its slot on the publisher goes with it."""
    cursor.execute(statement("subscription_disable", subscription=name))
    cursor.execute(statement("subscription_drop", subscription=name))


def table_states(cursor: Any, subscription: str) -> dict[Table, str]:
    return {
        Table(row["schema_name"], row["table_name"]): row["state"]
        for row in fetch_dicts(cursor, statement("subscription_table_states"), {"name": subscription})
    }


def subscription_errors(cursor: Any, subscription: str) -> tuple[int, int]:
    row = fetch_one(cursor, statement("subscription_errors"), {"name": subscription})
    return (int(row["apply_error_count"]), int(row["sync_error_count"])) if row else (0, 0)


def applied_lsn(cursor: Any, subscription: str) -> str | None:
    """The publisher LSN up to which the subscriber has applied (its replication origin)."""
    return fetch_value(cursor, statement("subscription_applied_lsn"), {"name": subscription})


def current_lsn(cursor: Any) -> str:
    return str(fetch_value(cursor, statement("current_wal_lsn")))


def lsn_reached(cursor: Any, reached: str | None, wanted: str) -> bool:
    if reached is None:
        return False
    return bool(fetch_value(cursor, statement("lsn_reached"), {"reached": reached, "wanted": wanted}))


def quiet_statement_logging(cursor: Any) -> None:
    """Keep this (autocommit) session's failing statements out of the server log, best effort."""
    with contextlib.suppress(psycopg2.Error):
        cursor.execute(statement("quiet_statement_logging"))


# --- sequences ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceChange:
    sequence: str
    before: int | None
    after: int

    def __str__(self) -> str:
        return f"{self.sequence}: {self.before if self.before is not None else 'unused'} -> {self.after}"


def read_sequences(cursor: Any) -> dict[Table, tuple[int | None, int]]:
    return {
        Table(row["schemaname"], row["sequencename"]): (row["last_value"], row["increment_by"])
        for row in fetch_dicts(cursor, statement("sequences_read"))
    }


def sync_sequences(from_cursor: Any, to_cursor: Any, margin: int) -> tuple[list[SequenceChange], list[str]]:
    """Every sequence on the `to` side at least the `from` side's last value plus `margin` steps.

    Compare-and-set: a sequence already that far (e.g. a re-run) is left alone, never moved back.
    Returns the changes and the sequences missing on the `to` side.
    """
    source = read_sequences(from_cursor)
    target = read_sequences(to_cursor)
    changes, missing = [], []
    for name, (last_value, increment) in source.items():
        if last_value is None:
            continue
        if name not in target:
            missing.append(str(name))
            continue
        wanted = last_value + margin * increment
        current = target[name][0]
        if current is not None and (current >= wanted if increment > 0 else current <= wanted):
            continue
        to_cursor.execute(statement("sequence_setval"), {"sequence": str(name), "value": wanted})
        changes.append(SequenceChange(str(name), current, wanted))
    return changes, missing


# --- the pending transaction of a slot (pgoutput, protocol 1) -----------------------------------------


@dataclass
class RelationInfo:
    table: Table
    columns: list[str]
    key_columns: list[str]


@dataclass
class PendingTransaction:
    """The first transaction a subscriber has not confirmed: what failed to apply."""

    xid: str
    final_lsn: str
    changes: list[tuple[str, Table, dict[str, str | None]]] = field(default_factory=list)

    def tables(self) -> list[Table]:
        return sorted({table for _, table, _ in self.changes})

    def describe(self, limit: int = 5) -> str:
        parts = []
        for operation, table, key in self.changes[:limit]:
            where = ", ".join(f"{column}={value}" for column, value in key.items())
            parts.append(f"{operation} {table}" + (f" ({where})" if where else ""))
        more = len(self.changes) - limit
        return "; ".join(parts) + (f"; and {more} more change(s)" if more > 0 else "")


def _lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> Any:
        values = struct.unpack_from("!" + fmt, self.data, self.at)
        self.at += struct.calcsize("!" + fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        end = self.data.index(b"\0", self.at)
        text = self.data[self.at : end].decode()
        self.at = end + 1
        return text

    def tuple_data(self) -> list[str | None]:
        values: list[str | None] = []
        for _ in range(self.take("h")):
            kind = self.take("c")
            if kind == b"t":
                length = self.take("i")
                values.append(self.data[self.at : self.at + length].decode(errors="replace"))
                self.at += length
            else:
                values.append(None)  # n: null, u: unchanged TOAST
        return values


def lsn_number(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def parse_transactions(messages: Sequence[tuple[str, str, bytes]]) -> list[PendingTransaction]:
    """pgoutput messages (lsn, xid, data) -> each transaction's changes and final (commit) LSN."""
    relations: dict[int, RelationInfo] = {}
    transactions: list[PendingTransaction] = []
    pending: PendingTransaction | None = None
    for _lsn, xid, raw in messages:
        reader = _Reader(bytes(raw))
        kind = reader.take("c")
        if kind == b"B":
            final_lsn, _timestamp, _xid = reader.take("qqi")
            pending = PendingTransaction(xid=str(xid), final_lsn=_lsn_text(final_lsn))
        elif kind == b"R":
            relid = reader.take("i")
            schema, name = reader.string(), reader.string()
            reader.take("b")  # replica identity setting
            columns, keys = [], []
            for _ in range(reader.take("h")):
                flags = reader.take("b")
                column = reader.string()
                reader.take("ii")  # type oid, typmod
                columns.append(column)
                if flags & 1:
                    keys.append(column)
            relations[relid] = RelationInfo(Table(schema, name), columns, keys)
        elif kind in (b"I", b"U", b"D") and pending is not None:
            relid = reader.take("i")
            relation = relations.get(relid)
            if relation is None:
                continue
            marker = reader.take("c")
            values = reader.tuple_data()
            if kind == b"U" and marker in (b"K", b"O"):
                reader.take("c")
                values = reader.tuple_data() if marker == b"O" else values
            row = dict(zip(relation.columns, values, strict=False))
            keys = relation.key_columns or relation.columns
            operation = {b"I": "INSERT INTO", b"U": "UPDATE", b"D": "DELETE FROM"}[kind]
            pending.changes.append((operation, relation.table, {k: row.get(k) for k in keys}))
        elif kind == b"T" and pending is not None:
            count = reader.take("i")
            reader.take("b")
            for relid in [reader.take("i") for _ in range(count)]:
                if relid in relations:
                    pending.changes.append(("TRUNCATE", relations[relid].table, {}))
        elif kind == b"C" and pending is not None:
            transactions.append(pending)
            pending = None
    return transactions


def parse_pending_transaction(
    messages: Sequence[tuple[str, str, bytes]], applied: str | None = None
) -> PendingTransaction | None:
    """The first transaction in `messages` the subscriber has not applied (it applied every
    transaction whose commit LSN is before `applied`, its replication origin's position)."""
    floor = lsn_number(applied) if applied else -1
    for transaction in parse_transactions(messages):
        if lsn_number(transaction.final_lsn) >= floor:
            return transaction
    return None


def first_pending_transaction(
    cursor: Any, slot: str, publication: str, applied: str | None = None, wait_seconds: float = 10.0
) -> PendingTransaction | None:
    """Decode (without consuming) the slot's next transaction the subscriber has not applied.

    The slot's confirmed position trails what the subscriber applied (its feedback is
    asynchronous), so transactions before `applied` are passed over. Decoding is only possible
    while no subscriber streams from the slot: a subscription just disabled lets go of it within
    moments, so this waits up to `wait_seconds` for that.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        state = get_slot(cursor, slot)
        if state is None:
            return None
        if not state["active"]:
            break
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)
    for changes in (1_000, 100_000):
        try:
            cursor.execute(
                statement("replication_slot_first_transaction"),
                {"name": slot, "publication": publication, "changes": changes},
            )
        except psycopg2.Error:
            return None
        found = parse_pending_transaction(cursor.fetchall(), applied)
        if found is not None:
            return found
    return None


def conflicting_rows(cursor: Any, pending: PendingTransaction) -> list[str]:
    """The inserted rows of `pending` whose key already exists on this (the subscriber's) side."""
    found = []
    for operation, table, key in pending.changes[:50]:
        if operation != "INSERT INTO" or not key or any(v is None for v in key.values()):
            continue
        condition = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(column)) for column in key)
        query = statement("row_exists", table=table.identifier, condition=condition)
        try:
            if fetch_value(cursor, query, list(key.values())):
                found.append(f"{table} ({', '.join(f'{c}={v}' for c, v in key.items())})")
        except psycopg2.Error:
            continue
    return found


@dataclass
class SubscriptionFailure:
    """Why a disabled subscription stopped: the message, and whether a row on the subscriber caused it."""

    message: str
    pending_lsn: str | None
    conflicts: list[str]

    @property
    def conflicting(self) -> bool:
        return bool(self.conflicts)


def subscription_failure(
    *,
    subscription: str,
    publication: str,
    subscriber: Any,
    publisher: Any,
    slot: str,
    subscriber_name: str,
) -> SubscriptionFailure:
    """Why a disabled subscription stopped, with the table, the LSN and the remedy."""
    pending = first_pending_transaction(publisher, slot, publication, applied_lsn(subscriber, subscription))
    name = display_identifier(subscription)
    if pending is None or not pending.changes:
        return SubscriptionFailure(
            f"subscription {subscription} on {subscriber_name} is disabled and no failing change is pending "
            f"on slot {slot}; see the subscriber's server log, fix the cause, then ALTER SUBSCRIPTION {name} "
            "ENABLE",
            None,
            [],
        )
    conflicts = conflicting_rows(subscriber, pending)
    tables = ", ".join(str(t) for t in pending.tables())
    lines = [
        f"subscription {subscription} on {subscriber_name} is disabled: applying transaction {pending.xid} "
        f"(finish LSN {pending.final_lsn}) on table(s) {tables} failed: {pending.describe()}."
    ]
    if conflicts:
        lines.append(f"The subscriber already holds the row(s) being inserted: {', '.join(conflicts)}.")
    lines.append(
        "Remedy (no data lost): remove or fix the conflicting row(s) on the subscriber, then ALTER "
        f"SUBSCRIPTION {name} ENABLE. Or skip that whole transaction on the subscriber (its changes are then "
        f"missing there): ALTER SUBSCRIPTION {name} SKIP (lsn = '{pending.final_lsn}'); ALTER SUBSCRIPTION "
        f"{name} ENABLE."
    )
    return SubscriptionFailure(" ".join(lines), pending.final_lsn, conflicts)


def describe_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
