"""A dedicated lab for the database tests: two PostgreSQL clusters, PgBouncer and two Redis servers
on free ports with their own data directory, started with the lab's own components.

The database tests repoint the pooler, drop and recreate the target and reverse replication;
doing that on the shared lab would break every other module using it, so they get their own.
`reset()` brings the pair back to its initial state between scenarios: target database dropped
and recreated empty, every replication slot, publication and subscription gone, PgBouncer
pointed at the source and resumed, Redis target emptied and a primary again.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import redis
from psycopg2 import sql

from lab.credentials import APP_ROLE, MIGRATOR_ROLE, secrets
from lab.ledger import LedgerReport, check_ledger
from lab.pgbouncer import admin_console
from lab.postgres import DATABASE, PostgresCluster
from lab.processes import State
from lab.settings import LabSettings
from pyairtable_migration.config import load_config
from pyairtable_migration.hooks.redis_endpoint import RedisEndpointHook
from pyairtable_migration.hooks.redis_hook import SWITCH_MARKER
from tests.own_lab import point_pooler, running_lab

COMPONENTS = (
    "postgres-source",
    "postgres-target",
    "pgbouncer",
    "redis-source",
    "redis-target",
    "redis-endpoint",
)


@dataclass
class Pair:
    settings: LabSettings
    records: int

    @property
    def passwords(self) -> dict[str, str]:
        return secrets(self.settings)

    # --- connections --------------------------------------------------------------------------
    def connect(self, side: str, role: str = MIGRATOR_ROLE, autocommit: bool = True) -> Any:
        port = self.settings.postgres_source_port if side == "source" else self.settings.postgres_target_port
        connection = psycopg2.connect(
            host=self.settings.host,
            port=port,
            user=role,
            password=self.passwords[role],
            dbname=DATABASE,
            connect_timeout=5,
        )
        connection.autocommit = autocommit
        return connection

    def superuser(self, side: str, database: str = "postgres") -> Any:
        return PostgresCluster(side).superuser(self.settings, database)  # type: ignore[arg-type]

    def query(self, side: str, statement: Any, params: Any = None) -> list[tuple[Any, ...]]:
        connection = self.connect(side)
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def execute(self, side: str, statement: Any, params: Any = None) -> None:
        connection = self.connect(side)
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, params)
        finally:
            connection.close()

    def ledger_report(self, side: str, ledger: Path) -> LedgerReport:
        """The writers' acknowledged rows (the load's ledger) checked against `side`'s table."""
        connection = self.connect(side)
        try:
            return check_ledger(ledger, connection)
        finally:
            connection.close()

    def app_dsn(self) -> str:
        password = self.passwords[APP_ROLE]
        return f"postgresql://{APP_ROLE}:{password}@{self.settings.host}:{self.settings.pgbouncer_port}/{DATABASE}"

    def admin_console(self) -> Any:
        return admin_console(self.settings)

    def pooler_port(self) -> int:
        return pooler_port(self.settings)

    def redis(self, side: str) -> redis.Redis:
        port = self.settings.redis_source_port if side == "source" else self.settings.redis_target_port
        return redis.Redis(host=self.settings.host, port=port, socket_timeout=10)

    # --- state ----------------------------------------------------------------------------------
    def slots(self, side: str) -> list[str]:
        return [r[0] for r in self.query(side, "SELECT slot_name FROM pg_replication_slots ORDER BY 1")]

    def publications(self, side: str) -> list[str]:
        return [r[0] for r in self.query(side, "SELECT pubname FROM pg_publication ORDER BY 1")]

    def subscriptions(self, side: str) -> list[str]:
        return [r[0] for r in self.query(side, "SELECT subname FROM pg_subscription ORDER BY 1")]

    def reset(self) -> None:
        """Back to the initial state: source primary behind PgBouncer, target empty, no replication."""
        self._resume_and_point_at_source()
        for side in ("source", "target"):
            with self.superuser(side, DATABASE) as connection, connection.cursor() as cursor:
                cursor.execute("SELECT subname FROM pg_subscription")
                for (name,) in cursor.fetchall():
                    cursor.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(name)))
                    cursor.execute(
                        sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(sql.Identifier(name))
                    )
                    cursor.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(name)))
                cursor.execute("SELECT pubname FROM pg_publication")
                for (name,) in cursor.fetchall():
                    cursor.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(name)))
        for side in ("source", "target"):
            with self.superuser(side) as connection, connection.cursor() as cursor:
                deadline = time.monotonic() + 15
                while True:
                    cursor.execute(
                        "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
                        (DATABASE,),
                    )
                    rows = cursor.fetchall()
                    if not rows:
                        break
                    for name, pid in rows:
                        if pid is not None:
                            cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        with contextlib.suppress(psycopg2.Error):
                            cursor.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{side}: slots {rows} would not go")
                    time.sleep(0.1)
        with self.superuser("target") as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid "
                "<> pg_backend_pid()",
                (DATABASE,),
            )
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
            )
        # The lab's own seeding recreates database, roles and grants on the empty target.
        PostgresCluster("target").seed(self.settings, self.records, State(self.settings))
        with self.superuser("source", DATABASE) as connection, connection.cursor() as cursor:
            cursor.execute("DROP SCHEMA IF EXISTS pyairtable_migration CASCADE")
            cursor.execute("ALTER TABLE audit_log REPLICA IDENTITY DEFAULT")
            self._sequences_past_their_rows(cursor)
        self.reset_redis()

    @staticmethod
    def _sequences_past_their_rows(cursor: Any) -> None:
        """Rows written on the target during a scenario come back to the source by reverse
        replication, its sequences do not (a rollback moves them; a scenario that ends without one,
        or fails before it, does not): each moved past its column's rows, so the next scenario's
        writers do not collide with them."""
        cursor.execute(
            "SELECT table_schema, table_name, column_name, pg_get_serial_sequence(format('%I.%I', "
            "table_schema, table_name), column_name) FROM information_schema.columns WHERE "
            "table_schema = 'public'"
        )
        for schema, table, column, sequence in cursor.fetchall():
            if sequence is not None:
                cursor.execute(
                    sql.SQL(
                        "SELECT setval(%s, max({column})) FROM {table} "
                        "HAVING max({column}) > coalesce(pg_sequence_last_value(%s::regclass), 0)"
                    ).format(column=sql.Identifier(column), table=sql.Identifier(schema, table)),
                    (sequence, sequence),
                )

    def reset_redis(self) -> None:
        """Staging's Redis arrangement: the write endpoint on the source, a primary not paused; the
        target an empty primary."""
        self.redis_endpoint().route_to((self.settings.host, self.settings.redis_source_port))
        source, target = self.redis("source"), self.redis("target")
        source.client_unpause()
        source.replicaof("no", "one")
        source.delete(SWITCH_MARKER)  # replicated from a switched target
        target.replicaof("no", "one")
        target.flushall()

    def redis_endpoint(self) -> RedisEndpointHook:
        """The write endpoint, by the shipped config's connection id (its connection is in os.environ)."""
        return RedisEndpointHook(str(load_config().redis.endpoint_conn_id))

    def _resume_and_point_at_source(self) -> None:
        point_pooler(self.settings, self.settings.postgres_source_port)
        console = self.admin_console()
        try:
            with console.cursor() as cursor:
                cursor.execute("SHOW DATABASES")
                names = [d[0] for d in cursor.description]
                paused = [
                    entry["name"]
                    for entry in (dict(zip(names, row, strict=True)) for row in cursor.fetchall())
                    if entry["paused"]
                ]
                for name in paused:
                    cursor.execute(sql.SQL("RESUME {}").format(sql.Identifier(name)))
        finally:
            console.close()


def pooler_port(settings: LabSettings) -> int:
    """The port the PgBouncer of `settings` currently sends DATABASE's server connections to."""
    console = admin_console(settings)
    try:
        with console.cursor() as cursor:
            cursor.execute("SHOW DATABASES")
            names = [d[0] for d in cursor.description]
            for row in cursor.fetchall():
                entry = dict(zip(names, row, strict=True))
                if entry["name"] == DATABASE:
                    return int(entry["port"])
    finally:
        console.close()
    raise AssertionError(f"PgBouncer has no database {DATABASE}")


@contextlib.contextmanager
def running_pair(records: int) -> Iterator[Pair]:
    """Start the pair (seeded with `records` rows), its Airflow connections in os.environ."""
    with running_lab("pyairtable-db-test-", COMPONENTS, records=records) as settings:
        yield Pair(settings, records)


def describe(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
