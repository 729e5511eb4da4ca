"""Helpers for the services tests: the emulator's connection, and running one task as Airflow would."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import TaskDeferred
from kubernetes import client, config

from lab.settings import free_ports
from pyairtable_migration.operators.bluegreen import (
    BlueGreenDeployOperator,
    BlueGreenPromoteOperator,
    BlueGreenRetireOperator,
    BlueGreenRollbackOperator,
    BlueGreenRolloutOperator,
    BlueGreenSmokeTestOperator,
)

CONN_ID = "pyairtable_kubernetes"
CONN_ENV = f"AIRFLOW_CONN_{CONN_ID.upper()}"


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig without credentials, as the lab writes one."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "lab", "cluster": {"server": server}}],
                "users": [{"name": "lab", "user": {}}],
                "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
                "current-context": "lab",
            }
        )
    )
    return path


def emulator_client(server: str, directory: Path) -> client.ApiClient:
    """A client for the API server at `server`, built from a kubeconfig file written in `directory`,
    the way the Airflow connection builds one."""
    kubeconfig = write_kubeconfig(directory / "config", server)
    return config.new_client_from_config(config_file=str(kubeconfig))


def kubernetes_connection(kubeconfig: Path) -> str:
    """The Airflow connection (JSON form of AIRFLOW_CONN_*) for a kubeconfig file."""
    return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}})


def run_task(operator: BaseOperator, mode: str = "apply") -> Any:
    """execute(), and on a deferral run the trigger to its first event and resume, as Airflow does."""
    context: Any = {"params": {"mode": mode}}
    try:
        return operator.execute(context)
    except TaskDeferred as deferred:
        event = asyncio.run(_first_event(deferred.trigger))
        method = getattr(operator, deferred.method_name)
        return method(context, event=event, **(deferred.kwargs or {}))


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


@dataclass
class BlueGreenService:
    """One service's tasks, built as the plan builds them, runnable one at a time."""

    namespace: str
    name: str = "web"
    replicas: int = 2
    slo_class: str = "business"
    slo_ms: float = 500
    smoke_requests: int = 5
    rollback_window_seconds: float = 0.5
    progress_deadline_seconds: int = 30
    secret: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def image(self, version: str) -> str:
        return f"ghcr.io/pyairtable/{self.name}:{version}"

    def arguments(self, version: str) -> dict[str, Any]:
        return {
            "kubernetes_conn_id": CONN_ID,
            "namespace": self.namespace,
            "service_name": self.name,
            "image": self.image(version),
            "replicas": self.replicas,
            "health_path": "/health",
            "service_secret": self.secret,
            "progress_deadline_seconds": self.progress_deadline_seconds,
            "dashboard_url_template": "http://dashboards.test/d?ns=$namespace&deploy=$deployment",
            **self.extra,
        }

    def deploy(self, version: str, mode: str = "apply") -> Any:
        return run_task(BlueGreenDeployOperator(task_id="deploy", **self.arguments(version)), mode)

    def wait_rollout(self, version: str, mode: str = "apply") -> Any:
        return run_task(
            BlueGreenRolloutOperator(task_id="wait_rollout", poll_seconds=0.1, **self.arguments(version)),
            mode,
        )

    def smoke_test(self, version: str, mode: str = "apply") -> Any:
        operator = BlueGreenSmokeTestOperator(
            task_id="smoke_test",
            slo_class=self.slo_class,
            slo_ms=self.slo_ms,
            requests=self.smoke_requests,
            **self.arguments(version),
        )
        return run_task(operator, mode)

    def promote(self, version: str, mode: str = "apply") -> Any:
        return run_task(BlueGreenPromoteOperator(task_id="promote", **self.arguments(version)), mode)

    def retire(self, version: str, mode: str = "apply") -> Any:
        operator = BlueGreenRetireOperator(
            task_id="retire_old_color",
            rollback_window_seconds=self.rollback_window_seconds,
            **self.arguments(version),
        )
        return run_task(operator, mode)

    def rollback(self, version: str, mode: str = "apply") -> Any:
        return run_task(
            BlueGreenRollbackOperator(task_id="rollback", poll_seconds=0.1, **self.arguments(version)), mode
        )

    def release(self, version: str, retire: bool = True) -> list[Any]:
        """Every task of the service, in the DAG's order."""
        steps: list[Callable[[str], Any]] = [self.deploy, self.wait_rollout, self.smoke_test, self.promote]
        if retire:
            steps.append(self.retire)
        return [step(version) for step in steps]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy, and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- real infrastructure for the readiness checks ------------------------------------------------


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def _wait_until(
    check: Callable[[], bool], process: subprocess.Popen[bytes], what: str, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout} s")


@contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway redis-server on a free loopback port; yields the port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until(lambda: _answers(port), process, "redis-server")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def postgres_server() -> Iterator[int]:
    """A throwaway PostgreSQL cluster (trust auth, loopback only); yields its port.

    As root it runs as the `postgres` OS user, which PostgreSQL insists on.
    """
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if initdb is None or postgres is None:
        pytest.skip("PostgreSQL is not installed")
    user = "postgres" if os.geteuid() == 0 else None
    directory = Path(tempfile.mkdtemp(prefix="services-pg-"))
    if user:
        shutil.chown(directory, user, user)
    data = directory / "data"
    port = free_port()
    subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
        user=user,
    )
    process = subprocess.Popen(
        [
            postgres,
            *("-D", str(data), "-p", str(port), "-k", str(directory)),
            *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=user,
    )
    try:
        _wait_until(lambda: _accepts_sessions(port), process, "postgres")
        yield port
    finally:
        process.send_signal(signal.SIGINT)  # fast shutdown: do not wait for clients to leave
        process.wait(timeout=20)
        shutil.rmtree(directory, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _accepts_sessions(port: int) -> bool:
    """Listening is not ready: during startup PostgreSQL accepts TCP and refuses sessions."""
    try:
        psycopg2.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
        ).close()
        return True
    except psycopg2.OperationalError:
        return False


def postgres_connection(port: int) -> str:
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": port,
            "login": "postgres",
            "schema": "postgres",
        }
    )


def redis_connection(port: int) -> str:
    return json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": port, "extra": {"db": 0}})
