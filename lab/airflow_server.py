"""Airflow itself (api-server, scheduler, dag-processor, triggerer) serving this project, pointed at a lab.

`make airflow` runs `python -m lab.airflow_server` for people; the browser test and the fault drills
use `AirflowServer` to drive real runs through the REST API: trigger, watch, clear, and find a
task's process to kill. Runs `airflow standalone` (LocalExecutor, SQLite metadata database) in
its own AIRFLOW_HOME, with the lab's connections and config in its environment.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.connections import connections_path
from lab.migration_config import CONFIG_ENV, lab_config_path
from lab.settings import REPO_ROOT, LabSettings
from pyairtable_migration.airflow_rest import AirflowClient, AirflowError

ADMIN = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


def airflow_environment(settings: LabSettings, home: Path, port: int) -> dict[str, str]:
    """The process environment: this project's folders, the lab's connections and config, one admin.

    Connections are read from the lab's connections file on every lookup, so a lab purged and
    brought up again (new passwords) is reached without restarting Airflow.
    """
    secrets_file = {"connections_file_path": str(connections_path(settings))}
    return {
        **os.environ,
        CONFIG_ENV: str(lab_config_path(settings)),
        "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
        "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(secrets_file),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": f"{REPO_ROOT / 'plugins'}{os.pathsep}{REPO_ROOT}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        # "Ready to trigger": a run starts when triggered, without unpausing first.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # The task supervisor may notice its task exited only after min_heartbeat_interval (5 s by
        # default); a task that deferred meanwhile has its trigger fire first and the scheduler fails
        # it ("finished with state success, but ... queued", apache/airflow#66374). The lab's
        # second-long waits hit it; at 1 s the window stays shorter than they are.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
    }


class AirflowServer(AirflowClient):
    """`airflow standalone` in a process group of its own; its REST client (`AirflowClient`, the
    command line's) logs in as the admin with the password Airflow generated."""

    def __init__(self, settings: LabSettings, home: Path, port: int = 8080) -> None:
        super().__init__(f"http://localhost:{port}", ADMIN)
        self.settings, self.home, self.port = settings, home, port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.home / "standalone.log"

    def start(self, timeout: float = 240) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / PASSWORDS_FILE).unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "airflow"), "standalone"],
                env=airflow_environment(self.settings, self.home, self.port),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AirflowError(f"airflow standalone exited ({code}):\n{self.log_tail()}")
            if self.healthy() and (self.home / PASSWORDS_FILE).is_file() and self.dags_parsed():
                return
            time.sleep(1)
        self.stop()
        raise AirflowError(f"Airflow did not come up within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def password(self) -> str:
        return str(json.loads((self.home / PASSWORDS_FILE).read_text())[ADMIN])


def task_process(ti_id: str) -> int | None:
    """The pid of a running task's own process (the task runner titles itself `airflow worker -- <ti id>`)."""
    wanted = f"airflow worker -- {ti_id}"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if command == wanted:
            return int(entry.name)
    return None


@contextmanager
def running_airflow(settings: LabSettings, home: Path, port: int = 8080) -> Iterator[AirflowServer]:
    server = AirflowServer(settings, home, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.airflow_server", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    args = parser.parse_args(argv)
    settings = LabSettings.from_env()
    home = Path(os.environ.get("AIRFLOW_HOME", REPO_ROOT / ".airflow"))
    print(f"starting Airflow (log: {home / 'standalone.log'}) ...", flush=True)
    try:
        with running_airflow(settings, home, args.port) as server:
            print(f"Airflow UI: {server.url}   login: {ADMIN} / {server.password}")
            print("DAGs: pyairtable_production_migration, pyairtable_production_rollback (Ctrl-C stops)")
            print(f"Against the lab: its connections, config {lab_config_path(settings)}")
            print(
                "Trigger with mode=apply to migrate the lab; `make status CONNECTIONS=lab` shows what is "
                "in place."
            )
            sys.stdout.flush()
            for error in server.import_errors():
                print(f"import error in {error.get('filename')}: {error.get('stack_trace')}", file=sys.stderr)
            assert server.process is not None
            return server.process.wait()
    except KeyboardInterrupt:
        return 0
    except AirflowError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
