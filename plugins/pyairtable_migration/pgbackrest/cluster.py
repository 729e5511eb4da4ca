"""A cluster restored from the repository, run beside production, never in its place.

It listens on 127.0.0.1 at a port of its own, with no unix socket and archiving off, so nothing
that talks to production can reach it by accident and it can never push WAL into production's
repository. Its pg_hba.conf is the project's, not production's: production's roles log in with
their passwords over TCP. It runs as the cluster's OS user in a session of its own, so it outlives
the task that started it (a point-in-time recovery is kept for the engineer to use).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

from pyairtable_migration.hooks.database import MigrationPostgresHook, fetch_one, statement
from pyairtable_migration.pgbackrest.repository import os_user, run_as
from pyairtable_migration.pgbackrest.settings import BackupSettings

LISTEN_HOST = "127.0.0.1"
PID_FILE_SECONDS = 15.0
HBA = (
    "# Written for a restored cluster: TCP on loopback with a password, nothing else.\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
)


class RestoreError(Exception):
    """A restored cluster could not be made, started or read; the message says why."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LISTEN_HOST, 0))
        return int(probe.getsockname()[1])


def log_path(data_path: Path) -> Path:
    """The server log sits beside the data directory (the restored config may not log at all)."""
    return data_path.with_name(data_path.name + ".log")


def postmaster_pid(data_path: Path) -> int | None:
    """The running postmaster's pid from its pid file; None when it is not running."""
    try:
        first = (data_path / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, PermissionError):
        return None
    if not first.isdigit():
        return None
    try:
        os.kill(int(first), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return int(first)


def log_problems(data_path: Path, lines: int = 8) -> str:
    """The server's FATAL/PANIC/ERROR lines (else its last lines), for a message."""
    try:
        text = log_path(data_path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    serious = [line for line in text if any(word in line for word in ("FATAL", "PANIC", "ERROR"))]
    return " | ".join((serious or text)[-lines:]) or "(empty server log)"


class RestoredHook(MigrationPostgresHook):
    """Production's connection (its roles and passwords were restored too), pointed at the copy."""

    def __init__(self, postgres_conn_id: str, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(postgres_conn_id, **kwargs)
        self.restored_address = (host, port)

    @functools.cached_property
    def _fields(self) -> dict[str, Any]:
        fields = dict(super()._fields)
        fields["host"], fields["port"] = self.restored_address
        fields["extra"] = {}  # production's sslmode and the like do not apply to the local copy
        return fields


class RestoredCluster:
    """A data directory pgBackRest restores into, and the server started on it."""

    def __init__(self, settings: BackupSettings, data_path: Path, port: int) -> None:
        self.settings = settings
        self.data_path = data_path
        self.port = port
        self.user = os_user(settings)
        self.bin_dir = Path(settings.pg_bin_dir)

    def hook(self) -> RestoredHook:
        return RestoredHook(self.settings.target_conn_id, LISTEN_HOST, self.port)

    @property
    def running(self) -> bool:
        return postmaster_pid(self.data_path) is not None

    def create(self) -> None:
        """An empty data directory owned by the cluster's OS user, mode 0700 (PostgreSQL insists)."""
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        self.data_path.mkdir(mode=0o700)
        self._own(self.data_path)

    def _own(self, path: Path) -> None:
        if self.user is not None:
            shutil.chown(path, self.user, self.user)

    def configure(self) -> None:
        """Our pg_hba.conf, and an empty postgresql.conf where production keeps its config elsewhere."""
        for name, text in (("pg_hba.conf", HBA), ("postgresql.conf", None)):
            path = self.data_path / name
            if text is None and path.exists():
                continue
            path.write_text(text or "")
            path.chmod(0o600)
            self._own(path)

    def start(self, options: dict[str, str]) -> None:
        """Start the server without waiting (recovery may take long); `wait_accepting` waits."""
        self.configure()
        server_options = {
            "port": str(self.port),
            "listen_addresses": LISTEN_HOST,
            "unix_socket_directories": "",
            "hba_file": str(self.data_path / "pg_hba.conf"),
            "archive_mode": "off",
            "logging_collector": "off",
            **options,
        }
        argument = " ".join(f"-c {name}='{value}'" for name, value in server_options.items())
        log = log_path(self.data_path)
        log.touch()
        self._own(log)
        done = run_as(
            [self.bin_dir / "pg_ctl", "start", "-D", self.data_path, "-l", log, "-W", "-o", argument],
            self.user,
            timeout=60,
            new_session=True,
        )
        if done.returncode != 0:
            raise RestoreError(
                f"pg_ctl start failed: {done.stderr.strip()[-500:]}; {log_problems(self.data_path)}"
            )
        # From here on, a missing pid file means the server exited (what the waits rely on).
        deadline = time.monotonic() + PID_FILE_SECONDS
        while not self.running:
            if time.monotonic() > deadline:
                raise RestoreError(f"the restored server did not start: {log_problems(self.data_path)}")
            time.sleep(0.05)

    def wait_accepting(self, timeout: float) -> dict[str, Any]:
        """Until the server accepts sessions (it reached a consistent state); its recovery state.
        Fails at once if the server exited."""
        started = time.monotonic()
        while True:
            if not self.running:
                raise RestoreError(f"the restored server stopped: {log_problems(self.data_path)}")
            try:
                return self.state()
            except Exception as exc:  # starting up, or not yet consistent
                if time.monotonic() - started > timeout:
                    raise RestoreError(
                        f"the restored server did not accept sessions within {timeout:.0f} s ({exc}); "
                        f"{log_problems(self.data_path)}"
                    ) from None
            time.sleep(0.5)

    def state(self) -> dict[str, Any]:
        with self.hook().cursor(connect_timeout=3) as cursor:
            row = fetch_one(cursor, statement("backup_recovery_state"))
        assert row is not None
        return row

    def stop(self) -> None:
        """pg_ctl stop -m fast; SIGKILL if the server will not go."""
        pid = postmaster_pid(self.data_path)
        if pid is None:
            return
        run_as(
            [self.bin_dir / "pg_ctl", "stop", "-D", self.data_path, "-m", "fast", "-w", "-t", "30"],
            self.user,
            timeout=60,
        )
        if postmaster_pid(self.data_path) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Stop it, then delete its data directory and log."""
        self.stop()
        shutil.rmtree(self.data_path, ignore_errors=True)
        log_path(self.data_path).unlink(missing_ok=True)
