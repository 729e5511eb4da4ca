"""PgBouncer's admin console, and the [databases] line that says where a pooled database goes.

The admin connection is an ordinary `postgres` connection to PgBouncer's virtual database
(`pgbouncer` unless the connection names another) as an `admin_users` user. Its extra names the
ini file (`ini_path`) PgBouncer was started with: repointing a database means rewriting that one
line's host/port/dbname and RELOAD, done while the database is PAUSEd so no transaction spans it.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from pyairtable_migration.hooks.connection import ConnectionHook
from pyairtable_migration.hooks.database import APPLICATION_NAME, MigrationError

ADMIN_DATABASE = "pgbouncer"
SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
PAIR = re.compile(r"(?P<key>[A-Za-z_]+)\s*=\s*(?P<value>'(?:[^'\\]|\\.|'')*'|\S+)")


class PauseTimeout(MigrationError):
    """PAUSE did not complete in time (a transaction held a server connection)."""


@dataclass(frozen=True)
class Serving:
    """One database on one PgBouncer, now (SHOW POOLS, SERVERS, STATS)."""

    waiting: int
    logged_in: int
    transactions: int


def _rows(cursor: Any, what: str) -> list[dict[str, Any]]:
    cursor.execute(f"SHOW {what}")  # a fixed keyword, not input
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def parse_connstring(text: str) -> dict[str, str]:
    """`host=h port=5432 dbname='x y'` -> {host: h, port: 5432, dbname: x y}."""
    pairs = {}
    for match in PAIR.finditer(text):
        value = match["value"]
        if value.startswith("'") and value.endswith("'"):
            value = value[1:-1].replace("''", "'").replace("\\'", "'")
        pairs[match["key"]] = value
    return pairs


def format_connstring(pairs: dict[str, str]) -> str:
    def quote(value: str) -> str:
        return value if re.fullmatch(r"[A-Za-z0-9_.:/-]+", value) else "'" + value.replace("'", "''") + "'"

    return " ".join(f"{key}={quote(value)}" for key, value in pairs.items())


class PgBouncerHook(ConnectionHook):
    """The admin console of one PgBouncer (PAUSE, RESUME, RELOAD, SHOW) and its ini file.

    :param conn_id: `postgres` connection to the admin console; extra `ini_path`
    """

    conn_type = "postgres"
    hook_name = "PgBouncer admin console"

    def describe(self) -> str:
        connection = self._connection
        port, database = connection.port or 6432, connection.schema or ADMIN_DATABASE
        return f"{connection.login}@{connection.host}:{port}/{database}"

    def _console_arguments(self, timeout: int) -> dict[str, Any]:
        connection = self._connection
        return {
            "host": connection.host,
            "port": int(connection.port or 6432),
            "user": connection.login,
            "password": connection.password,
            "dbname": connection.schema or ADMIN_DATABASE,
            "connect_timeout": timeout,
            "application_name": APPLICATION_NAME,
        }

    def console(self, timeout: int = 5) -> psycopg2.extensions.connection:
        console = psycopg2.connect(**self._console_arguments(timeout))
        console.autocommit = True
        return console

    def _show(self, what: str) -> list[dict[str, Any]]:
        console = self.console()
        try:
            with console.cursor() as cursor:
                return _rows(cursor, what)
        finally:
            console.close()

    def version(self) -> str:
        console = self.console()
        try:
            with console.cursor() as cursor:
                cursor.execute("SHOW VERSION")
                row = cursor.fetchone()
                return str(row[0]) if row else "unknown"
        finally:
            console.close()

    def database(self, name: str) -> dict[str, Any] | None:
        """SHOW DATABASES' row for `name`: where it goes now (host, port, database) and `paused`."""
        return next((row for row in self._show("DATABASES") if row["name"] == name), None)

    def serving(self, database: str) -> Serving:
        """How `database` is being served now: clients waiting for a server connection, server
        connections logged in (a login in progress shows as `new`), transactions served so far."""
        console = self.console()
        try:
            with console.cursor() as cursor:
                rows = {what: _rows(cursor, what) for what in ("POOLS", "SERVERS", "STATS")}
        finally:
            console.close()
        return Serving(
            waiting=sum(int(row["cl_waiting"]) for row in rows["POOLS"] if row["database"] == database),
            logged_in=sum(
                1 for row in rows["SERVERS"] if row["database"] == database and row["state"] != "new"
            ),
            transactions=sum(
                int(row["total_xact_count"]) for row in rows["STATS"] if row["database"] == database
            ),
        )

    def login_roles(self, database: str) -> list[str]:
        """The roles PgBouncer logs in to `database`'s server as: the ini line's `user` when it sets
        one, else each connected client's own (SHOW POOLS: only clients seen since it started)."""
        forced = self.configured(database).get("user")
        if forced:
            return [forced]
        return sorted({str(row["user"]) for row in self._show("POOLS") if row["database"] == database})

    def setting(self, key: str) -> str | None:
        return next((str(row["value"]) for row in self._show("CONFIG") if row["key"] == key), None)

    def _command(self, verb: str, database: str | None = None) -> None:
        console = self.console()
        try:
            with console.cursor() as cursor:
                if database is None:
                    cursor.execute(verb)
                else:
                    cursor.execute(sql.SQL(verb + " {}").format(sql.Identifier(database)))
        finally:
            console.close()

    def pause(self, database: str, timeout: float) -> float:
        """PAUSE `database`: returns once no transaction holds a server connection (seconds taken).

        PAUSE waits for running transactions to end; past `timeout` the pause is withdrawn
        (RESUME) and PauseTimeout raised, so writers never stay frozen behind a stuck transaction.
        The command runs on an asynchronous connection, so waiting for it never blocks a thread
        that would then have to be interrupted.
        """
        started = time.monotonic()
        deadline = started + timeout
        console = psycopg2.connect(
            **self._console_arguments(max(1, int(timeout))),
            async_=True,
        )
        try:
            _wait(console, deadline, "connecting to the admin console")
            cursor = console.cursor()
            cursor.execute(sql.SQL("PAUSE {}").format(sql.Identifier(database)))
            _wait(console, deadline, f"PAUSE {database}")
        except TimeoutError:
            with contextlib.suppress(psycopg2.Error):
                self.resume(database)
            raise PauseTimeout(
                f"PAUSE {database} on {self.describe()} did not complete within {timeout:.1f} s (a "
                "transaction kept a server connection busy); the pause was withdrawn (RESUME)"
            ) from None
        except psycopg2.Error as exc:
            with contextlib.suppress(psycopg2.Error):
                self.resume(database)
            raise MigrationError(f"PAUSE {database} on {self.describe()} failed: {exc}") from None
        finally:
            with contextlib.suppress(psycopg2.Error):
                console.close()
        return time.monotonic() - started

    def resume(self, database: str) -> bool:
        """RESUME `database` if it is paused; True when it was."""
        state = self.database(database)
        if state is None or not state.get("paused"):
            return False
        self._command("RESUME", database)
        return True

    def reload(self) -> None:
        self._command("RELOAD")

    # --- the ini file -------------------------------------------------------------------------

    def ini_path(self) -> Path:
        path = self._connection.extra_dejson.get("ini_path")
        if not path:
            raise MigrationError(
                f"PgBouncer connection {self.conn_id} has no `ini_path` in its extra: the switchover "
                "repoints writers by rewriting that file's [databases] line"
            )
        return Path(path)

    def _database_line(self, lines: list[str], database: str) -> int | None:
        section = None
        for index, line in enumerate(lines):
            header = SECTION.match(line)
            if header:
                section = header["name"].strip().lower()
                continue
            if section != "databases" or line.lstrip().startswith((";", "#")) or "=" not in line:
                continue
            name = line.split("=", 1)[0].strip().strip('"')
            if name == database:
                return index
        return None

    def configured(self, database: str) -> dict[str, str]:
        """The ini's connect string for `database` (host, port, dbname, ...)."""
        lines = self.ini_path().read_text().splitlines()
        index = self._database_line(lines, database)
        if index is None:
            raise MigrationError(f"{self.ini_path()} has no line for database {database} under [databases]")
        return parse_connstring(lines[index].split("=", 1)[1])

    def point(self, database: str, host: str, port: int, dbname: str) -> bool:
        """Rewrite `database`'s line to host/port/dbname (other settings kept) and RELOAD.

        Compare-and-set: nothing is written when the line already says so. The file keeps its
        owner and mode and is replaced atomically. Returns True when it changed.
        """
        path = self.ini_path()
        text = path.read_text()
        lines = text.splitlines()
        index = self._database_line(lines, database)
        if index is None:
            raise MigrationError(f"{path} has no line for database {database} under [databases]")
        key, value = lines[index].split("=", 1)
        pairs = parse_connstring(value)
        wanted = {**pairs, "host": host, "port": str(port), "dbname": dbname}
        if pairs == wanted:
            return False
        lines[index] = f"{key.rstrip()} = {format_connstring(wanted)}"
        stat = path.stat()
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write("\n".join(lines) + ("\n" if text.endswith("\n") else ""))
            os.chmod(temporary, stat.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):
                os.chown(temporary, stat.st_uid, stat.st_gid)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self.reload()
        return True


def _wait(connection: psycopg2.extensions.connection, deadline: float, what: str) -> None:
    """Drive an asynchronous psycopg2 connection until its operation is done, or the deadline."""
    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(what)
        if state == psycopg2.extensions.POLL_READ:
            select.select([connection.fileno()], [], [], remaining)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [connection.fileno()], [], remaining)
