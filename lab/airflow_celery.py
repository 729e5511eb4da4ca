"""Airflow deployed as docker-compose.yaml deploys it, as local processes: the CeleryExecutor with a
Redis broker, a PostgreSQL metadata database, api-server, scheduler, dag-processor, triggerer, two
Celery workers, and a worker beside each pooler that names a queue in the migration config.

`airflow_settings()` is the one place for the settings every component shares: docker-compose.yaml's
`x-airflow-common` environment must equal it for the compose deployment (tests/unit/test_compose.py),
and `CeleryAirflow` starts its processes with it for this machine. `make airflow-celery` runs it
against the lab; the real_airflow tests (tests/airflow_lab.py) share one, and tests/drills migrates a lab
through it with a worker SIGKILLed mid-run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import redis
import yaml
from psycopg2 import sql

from lab.airflow_server import ADMIN, PASSWORDS_FILE, AirflowError, AirflowServer, airflow_environment
from lab.migration_config import lab_config_path
from lab.processes import (
    Binary,
    Component,
    LabError,
    apt_hint,
    run_as_service,
    service_dir,
    start_detached,
    wait_until_answers,
    write_private,
)
from lab.redis_lab import answers_ping
from lab.settings import REPO_ROOT, LabSettings, free_ports

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
METADATA_ROLE = METADATA_DATABASE = "airflow"
DEFAULT_QUEUE = "default"
# Set per process: the name `component_hostname` gives Airflow, so a task instance records which
# worker ran it (every process here shares one machine name).
NAME_VARIABLE = "PYAIRTABLE_AIRFLOW_COMPONENT"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class Deployment:
    """What two deployments of the same Airflow differ in: addresses, secrets, folders, auth manager."""

    metadata_database: str  # host:port of PostgreSQL
    metadata_password: str
    broker: str  # host:port of Redis
    broker_password: str
    api_server: str  # base URL of the api-server, as the workers and the triggerer reach it
    fernet_key: str
    jwt_secret: str
    api_secret_key: str
    airflow_root: str  # holds dags/ and plugins/
    auth_manager: str


def airflow_settings(deployment: Deployment) -> dict[str, str]:
    """The environment every Airflow component of a Celery deployment shares."""
    database = f"{METADATA_ROLE}:{deployment.metadata_password}@{deployment.metadata_database}"
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": deployment.auth_manager,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{database}/{METADATA_DATABASE}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{database}/{METADATA_DATABASE}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{deployment.broker_password}@{deployment.broker}/0",
        "AIRFLOW__CORE__FERNET_KEY": deployment.fernet_key,
        "AIRFLOW__API_AUTH__JWT_SECRET": deployment.jwt_secret,
        "AIRFLOW__API__SECRET_KEY": deployment.api_secret_key,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{deployment.api_server}/execution/",
        "AIRFLOW__CORE__DAGS_FOLDER": f"{deployment.airflow_root}/dags",
        "AIRFLOW__CORE__PLUGINS_FOLDER": f"{deployment.airflow_root}/plugins",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
        # A worker may notice its task exited only after this many seconds (default 5); a task that
        # deferred meanwhile can have its trigger fire first and be failed (apache/airflow#66374).
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        # Each Celery worker imports the project's modules once; the task processes it forks inherit them.
        "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps(
            {"imports": ["pyairtable_migration.worker_preload"]}
        ),
    }


def _from_env_file(variable: str) -> str:
    return f"${{{variable}:?set {variable} in .env (see .env.example)}}"


# docker-compose.yaml: services by name, every secret a required variable of .env.
COMPOSE = Deployment(
    metadata_database="postgres:5432",
    metadata_password=_from_env_file("POSTGRES_PASSWORD"),
    broker="redis:6379",
    broker_password=_from_env_file("REDIS_PASSWORD"),
    api_server="http://airflow-apiserver:8080",
    fernet_key=_from_env_file("AIRFLOW_FERNET_KEY"),
    jwt_secret=_from_env_file("AIRFLOW_JWT_SECRET"),
    api_secret_key=_from_env_file("AIRFLOW_API_SECRET_KEY"),
    airflow_root="/opt/airflow",
    auth_manager=FAB_AUTH_MANAGER,
)

# This machine only, beside the shared settings: no port may be one another Airflow here holds, and
# a lost worker's task is failed (then retried) after 30 s without a heartbeat instead of 300 s.
LOCAL_ONLY = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "lab.airflow_celery.component_hostname",
}


def component_hostname() -> str:
    """The hostname Airflow records (`[core] hostname_callable`): the component's name when set."""
    return os.environ.get(NAME_VARIABLE) or socket.getfqdn()


@dataclass(frozen=True)
class Worker:
    name: str
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    concurrency: int = 8


DEFAULT_WORKERS = (Worker("worker-1"), Worker("worker-2"))


def pooler_queues(config_path: Path) -> dict[str, str]:
    """Each pooler's queue as the migration config names it (Airflow's default queue otherwise)."""
    poolers = yaml.safe_load(config_path.read_text())["database"]["poolers"]
    return {str(pooler["name"]): str(pooler.get("queue") or DEFAULT_QUEUE) for pooler in poolers}


def pooler_workers(config_path: Path) -> list[Worker]:
    """A worker beside each pooler whose tasks the migration config sends to a queue of its own.

    Here every process shares the poolers' filesystem; in a real deployment this worker runs on the
    pooler's host or in its pod, sharing the config volume (docker-compose.yaml shows one).
    """
    queues = sorted(set(pooler_queues(config_path).values()) - {DEFAULT_QUEUE})
    return [Worker(f"worker-{queue}", (queue,), concurrency=2) for queue in queues]


# --- the metadata database and the broker ---------------------------------------------------------


class MetadataDatabase(Component):
    """PostgreSQL 15 as the lab runs it (scram-sha-256 on loopback), database and owner `airflow`."""

    name = "airflow-postgres"
    binary = Binary(PG_BIN / "postgres", apt_hint("postgresql-15"))
    runs_as_service_user = True

    scheme, address_path = "postgresql", f"/{METADATA_DATABASE}"

    def __init__(self, port: int, password: str) -> None:
        self._port, self.password = port, password

    def port(self, settings: LabSettings) -> int:
        return self._port

    def data_path(self, settings: LabSettings) -> Path:
        return settings.data_dir / "postgres"

    def command(self, settings: LabSettings) -> list[str]:
        return [
            str(self.binary.path),
            *("-D", str(self.data_path(settings)), "-p", str(self._port)),
            *("-k", str(self.data_path(settings)), "-c", f"listen_addresses={settings.host}"),
            *("-c", "max_connections=200", "-c", "fsync=off"),
        ]

    def prepare(self, settings: LabSettings) -> None:
        data = self.data_path(settings)
        if (data / "PG_VERSION").exists():
            return
        service_dir(data)
        password_file = settings.data_dir / "metadata-password"
        write_private(password_file, self.password, for_service=True)
        try:
            run_as_service(
                [
                    PG_BIN / "initdb",
                    *("-D", data, "-U", METADATA_ROLE, f"--pwfile={password_file}"),
                    *("--auth-local=scram-sha-256", "--auth-host=scram-sha-256"),
                    *("--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"),
                ],
                timeout=120,
            )
        finally:
            password_file.unlink(missing_ok=True)

    def connect(self, settings: LabSettings, database: str, timeout: int = 5) -> Any:
        return psycopg2.connect(
            host=settings.host,
            port=self._port,
            user=METADATA_ROLE,
            password=self.password,
            dbname=database,
            connect_timeout=timeout,
        )

    def probe(self, settings: LabSettings) -> bool:
        try:
            self.connect(settings, "postgres", timeout=1).close()
            return True
        except psycopg2.Error:
            return False

    def create_database(self, settings: LabSettings) -> None:
        connection = self.connect(settings, "postgres")
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (METADATA_DATABASE,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(METADATA_DATABASE)))
        finally:
            connection.close()


class Broker(Component):
    """redis-server with a password, as the compose file's `redis` service requires one."""

    name = "airflow-redis"
    binary = Binary(Path("/usr/bin/redis-server"), apt_hint("redis-server"))

    scheme, address_path = "redis", "/0"

    def __init__(self, port: int, password: str) -> None:
        self._port, self.password = port, password

    def port(self, settings: LabSettings) -> int:
        return self._port

    def command(self, settings: LabSettings) -> list[str]:
        return [
            str(self.binary.path),
            *("--port", str(self._port), "--bind", settings.host, "--save", "", "--appendonly", "no"),
            *("--include", str(self.config_path(settings))),
        ]

    def config_path(self, settings: LabSettings) -> Path:
        return settings.data_dir / "redis.conf"

    def prepare(self, settings: LabSettings) -> None:
        # In a file (0600), not on the command line, where every user's `ps` would show it.
        write_private(self.config_path(settings), f"requirepass {self.password}\n")

    def probe(self, settings: LabSettings) -> bool:
        return answers_ping(
            redis.Redis(host=settings.host, port=self._port, password=self.password, socket_timeout=1)
        )


# --- the deployment -------------------------------------------------------------------------------


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class CeleryAirflow(AirflowServer):
    """The Celery deployment's processes, each in a session of its own, with AirflowServer's REST client.

    Everything lives in `home`: the metadata cluster, the broker's config, secrets (0600), and one
    log per component under logs/.
    """

    def __init__(
        self, settings: LabSettings, home: Path, port: int = 8080, workers: Sequence[Worker] = DEFAULT_WORKERS
    ) -> None:
        super().__init__(settings, home, port)
        self.workers = list(workers)
        self.processes: dict[str, Started] = {}
        self._services: list[tuple[Component, int]] = []
        self._environment: dict[str, str] = {}
        # A lab of its own for start_detached: its data directory is this home.
        self._local = replace(LabSettings(), host=settings.host, data_dir=home)

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / "api-server.log"

    def deployment(self, metadata_port: int, broker_port: int) -> Deployment:
        keys = self._secrets()
        return Deployment(
            metadata_database=f"{self.settings.host}:{metadata_port}",
            metadata_password=keys["metadata_password"],
            broker=f"{self.settings.host}:{broker_port}",
            broker_password=keys["broker_password"],
            api_server=f"http://localhost:{self.port}",
            fernet_key=keys["fernet_key"],
            jwt_secret=keys["jwt_secret"],
            api_secret_key=keys["api_secret_key"],
            airflow_root=str(REPO_ROOT),
            auth_manager=SIMPLE_AUTH_MANAGER,
        )

    def _secrets(self) -> dict[str, str]:
        path = self.home / "secrets.yaml"
        if path.exists():
            return dict(yaml.safe_load(path.read_text()))
        keys = {
            "metadata_password": secrets.token_hex(16),
            "broker_password": secrets.token_hex(16),
            "fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "jwt_secret": secrets.token_hex(32),
            "api_secret_key": secrets.token_hex(32),
        }
        write_private(path, yaml.safe_dump(keys))
        return keys

    def environment(self, deployment: Deployment, health_port: int) -> dict[str, str]:
        return {
            **airflow_environment(self.settings, self.home, self.port),
            **airflow_settings(deployment),
            **LOCAL_ONLY,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(health_port),
        }

    def start(self, timeout: float = 300) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o755)  # the metadata cluster runs as the `postgres` OS user when we are root
        (self.home / PASSWORDS_FILE).unlink(missing_ok=True)
        metadata_port, broker_port, health_port = free_ports(3)
        deployment = self.deployment(metadata_port, broker_port)
        deadline = time.monotonic() + timeout
        try:
            metadata = MetadataDatabase(metadata_port, deployment.metadata_password)
            for service in (metadata, Broker(broker_port, deployment.broker_password)):
                service.prepare(self._local)
                process = start_detached(service, self._local)
                self._services.append((service, process.pid))
                wait_until_answers(service, self._local, process)
            metadata.create_database(self._local)
            environment = self._environment = self.environment(deployment, health_port)
            migrate = subprocess.run(
                [self.airflow, "db", "migrate"],
                env=environment,
                capture_output=True,
                timeout=300,
                check=False,
            )
            if migrate.returncode != 0:
                failure = migrate.stderr.decode(errors="replace")[-3000:]
                raise AirflowError(f"airflow db migrate failed:\n{failure}")
            for name, argv in self.commands():
                self._start(name, argv, environment)
            self._wait_until_up(deadline)
        except BaseException:
            self.stop()
            raise

    @property
    def airflow(self) -> str:
        return str(Path(sys.executable).parent / "airflow")

    def commands(self) -> list[tuple[str, list[str]]]:
        """Each component's command line, as docker-compose.yaml's services run them."""
        found = [
            (
                "api-server",
                [self.airflow, "api-server", "--host", self.settings.host, "--port", str(self.port)],
            ),
            ("scheduler", [self.airflow, "scheduler"]),
            ("dag-processor", [self.airflow, "dag-processor"]),
            ("triggerer", [self.airflow, "triggerer"]),
        ]
        for worker in self.workers:
            # No log server: every process shares this home's logs/ folder, as the compose
            # services share a volume, so the api-server reads task logs from there.
            found.append(
                (
                    worker.name,
                    [
                        *(self.airflow, "celery", "worker", "--skip-serve-logs"),
                        *("--queues", ",".join(worker.queues), "--concurrency", str(worker.concurrency)),
                        *("--celery-hostname", f"{worker.name}@%h"),
                    ],
                )
            )
        return found

    def _start(self, name: str, argv: list[str], environment: Mapping[str, str]) -> None:
        log = self.home / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            process = subprocess.Popen(
                argv,
                env={**environment, NAME_VARIABLE: name},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.home,
            )
        self.processes[name] = Started(name, process, log)
        if name == "api-server":
            self.process = process

    def _wait_until_up(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            for started in self.processes.values():
                if started.process.poll() is not None:
                    code, tail = started.process.returncode, self.log_tail(name=started.name)
                    raise AirflowError(f"{started.name} exited ({code}):\n{tail}")
            if (
                self.healthy()
                and (self.home / PASSWORDS_FILE).is_file()
                and all(self.worker_ready(worker.name) for worker in self.workers)
                and self.dags_parsed()
            ):
                return
            time.sleep(1)
        raise AirflowError(f"the Celery deployment did not come up in time:\n{self.log_tail()}")

    def worker_ready(self, name: str, since: int = 0) -> bool:
        """Celery prints `<name>@<host> ready.` once it consumes its queues (in the log past `since`)."""
        log = self.processes[name].log
        if not log.exists():
            return False
        with log.open("rb") as output:
            output.seek(since)
            text = output.read().decode(errors="replace")
        return f"{name}@" in text and " ready." in text

    def log_tail(self, lines: int = 30, name: str = "api-server") -> str:
        started = self.processes.get(name)
        if started is None or not started.log.exists():
            return ""
        return "\n".join(started.log.read_text(errors="replace").splitlines()[-lines:])

    def worker_running(self, pid: int) -> str | None:
        """The worker whose process tree holds `pid` (a task's process), if any."""
        try:
            ancestors = {process.pid for process in psutil.Process(pid).parents()}
        except psutil.Error:
            return None
        return next(
            (name for name, started in self.processes.items() if started.process.pid in ancestors), None
        )

    def kill(self, name: str) -> None:
        """SIGKILL a component with every process of its session (a worker's pool and task processes)."""
        started = self.processes[name]
        os.killpg(started.process.pid, signal.SIGKILL)
        started.process.wait(timeout=30)

    def restart(self, name: str, timeout: float = 120) -> None:
        """Start a killed component again, as a container's restart policy would; a worker is back once
        it consumes its queues again."""
        started = self.processes[name]
        if started.process.poll() is None:
            raise AirflowError(f"{name} is running: only a stopped component restarts")
        since = started.log.stat().st_size if started.log.exists() else 0
        self._start(name, dict(self.commands())[name], self._environment)
        if any(worker.name == name for worker in self.workers):
            self.wait(f"{name} to consume its queues again", lambda: self.worker_ready(name, since), timeout)

    def stop(self) -> None:
        for started in reversed(list(self.processes.values())):
            if started.process.poll() is None:
                os.killpg(started.process.pid, signal.SIGTERM)
        for started in self.processes.values():
            try:
                started.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(started.process.pid, signal.SIGKILL)
                started.process.wait()
        for service, pid in reversed(self._services):
            service.stop(self._local, pid)
        self._services.clear()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.airflow_celery", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    args = parser.parse_args(argv)
    settings = LabSettings.from_env()
    home = REPO_ROOT / ".airflow" / "celery"
    workers = [*DEFAULT_WORKERS, *pooler_workers(lab_config_path(settings))]
    server = CeleryAirflow(settings, home, args.port, workers)
    print(f"starting the Celery deployment in {home} (logs: {home / 'logs'}) ...", flush=True)
    try:
        server.start()
        print(f"Airflow UI: {server.url}   login: {ADMIN} / {server.password}")
        print(f"components: {', '.join(server.processes)} (Ctrl-C stops all)")
        for worker in server.workers:
            print(f"  {worker.name} serves queue(s) {', '.join(worker.queues)}")
        print(f"Against the lab: its connections, config {lab_config_path(settings)}", flush=True)
        assert server.process is not None
        return server.process.wait()
    except KeyboardInterrupt:
        return 0
    except (AirflowError, LabError) as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
