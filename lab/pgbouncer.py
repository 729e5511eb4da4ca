"""PgBouncer in front of the SOURCE cluster: every writer (the staging pods) connects through it.

The switchover repoints writers by rewriting the one line under [databases] to the target's
host/port and issuing PAUSE / RELOAD / RESUME on the admin console. So the ini is written only
when missing: a later `up` must not undo a switchover. Its path is in the admin connection's
extra (`ini_path`). The ini holds no password and is world-readable (0644): whoever rewrites it
must keep it readable by the `postgres` OS user PgBouncer runs as. Passwords are in a plain
userlist (0600, owned by that user), so PgBouncer can log into either cluster with SCRAM.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import psycopg2

from lab.credentials import APP_ROLE, MIGRATOR_ROLE, PGBOUNCER_ADMIN, secrets
from lab.postgres import DATABASE
from lab.processes import (
    Binary,
    Component,
    apt_hint,
    own_for_service,
    write_private,
)
from lab.settings import LabSettings

ADMIN_DATABASE = "pgbouncer"

INI_TEMPLATE = """\
;; The lab's PgBouncer (written once by lab/pgbouncer.py). The switchover rewrites the
;; [databases] line to point writers at the target cluster, then RELOADs: keep it one line.
[databases]
{database} = host={host} port={source_port} dbname={database}

[pgbouncer]
listen_addr = {host}
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
admin_users = {admin}
stats_users = {admin}
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
pidfile = {pidfile}
;; No logfile: PgBouncer logs to stderr, which the lab writes to {logfile}; a logfile setting
;; would duplicate every line there, and errors in this file are reported only on stderr.
"""


def ini_path(settings: LabSettings) -> Path:
    """The config the migration edits to repoint writers."""
    return settings.data_dir / "pgbouncer" / "pgbouncer.ini"


class PgBouncer(Component):
    name = "pgbouncer"
    binary = Binary(Path("/usr/sbin/pgbouncer"), apt_hint("pgbouncer"))
    runs_as_service_user = True  # PgBouncer refuses to run as root
    scheme, address_path = "postgresql", f"/{DATABASE}"

    def port(self, settings: LabSettings) -> int:
        return settings.pgbouncer_port

    def command(self, settings: LabSettings) -> list[str]:
        return [str(self.binary.path), str(ini_path(settings))]

    def prepare(self, settings: LabSettings) -> None:
        directory = settings.data_dir / "pgbouncer"
        directory.mkdir(parents=True, exist_ok=True)
        own_for_service(directory, 0o755)  # PgBouncer writes its pidfile here
        passwords = secrets(settings)
        userlist = "".join(
            f'"{role}" "{passwords[role]}"\n' for role in (APP_ROLE, MIGRATOR_ROLE, PGBOUNCER_ADMIN)
        )
        write_private(directory / "userlist.txt", userlist, for_service=True)
        pidfile = directory / "pgbouncer.pid"
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()  # stale after a crash (SIGKILL); PgBouncer refuses to start over one
        if not ini_path(settings).exists():
            ini_path(settings).write_text(
                INI_TEMPLATE.format(
                    database=DATABASE,
                    host=settings.host,
                    source_port=settings.postgres_source_port,
                    port=settings.pgbouncer_port,
                    userlist=directory / "userlist.txt",
                    admin=PGBOUNCER_ADMIN,
                    pidfile=pidfile,
                    logfile=self.log_path(settings),
                )
            )
            own_for_service(ini_path(settings), 0o644)

    def stop(self, settings: LabSettings, pid: int | None) -> None:
        """SIGTERM (SIGKILL after the timeout), and no pidfile left behind either way."""
        super().stop(settings, pid)
        with contextlib.suppress(FileNotFoundError):
            (settings.data_dir / "pgbouncer" / "pgbouncer.pid").unlink()

    def probe(self, settings: LabSettings) -> bool:
        """`SHOW VERSION` on the admin console, logged in as the admin user."""
        try:
            connection = admin_console(settings, timeout=1)
        except psycopg2.Error:
            return False
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW VERSION")
                return cursor.fetchone() is not None
        except psycopg2.Error:
            return False
        finally:
            connection.close()


def admin_console(settings: LabSettings, timeout: int = 5) -> psycopg2.extensions.connection:
    """An autocommit connection to PgBouncer's admin console (PAUSE, RELOAD, SHOW ...)."""
    connection = psycopg2.connect(
        host=settings.host,
        port=settings.pgbouncer_port,
        user=PGBOUNCER_ADMIN,
        password=secrets(settings)[PGBOUNCER_ADMIN],
        dbname=ADMIN_DATABASE,
        connect_timeout=timeout,
    )
    connection.autocommit = True
    return connection
