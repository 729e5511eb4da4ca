"""Preflight on real servers: it passes on a healthy pair, and names every problem in one message."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import psycopg2
import pytest
from airflow.sdk.exceptions import AirflowFailException
from psycopg2 import sql

from lab.credentials import APP_ROLE
from lab.postgres import DATABASE
from lab.supervisor import restart_component
from pyairtable_migration.config import MigrationConfig
from tests.database.pair import Pair
from tests.database.runner import operator_for, run, run_task

pytestmark = pytest.mark.lab

LIMITED_ROLE = "preflight_limited"
LIMITED_CONN = "preflight_limited_source"
LATIN1_CONN = "preflight_latin1_target"


@pytest.fixture(autouse=True, scope="module")
def clean(pair: Pair) -> Iterator[None]:
    pair.reset()
    yield
    pair.reset()


@pytest.fixture
def writer(pair: Pair) -> Iterator[None]:
    """A client of the application's through the pooler: PgBouncer knows the role it logs in as."""
    client = psycopg2.connect(pair.app_dsn())
    with client.cursor() as cursor:
        cursor.execute("SELECT 1")
    yield
    client.close()


def test_preflight_passes_on_a_healthy_pair_and_says_what_it_will_do(
    pair: Pair, config: MigrationConfig, writer: None
) -> None:
    summary = run_task(config, "preflight.check_database")
    assert summary["passed"] is True
    assert (
        f"pooler pgbouncer: writers log in as role {APP_ROLE}: it may log in to the target and connect "
        f"to {DATABASE}"
    ) in summary["notes"]
    assert (
        "REPLICA IDENTITY FULL will be set on public.audit_log (database.replica_identity_full)"
        in summary["notes"]
    )
    assert run_task(config, "preflight.check_redis")["passed"] is True
    # Nothing changed: no publication, no slot, no identity set.
    assert pair.publications("source") == [] and pair.slots("source") == []
    assert pair.query("source", "SELECT relreplident FROM pg_class WHERE relname = 'audit_log'") == [("d",)]


def test_preflight_names_every_problem_in_one_message(
    pair: Pair, config: MigrationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table without replica identity, wal_level=replica, a role without the privileges needed,
    a foreign target: each named, all at once."""
    password = "limited-secret-not-logged"
    with pair.superuser("source", DATABASE) as connection, connection.cursor() as cursor:
        cursor.execute('CREATE TABLE "Event Stream" (at timestamptz, payload text)')
        cursor.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(LIMITED_ROLE)), (password,)
        )
        cursor.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(DATABASE), sql.Identifier(LIMITED_ROLE)
            )
        )
        cursor.execute("ALTER SYSTEM SET wal_level = 'replica'")
    pair.execute("target", "CREATE TABLE someone_elses (id int PRIMARY KEY)")
    restart_component("postgres-source", pair.settings)
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{LIMITED_CONN.upper()}",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": pair.settings.host,
                "port": pair.settings.postgres_source_port,
                "login": LIMITED_ROLE,
                "password": password,
                "schema": DATABASE,
            }
        ),
    )
    try:
        with pytest.raises(AirflowFailException) as failure:
            run(operator_for(config, "preflight.check_database", source_conn_id=LIMITED_CONN), config)
        message = str(failure.value)
        assert message.startswith("database preflight found ")
        assert 'source: table public."Event Stream" has no replica identity' in message
        assert 'ALTER TABLE public."Event Stream" REPLICA IDENTITY FULL' in message
        assert "add a primary key" in message.lower()
        assert "audit_log has no replica identity" not in message  # database.replica_identity_full
        assert "source: wal_level is replica" in message
        assert (
            f"source (PostgreSQL 15): role {LIMITED_ROLE} may not create the subscriptions (forward "
            "replication on the target, reverse replication on the source): PostgreSQL 15 allows only "
            "superusers"
        ) in message
        assert f"source (PostgreSQL 15): role {LIMITED_ROLE} lacks the REPLICATION attribute" in message
        assert f"source (PostgreSQL 15): role {LIMITED_ROLE} does not own" in message
        assert "target: not empty (1 table(s): public.someone_elses)" in message
        assert password not in message
        # Preflight changed nothing.
        assert pair.query("source", "SELECT relreplident FROM pg_class WHERE relname = 'Event Stream'") == [
            ("d",)
        ]
        assert pair.publications("source") == []
    finally:
        with pair.superuser("source", DATABASE) as connection, connection.cursor() as cursor:
            cursor.execute('DROP TABLE "Event Stream"')
            cursor.execute(
                sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                    sql.Identifier(DATABASE), sql.Identifier(LIMITED_ROLE)
                )
            )
            cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(LIMITED_ROLE)))
            cursor.execute("ALTER SYSTEM RESET wal_level")
        pair.execute("target", "DROP TABLE someone_elses")
        restart_component("postgres-source", pair.settings)
    assert pair.query("source", "SHOW wal_level") == [("logical",)]


def test_preflight_refuses_a_target_the_pooler_could_not_log_in_to(
    pair: Pair, config: MigrationConfig, writer: None
) -> None:
    """The role the pooler logs in as, as the target sees it: NOLOGIN and a connection limit of 0
    each named with its fix (writers switched there would wait on the pooler); nothing changed."""
    role = sql.Identifier(APP_ROLE)
    with pair.superuser("target") as connection, connection.cursor() as cursor:
        cursor.execute(sql.SQL("ALTER ROLE {} NOLOGIN CONNECTION LIMIT 0").format(role))
    try:
        with pytest.raises(AirflowFailException) as failure:
            run_task(config, "preflight.check_database")
    finally:
        with pair.superuser("target") as connection, connection.cursor() as cursor:
            cursor.execute(sql.SQL("ALTER ROLE {} LOGIN CONNECTION LIMIT -1").format(role))
    assert (
        f"pooler pgbouncer: writers log in as role {APP_ROLE} on the target, where it may not log in "
        f"(ALTER ROLE {APP_ROLE} LOGIN); its connection limit is 0 (ALTER ROLE {APP_ROLE} CONNECTION "
        "LIMIT -1)"
    ) in str(failure.value)
    assert pair.publications("source") == [] and pair.slots("source") == []
    assert run_task(config, "preflight.check_database")["passed"] is True


def test_redis_preflight_refuses_a_target_it_would_wipe(pair: Pair, config: MigrationConfig) -> None:
    target = pair.redis("target")
    target.set("someone:else", "1")
    try:
        with pytest.raises(AirflowFailException, match=r"target Redis holds 1 key\(s\) and is not a replica"):
            run_task(config, "preflight.check_redis")
    finally:
        target.flushall()
    assert run_task(config, "preflight.check_redis")["passed"] is True


def test_preflight_refuses_a_target_database_in_another_encoding(
    pair: Pair, config: MigrationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LATIN1 target database under the UTF8 source: named with the fix, and nothing changed."""
    other = "pyairtable_latin1"
    with pair.superuser("target") as connection, connection.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 "
                "OWNER migrator"
            ).format(sql.Identifier(other))
        )
    target_variable = f"AIRFLOW_CONN_{config.database.target_conn_id.upper()}"
    latin1 = {**json.loads(os.environ[target_variable]), "schema": other}
    monkeypatch.setenv(f"AIRFLOW_CONN_{LATIN1_CONN.upper()}", json.dumps(latin1))
    try:
        with pytest.raises(AirflowFailException) as failure:
            run(operator_for(config, "preflight.check_database", target_conn_id=LATIN1_CONN), config)
        assert (
            "target database is encoded LATIN1, the source's UTF8: create the target database with "
            "ENCODING 'UTF8'"
        ) in str(failure.value)
        assert pair.publications("source") == [] and pair.slots("source") == []
    finally:
        with pair.superuser("target") as connection, connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(other)))
