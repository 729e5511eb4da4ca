"""The managed-service aware privilege rules on a real PostgreSQL 17 server (the lab's production
cluster on 17, its migrator not a superuser): the 16+ grants pass, each missing grant is named,
and servers dressed as RDS, Cloud SQL and Azure (their admin roles and parameters created here
under those names) get their own verdicts and fixes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql

from lab.credentials import MIGRATOR_ROLE
from lab.postgres import PostgresCluster
from lab.processes import State
from lab.settings import LabSettings
from lab.supervisor import down, start_component
from pyairtable_migration.hooks.database import ensure_publication, fetch_one, server_facts, statement
from pyairtable_migration.postgres.preflight import connection_problems, parallel_copy_problems
from pyairtable_migration.postgres.privileges import AZURE, CLOUD_SQL, PLAIN, RDS, flavor, privilege_problems

pytestmark = pytest.mark.lab

TARGET = PostgresCluster("target")


@pytest.fixture(scope="module")
def production() -> Iterator[LabSettings]:
    """A PostgreSQL 17 production cluster with one table and one sequence the migrator owns."""
    settings = LabSettings.throwaway("pyairtable-privileges-", target_major=17)
    state = State(settings)
    state.seed["records"] = 10
    state.save()
    try:
        start_component("postgres-target", settings)
        with TARGET.connect(settings) as connection, connection, connection.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE bases (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text)"
            )
            cursor.execute("CREATE SEQUENCE invoice_number_seq")
        yield settings
    finally:
        down(settings, purge=True)


def facts(settings: LabSettings) -> dict[str, Any]:
    with TARGET.connect(settings) as connection, connection.cursor() as cursor:
        found = fetch_one(cursor, statement("preflight_privileges"))
    connection.close()
    assert found is not None
    return found


def as_postgres(settings: LabSettings, *statements: sql.Composable | str) -> None:
    with TARGET.superuser(settings) as connection, connection.cursor() as cursor:
        for text in statements:
            cursor.execute(text)


def set_parameter(settings: LabSettings, name: str, value: str | None) -> None:
    """A managed service's own parameter, as a placeholder (its dotted prefix makes it one)."""
    change = (
        sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name))
        if value is None
        else sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
    )
    as_postgres(settings, change, "SELECT pg_reload_conf()")
    time.sleep(0.3)  # the reload reaches new backends once the postmaster has re-read the file


MIGRATOR = sql.Identifier(MIGRATOR_ROLE)


def test_the_16_plus_grants_pass_on_17_and_each_missing_one_is_named(production: LabSettings) -> None:
    fact = facts(production)
    assert fact["server_version_num"] // 10000 == 17 and fact["is_superuser"] is False
    assert flavor(fact) is PLAIN
    assert privilege_problems("target", fact) == []

    as_postgres(production, sql.SQL("REVOKE pg_create_subscription FROM {}").format(MIGRATOR))
    try:
        problems = privilege_problems("target", facts(production))
    finally:
        as_postgres(production, sql.SQL("GRANT pg_create_subscription TO {}").format(MIGRATOR))
    assert problems == [
        "target (PostgreSQL 17): role migrator may not create the subscriptions (forward replication on the "
        "target, reverse replication on the source): GRANT pg_create_subscription TO migrator"
    ]

    as_postgres(production, sql.SQL("ALTER ROLE {} NOREPLICATION").format(MIGRATOR))
    try:
        problems = privilege_problems("target", facts(production), peer_password=False)
    finally:
        as_postgres(production, sql.SQL("ALTER ROLE {} REPLICATION").format(MIGRATOR))
    assert len(problems) == 2
    assert "password_required = true" in problems[0]
    assert (
        "lacks the REPLICATION attribute" in problems[1] and "ALTER ROLE migrator REPLICATION" in problems[1]
    )

    as_postgres(
        production, "CREATE ROLE someone_else", "CREATE TABLE public.foreign_rows (id int PRIMARY KEY)"
    )
    as_postgres(production, "ALTER TABLE public.foreign_rows OWNER TO someone_else")
    try:
        problems = privilege_problems("target", facts(production))
    finally:
        as_postgres(production, "DROP TABLE public.foreign_rows", "DROP ROLE someone_else")
    assert len(problems) == 1 and "does not own 1 table(s) (public.foreign_rows)" in problems[0]


def test_the_parallel_copy_needs_the_replication_role_parameter_and_free_sessions(
    production: LabSettings,
) -> None:
    """`initial_copy: parallel` on the 17 target: the lab grants SET on session_replication_role (it
    passes); revoked, the problem names the GRANT; more workers than free sessions, the shortfall."""

    def problems_now() -> tuple[dict[str, Any], list[str]]:
        with TARGET.connect(production) as connection, connection.cursor() as cursor:
            fact = server_facts(cursor)
            found = parallel_copy_problems(cursor, fact)
        connection.close()
        return fact, found

    fact, passed = problems_now()
    assert passed == []
    as_postgres(
        production, sql.SQL("REVOKE SET ON PARAMETER session_replication_role FROM {}").format(MIGRATOR)
    )
    try:
        _, problems = problems_now()
    finally:
        as_postgres(
            production, sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(MIGRATOR)
        )
    assert problems == [
        "target: role migrator may not set session_replication_role, which database.initial_copy: parallel "
        "needs: GRANT SET ON PARAMETER session_replication_role TO migrator (or use initial_copy: native)"
    ]
    assert connection_problems("target", fact, 3) == []
    free = fact["max_connections"] - fact["reserved_connections"] - fact["used_connections"]
    (short,) = connection_problems("target", fact, free + 1)
    assert f"needs {free + 1} sessions" in short and f"{free} free" in short and "lower copy_workers" in short


@pytest.mark.parametrize(
    ("kind", "roles", "parameter", "off", "on"),
    [
        (RDS, ["rds_superuser", "rds_replication"], "rds.logical_replication", "0", "1"),
        (CLOUD_SQL, ["cloudsqlsuperuser"], "cloudsql.logical_decoding", "off", "on"),
        (AZURE, ["azure_pg_admin"], None, None, None),
    ],
    ids=["rds", "cloud-sql", "azure"],
)
def test_managed_servers_are_recognised_and_get_their_own_fixes(
    production: LabSettings,
    kind: Any,
    roles: list[str],
    parameter: str | None,
    off: str | None,
    on: str | None,
) -> None:
    """Without pg_create_subscription the flavor's admin role is the way to subscribe; its logical
    decoding parameter off is named with the service's own fix."""
    as_postgres(
        production,
        *(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)) for role in roles),
        sql.SQL("REVOKE pg_create_subscription FROM {}").format(MIGRATOR),
    )
    try:
        if parameter is not None:
            set_parameter(production, parameter, off)
        fact = facts(production)
        assert flavor(fact) is kind
        problems = privilege_problems("target", fact)
        where = f"target ({kind.name} 17)"
        expected = [
            f"{where}: role migrator may not create the subscriptions (forward replication on the target, "
            f"reverse replication on the source): GRANT {kind.admin_role} TO migrator or GRANT "
            "pg_create_subscription TO migrator"
        ]
        if parameter is not None:
            expected.insert(
                0, f"{where}: parameter {parameter} is {off}: logical decoding is off; {kind.parameter_fix}"
            )
        assert problems == expected

        as_postgres(production, sql.SQL("GRANT {} TO {}").format(sql.Identifier(kind.admin_role), MIGRATOR))
        if parameter is not None:
            set_parameter(production, parameter, on)
        assert privilege_problems("target", facts(production)) == []
    finally:
        if parameter is not None:
            set_parameter(production, parameter, None)
        as_postgres(
            production,
            *(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)) for role in roles),
            sql.SQL("GRANT pg_create_subscription TO {}").format(MIGRATOR),
        )
    assert flavor(facts(production)) is PLAIN


def test_a_15_superuser_source_passes(production: LabSettings) -> None:
    """The lab's staging role on 15 is a superuser: nothing to grant."""
    fact = {**facts(production), "is_superuser": True, "server_version_num": 150010, "member_of": []}
    assert privilege_problems("source", fact) == []
    no_grants = {**fact, "is_superuser": False}
    assert "PostgreSQL 15 allows only superusers to subscribe" in privilege_problems("source", no_grants)[0]


def test_the_migrator_publishes_every_table_without_being_a_superuser(production: LabSettings) -> None:
    """FOR ALL TABLES takes a superuser; the listed publication the migration makes takes only the
    tables' owner (the migrator here, as on a managed service), and a re-run adds a newer table."""
    name = "pyairtable_privileges_test"

    def run() -> tuple[str, list[tuple[str, str]]]:
        with TARGET.connect(production) as connection, connection, connection.cursor() as cursor:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="superuser"):
                cursor.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(name)))
            connection.rollback()
            action = ensure_publication(cursor, name)
            cursor.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2",
                (name,),
            )
            listed = [(row[0], row[1]) for row in cursor.fetchall()]
        connection.close()
        return action, listed

    try:
        assert run() == ("created", [("public", "bases")])
        with TARGET.connect(production) as connection, connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE public.invoices (id bigint PRIMARY KEY)")
        connection.close()
        assert run() == ("added public.invoices", [("public", "bases"), ("public", "invoices")])
        assert run()[0] == "verified"
    finally:
        as_postgres(production, f"DROP PUBLICATION IF EXISTS {name}", "DROP TABLE IF EXISTS public.invoices")
