"""Start, find and stop the lab's processes: the mechanics every component shares.

Each lab process runs detached in its own session, so it outlives the `python -m lab up` that
started it. Its pid goes into <data_dir>/state.json, and its environment carries a marker
(`PYAIRTABLE_LAB=<data_dir>`), so `down` finds it even when the state file is lost, and never
touches a process that belongs to another lab or to nobody's lab.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from lab.settings import LabSettings

MARKER_VARIABLE = "PYAIRTABLE_LAB"
# Set by a test session (lab/reaper.py): whose processes these are, inherited by every child.
OWNER_VARIABLE = "PYAIRTABLE_LAB_OWNER"
# <data_dir>/owners/<pid>: the owner of a component that rewrites its environment with its
# process title (redis-server, postgres), where the inherited mark cannot be read back.
OWNERS_DIR = "owners"
STOP_TIMEOUT_SECONDS = 10.0


class LabError(Exception):
    """A problem the user can act on; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class Binary:
    """An executable a component needs, and how to get it when it is missing."""

    path: Path
    install_hint: str

    def require(self, component: str) -> Path:
        if not os.access(self.path, os.X_OK):
            raise LabError(f"{component}: {self.path} is missing; {self.install_hint}")
        return self.path


def apt_hint(package: str) -> str:
    return f"install the apt package {package!r} (apt-get install {package}, or `make bootstrap` as root)"


def service_user() -> str | None:
    """The OS user for PostgreSQL and PgBouncer, which both refuse to run as root."""
    return "postgres" if os.geteuid() == 0 else None


def own_for_service(path: Path, mode: int) -> None:
    """Give a path to the service user, so postgres/pgbouncer (not root) can use it."""
    user = service_user()
    if user is not None:
        shutil.chown(path, user, user)
    path.chmod(mode)


def service_dir(path: Path) -> Path:
    """A directory owned by the service user, mode 0700 (PostgreSQL insists on that for data)."""
    path.mkdir(parents=True, exist_ok=True)
    own_for_service(path, 0o700)
    return path


def write_private(path: Path, text: str, *, for_service: bool = False) -> None:
    """Write a file that may hold passwords: mode 0600 from the start, never world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    if for_service:
        own_for_service(temporary, 0o600)
    temporary.replace(path)


def run_as_service(argv: Sequence[str | Path], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a short command (initdb, pg_ctl) as the service user; raise with its output on failure."""
    user = service_user()
    result = subprocess.run(
        [str(part) for part in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        user=user,
        group=user,
        extra_groups=[] if user else None,
        check=False,
    )
    if result.returncode != 0:
        raise LabError(f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip()}")
    return result


# --- what a component is --------------------------------------------------------------------------


class Component(ABC):
    """One lab process: how to prepare, start, probe, seed and stop it."""

    name: str
    binary: Binary
    runs_as_service_user = False
    start_timeout_seconds = 30.0
    stop_signal = signal.SIGTERM

    # Its address is `<scheme>://<host>:<port><address_path>`.
    scheme: str
    address_path = ""

    @abstractmethod
    def port(self, settings: LabSettings) -> int:
        """The port it answers on."""

    def address(self, settings: LabSettings) -> str:
        """Where it answers, as printed by `up` and `status`."""
        return f"{self.scheme}://{settings.host}:{self.port(settings)}{self.address_path}"

    def listens(self, settings: LabSettings) -> list[tuple[str, int]]:
        """Every (host, port) it binds; each must be free before it starts."""
        return [(settings.host, self.port(settings))]

    @abstractmethod
    def command(self, settings: LabSettings) -> list[str]:
        """The argv of its long-running process."""

    @abstractmethod
    def probe(self, settings: LabSettings) -> bool:
        """True when it answers a real request (not merely when its pid exists)."""

    def binary_for(self, settings: LabSettings) -> Binary:
        """The executable these settings run (a PostgreSQL cluster's depends on its major version)."""
        return self.binary

    def prepare(self, settings: LabSettings) -> None:  # noqa: B027 - an optional hook
        """Create data directories and config files; safe to repeat."""

    def seed(self, settings: LabSettings, scale: int, state: State) -> str | None:
        """Load its initial data when missing; returns a note for the `up` line."""
        return None

    def stop(self, settings: LabSettings, pid: int | None) -> None:
        """Stop gracefully (`stop_signal` to its process group), then SIGKILL after the timeout."""
        if pid is not None:
            terminate(pid, polite=self.stop_signal)

    def log_path(self, settings: LabSettings) -> Path:
        return settings.data_dir / "logs" / f"{self.name}.log"

    def environment(self, settings: LabSettings) -> dict[str, str]:
        return {}


def answers_http(url: str) -> bool:
    """An HTTP component's probe: a GET of its readiness URL answered below 400 within a second;
    refused, timed out or any other request failure means not ready yet."""
    # Imported here: the reaper's watcher imports this module at every test session's start.
    import requests

    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


# --- state ---------------------------------------------------------------------------------------


class State:
    """The pid of every component this lab started, and facts about its seed, in state.json."""

    def __init__(self, settings: LabSettings) -> None:
        self.path = settings.data_dir / "state.json"
        self.data: dict[str, Any] = {"pids": {}, "seed": {}}
        if self.path.exists():
            with contextlib.suppress(ValueError):
                self.data.update(json.loads(self.path.read_text()))

    @property
    def pids(self) -> dict[str, int]:
        return self.data["pids"]

    @property
    def seed(self) -> dict[str, Any]:
        return self.data["seed"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name("state.json.tmp")
        temporary.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        temporary.replace(self.path)


@contextlib.contextmanager
def exclusive(settings: LabSettings) -> Iterator[None]:
    """One up/down/start/stop at a time per lab, so a test session and `make lab-up` do not race."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.data_dir / "lab.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- processes -----------------------------------------------------------------------------------

# Processes started by this Python process: kept so they are reaped (no zombies) when they stop.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def start_detached(component: Component, settings: LabSettings) -> subprocess.Popen[bytes]:
    """Start a component in its own session, its output appended to its log file."""
    # Inherited: PgBouncer's 500 clients and PostgreSQL need more than the usual 1024 descriptors.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log_path = component.log_path(settings)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    user = service_user() if component.runs_as_service_user else None
    env = {**os.environ, **component.environment(settings), MARKER_VARIABLE: str(settings.data_dir)}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            component.command(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=settings.data_dir,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    _CHILDREN[process.pid] = process
    owner = os.environ.get(OWNER_VARIABLE)
    if owner:
        (settings.data_dir / OWNERS_DIR).mkdir(exist_ok=True)
        (settings.data_dir / OWNERS_DIR / str(process.pid)).write_text(owner)
    return process


def wait_until_answers(component: Component, settings: LabSettings, process: subprocess.Popen[bytes]) -> None:
    """Wait until the component answers; if it dies or hangs, say why with its log's last lines."""
    deadline = time.monotonic() + component.start_timeout_seconds
    while time.monotonic() < deadline:
        if component.probe(settings):
            return
        if process.poll() is not None:
            raise LabError(
                f"{component.name} exited with code {process.returncode} while starting; "
                f"last lines of {component.log_path(settings)}:\n{tail(component.log_path(settings))}"
            )
        time.sleep(0.1)
    terminate(process.pid)
    raise LabError(
        f"{component.name} did not answer at {component.address(settings)} within "
        f"{component.start_timeout_seconds:.0f} s; last lines of {component.log_path(settings)}:\n"
        f"{tail(component.log_path(settings))}"
    )


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "  (no log)"
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_group(pid: int, signum: signal.Signals) -> None:
    """Signal the process's whole session group (it leads one: start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            _reap(pid)
            return True
        time.sleep(0.05)
    return False


def terminate(
    pid: int, timeout: float = STOP_TIMEOUT_SECONDS, polite: signal.Signals = signal.SIGTERM
) -> None:
    """`polite` (SIGTERM: the stop every daemon understands), wait up to `timeout`, then SIGKILL."""
    if not pid_alive(pid):
        _reap(pid)
        return
    _signal_group(pid, polite)
    if not wait_gone(pid, timeout):
        kill(pid)


def kill(pid: int) -> None:
    """SIGKILL the process and its group at once, as a crash would."""
    _signal_group(pid, signal.SIGKILL)
    wait_gone(pid, 5)


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1)


def marked_processes(settings: LabSettings) -> list[psutil.Process]:
    """Every live process that carries this lab's marker, and their descendants.

    Descendants count separately because PostgreSQL's backends overwrite their inherited
    environment with their process title.
    """
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get(MARKER_VARIABLE) == str(settings.data_dir):
                found[process.pid] = process
                found.update((child.pid, child) for child in process.children(recursive=True))
        except psutil.Error:
            continue
    return list(found.values())


def rss_bytes(processes: Sequence[psutil.Process]) -> int:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


# --- ports ---------------------------------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    """Can this port be bound? (SO_REUSEADDR, so leftover TIME_WAIT sockets do not count.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(host: str, port: int) -> str:
    """Which process listens on host:port, as `pid N (name)`, or why it cannot be told."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return "a process this user cannot see"
    for connection in connections:
        if (
            connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == port
            and connection.laddr.ip in (host, "0.0.0.0", "::")
        ):
            if connection.pid is None:
                return "a process this user cannot see"
            try:
                name = psutil.Process(connection.pid).name()
            except psutil.Error:
                name = "?"
            return f"pid {connection.pid} ({name})"
    return "another socket"


def port_problems(
    components: Sequence[Component], settings: LabSettings, running: Mapping[str, bool]
) -> list[str]:
    """Ports configured twice, and ports taken by something else, for the components to start."""
    problems = []
    owners: dict[tuple[str, int], str] = {}
    for component in components:
        for address in component.listens(settings):
            if address in owners:
                problems.append(
                    f"port {address[1]} on {address[0]} is configured for both {owners[address]} "
                    f"and {component.name}"
                )
            owners[address] = component.name
    for component in components:
        if running.get(component.name):
            continue
        for host, port in component.listens(settings):
            if not port_is_free(host, port):
                problems.append(
                    f"port {port} on {host}, needed by {component.name}, is taken by "
                    f"{port_holder(host, port)}; stop it or move the lab "
                    f"(LAB_* variables, see lab/settings.py)"
                )
    return problems
