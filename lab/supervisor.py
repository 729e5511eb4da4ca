"""The lab as a whole: bring it up in order, report on it, take it down, restart one part.

up(settings, scale)            start what is not running, seed what is empty; idempotent
status(settings)               [ComponentStatus(name, address, state, pid)], checked by connecting
down(settings, purge=False)    stop everything; returns what could not be stopped
start_component / stop_component / restart_component(name, settings)   for fault drills
secrets(settings)              the generated passwords
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.alert_receiver import AlertReceiver
from lab.alertmanager import Alertmanager
from lab.connections import connections, write_connections
from lab.credentials import secrets
from lab.kafka_lab import KafkaBroker
from lab.kube_seed import KubeApi
from lab.pgbouncer import PgBouncer
from lab.postgres import DEFAULT_SCALE, PostgresCluster, parse_scale
from lab.processes import (
    Component,
    LabError,
    State,
    exclusive,
    kill,
    marked_processes,
    pid_alive,
    port_holder,
    port_is_free,
    port_problems,
    rss_bytes,
    start_detached,
    terminate,
    wait_until_answers,
)
from lab.prometheus import Prometheus
from lab.redis_endpoint import RedisEndpoint
from lab.redis_lab import RedisServer
from lab.route53 import Moto
from lab.settings import LabSettings
from pyairtable_migration.config import ConfigError, load_config
from pyairtable_migration.kafka_mirror import process as mirror_process
from pyairtable_migration.postgres.copy_runner import copy_process

__all__ = [
    "DEFAULT_SCALE",
    "ComponentStatus",
    "LabError",
    "components",
    "down",
    "resources",
    "restart_component",
    "secrets",
    "seeded_records",
    "start_component",
    "status",
    "stop_component",
    "up",
]

Echo = Callable[[str], None]


def _quiet(_line: str) -> None:
    """Default echo for library callers: say nothing."""


def components() -> list[Component]:
    """Every component, in start order: each one's dependencies come before it."""
    return [
        PostgresCluster("source"),
        PostgresCluster("target"),
        PgBouncer(),
        RedisServer("source"),
        RedisServer("target"),
        RedisEndpoint(),  # routes to the source Redis until the switchover moves it
        Moto(),
        KafkaBroker("staging"),
        KafkaBroker("production"),
        KubeApi(),  # its pods connect through PgBouncer and the Redis endpoint, and to Kafka
        AlertReceiver(),
        Alertmanager(),  # notifies the alert receiver
        Prometheus(),  # discovers its targets from the Kubernetes emulator; sends alerts to Alertmanager
    ]


def component(name: str) -> Component:
    by_name = {c.name: c for c in components()}
    if name not in by_name:
        raise LabError(f"unknown lab component {name!r}; known: {', '.join(by_name)}")
    return by_name[name]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    state: str  # "up" or "down"
    pid: int | None


def _running(item: Component, settings: LabSettings, state: State) -> bool:
    pid = state.pids.get(item.name)
    return pid is not None and pid_alive(pid) and item.probe(settings)


def up(settings: LabSettings | None = None, scale: object = DEFAULT_SCALE, echo: Echo = _quiet) -> float:
    """Start every component not running and seed what is empty; returns the seconds it took.

    Everything is checked (scale, binaries, ports) before anything starts; if a component then
    fails, the ones this call started are stopped again and the error names the culprit.
    """
    settings = settings or LabSettings.from_env()
    records = parse_scale(scale)
    started_at = time.monotonic()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        connections(settings, load_config())  # a config the lab cannot serve fails before any start
    except ConfigError as exc:
        raise LabError(str(exc)) from None
    with exclusive(settings):
        state = State(settings)
        everything = components()
        running = {item.name: _running(item, settings, state) for item in everything}
        problems = []
        for item in everything:
            pid = state.pids.get(item.name)
            if running[item.name]:
                continue
            if pid is not None and pid_alive(pid):
                problems.append(
                    f"{item.name} (pid {pid}) runs but does not answer at {item.address(settings)}; "
                    f"see {item.log_path(settings)}, or `python -m lab restart {item.name}`"
                )
                running[item.name] = True  # its ports are its own, not a foreign process's
            try:
                item.binary_for(settings).require(item.name)
            except LabError as exc:
                problems.append(str(exc))
        problems += port_problems(everything, settings, running)
        if problems:
            raise LabError("cannot start the lab:\n" + "\n".join(f"  - {problem}" for problem in problems))
        secrets(settings)
        started: list[Component] = []
        try:
            for item in everything:
                began = time.monotonic()
                if running[item.name]:
                    what = f"already running (pid {state.pids[item.name]})"
                else:
                    started.append(item)  # first, so a start that fails is cleaned up too
                    _start(item, settings, state)
                    what = f"started (pid {state.pids[item.name]}) in {time.monotonic() - began:.1f} s"
                note = item.seed(settings, records, state)
                state.save()
                echo(f"{item.name:<16} {item.address(settings):<48} {what}" + (f"; {note}" if note else ""))
        except BaseException:
            for item in reversed(started):
                item.stop(settings, state.pids.pop(item.name, None))
            state.save()
            raise
        for path in write_connections(settings):
            echo(f"{'connections':<16} {path}")
    elapsed = time.monotonic() - started_at
    echo(f"lab up in {elapsed:.1f} s")
    return elapsed


def _start(item: Component, settings: LabSettings, state: State) -> None:
    item.prepare(settings)
    process = start_detached(item, settings)
    state.pids[item.name] = process.pid
    state.save()
    wait_until_answers(item, settings, process)


def status(settings: LabSettings | None = None) -> list[ComponentStatus]:
    """One entry per component; `up` only if it answers a real request."""
    settings = settings or LabSettings.from_env()
    state = State(settings)
    result = []
    for item in components():
        pid = state.pids.get(item.name)
        alive = pid is not None and pid_alive(pid)
        answers = item.probe(settings)
        result.append(
            ComponentStatus(
                item.name, item.address(settings), "up" if answers else "down", pid if alive else None
            )
        )
    return result


def resources(settings: LabSettings | None = None) -> tuple[int, int]:
    """(number of lab processes, their summed resident memory in bytes)."""
    settings = settings or LabSettings.from_env()
    processes = marked_processes(settings)
    return len(processes), rss_bytes(processes)


def seeded_records(settings: LabSettings | None = None) -> int:
    """How many rows the source's records table was seeded with (later writes come on top)."""
    return int(State(settings or LabSettings.from_env()).seed["records"])


def down(settings: LabSettings | None = None, purge: bool = False, echo: Echo = _quiet) -> list[str]:
    """Stop every lab process; returns what remains (empty when the lab is fully down)."""
    settings = settings or LabSettings.from_env()
    if settings.data_dir.exists():
        # A migration that failed after starting a Kafka mirror left it running (its state is under
        # the lab's data directory: lab/migration_config.py): it would reconnect to stopped brokers.
        for mirror in sorted((settings.data_dir / "kafka-mirror").glob("*/")):
            if mirror_process.stop(mirror):
                echo(f"{'kafka mirror':<16} stopped ({mirror.name})")
        # A parallel initial copy likewise (it would hold a snapshot, and a slot, on a stopped source).
        if copy_process(settings.data_dir / "parallel-copy").stop(timeout=10):
            echo(f"{'parallel copy':<16} stopped")
        with exclusive(settings):
            state = State(settings)
            for item in reversed(components()):
                pid = state.pids.pop(item.name, None)
                if pid is not None and pid_alive(pid):
                    item.stop(settings, pid)
                    echo(f"{item.name:<16} stopped (pid {pid})")
                elif item.name.startswith("postgres-"):
                    item.stop(settings, None)  # a postmaster the state file lost still has its pid file
            state.save()
    for process in marked_processes(settings):  # strays the state file did not know
        echo(f"{'stray':<16} stopping pid {process.pid} ({process.name()})")
        terminate(process.pid)
    remaining = _remaining(settings)
    for line in remaining:
        echo(f"still running: {line}")
    if purge and not remaining and settings.data_dir.exists():
        shutil.rmtree(settings.data_dir)
        echo(f"removed {settings.data_dir}")
    return remaining


def _remaining(settings: LabSettings) -> list[str]:
    found = [f"pid {p.pid} ({p.name()}) of this lab" for p in marked_processes(settings)]
    for item in components():
        for host, port in item.listens(settings):
            if not port_is_free(host, port):
                found.append(f"port {port} on {host} ({item.name}) held by {port_holder(host, port)}")
    return found


def start_component(name: str, settings: LabSettings | None = None) -> int:
    """Start one component if it is not running, reseeding it at the lab's scale if its data is gone
    (a restarted Redis or moto starts empty); returns its pid."""
    settings = settings or LabSettings.from_env()
    item = component(name)
    with exclusive(settings):
        state = State(settings)
        if not _running(item, settings, state):
            item.binary_for(settings).require(item.name)
            problems = port_problems([item], settings, {})
            if problems:
                raise LabError("; ".join(problems))
            _start(item, settings, state)
        item.seed(settings, int(state.seed.get("records", DEFAULT_SCALE)), state)
        state.save()
        return state.pids[item.name]


def stop_component(name: str, settings: LabSettings | None = None, crash: bool = False) -> None:
    """Stop one component gracefully, or with crash=True SIGKILL it (and its children) at once."""
    settings = settings or LabSettings.from_env()
    item = component(name)
    with exclusive(settings):
        state = State(settings)
        pid = state.pids.pop(item.name, None)
        if pid is not None and pid_alive(pid):
            if crash:
                kill(pid)
            else:
                item.stop(settings, pid)
        state.save()


def restart_component(name: str, settings: LabSettings | None = None) -> int:
    """Stop one component gracefully and start it again; returns its new pid."""
    stop_component(name, settings)
    return start_component(name, settings)
