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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from lab.connections import connections_path
from lab.migration_config import CONFIG_ENV, lab_config_path
from lab.settings import REPO_ROOT, LabSettings

ADMIN = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


class AirflowError(RuntimeError):
    pass


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


class AirflowServer:
    """`airflow standalone` in a process group of its own, and a REST client for it."""

    def __init__(self, settings: LabSettings, home: Path, port: int = 8080) -> None:
        self.settings, self.home, self.port = settings, home, port
        self.url = f"http://localhost:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._token: str | None = None

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

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).ok
        except requests.RequestException:
            return False

    @property
    def password(self) -> str:
        return str(json.loads((self.home / PASSWORDS_FILE).read_text())[ADMIN])

    # --- REST API ------------------------------------------------------------------------------

    def token(self) -> str:
        if self._token is None:
            answer = requests.post(
                f"{self.url}/auth/token", json={"username": ADMIN, "password": self.password}, timeout=10
            )
            answer.raise_for_status()
            self._token = str(answer.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(
            method,
            f"{self.url}/api/v2/{path}",
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=60,
            **kwargs,
        )
        if not answer.ok:
            raise AirflowError(f"{method} {path}: {answer.status_code} {answer.text[:500]}")
        return answer.json() if answer.content else None

    def dags_parsed(self) -> bool:
        try:
            listed = self.api("GET", "dags")
        except (requests.RequestException, AirflowError):
            return False
        return bool(listed["dags"])

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.api("GET", "importErrors")["import_errors"])

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> str:
        run = self.api("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf)})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        listed = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return {ti["task_id"]: ti for ti in listed["task_instances"]}

    def tries(self, dag_id: str, run_id: str, task_id: str) -> dict[int, str]:
        """Each attempt of a task and the state it ended in (or is in)."""
        listed = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        return {int(t["try_number"]): str(t["state"]) for t in listed["task_instances"]}

    def failures(self, dag_id: str, run_id: str, lines: int = 15) -> dict[str, str]:
        """Each failed task of a run and the end of its last attempt's log: what a test reports."""
        found = {}
        for task_id, ti in self.task_instances(dag_id, run_id).items():
            if ti["state"] != "failed":
                continue
            path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{ti['try_number']}"
            try:
                content = self.api("GET", path, params={"full_content": True})["content"]
            except (requests.RequestException, AirflowError) as exc:
                found[task_id] = f"(log unreadable: {exc})"
                continue
            events = [entry.get("event", "") if isinstance(entry, dict) else str(entry) for entry in content]
            found[task_id] = "\n".join(str(event) for event in events[-lines:])
        return found

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[str]:
        """What the UI's Clear (with downstream) does: the tasks and everything after them run again."""
        cleared = self.api(
            "POST",
            f"dags/{dag_id}/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": task_ids,
                "only_failed": False,
                "include_downstream": True,
                "reset_dag_runs": True,
            },
        )
        return sorted(ti["task_id"] for ti in cleared["task_instances"])

    def wait(self, what: str, check: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
        """Poll `check` until it returns something truthy; fail naming `what`.

        A poll the api-server does not answer in time (a busy machine) is a poll without an
        answer, not the end of the wait; the last such error is named if the wait runs out.
        """
        deadline = time.monotonic() + timeout
        unanswered: requests.RequestException | None = None
        while time.monotonic() < deadline:
            try:
                result = check()
            except requests.RequestException as exc:
                unanswered, result = exc, None
            if result:
                return result
            time.sleep(poll)
        last = f" (last unanswered poll: {unanswered})" if unanswered else ""
        raise AirflowError(f"timed out after {timeout:.0f} s waiting for {what}{last}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> str:
        """Wait until the run ends; returns its state."""
        return str(
            self.wait(
                f"run {run_id} of {dag_id} to end",
                lambda: (state := self.run_state(dag_id, run_id)) in ("success", "failed") and state,
                timeout,
                poll=2,
            )
        )


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
            print("Trigger with mode=apply to migrate the lab; `make status` shows what is in place.")
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
