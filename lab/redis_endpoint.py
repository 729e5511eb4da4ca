"""HAProxy in TCP mode in front of both Redis servers: the one Redis address every pod writes to.

As PgBouncer is for PostgreSQL: staging's and production's services both reach Redis through it,
so sessions never split between the servers, and the switchover moves every writer at once
through HAProxy's runtime API (hooks/redis_endpoint.py). Only `source` receives connections at
first (`target` is declared `disabled`). No health checks: which server gets writers is the
migration's decision alone, and a check that failed over to the other server would split writes.

The runtime API listens on TCP (`stats socket ipv4@...`), so a worker on another host can reach it.
The routing the migration set lives in HAProxy's memory: `stop()` saves it (`show servers state`)
and the next start loads it once (`server-state-file`), so a lab restart keeps writers where they
were. After a crash (SIGKILL) nothing was saved: HAProxy starts routed to the source again.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from lab.processes import Binary, Component, apt_hint
from lab.redis_lab import answers_ping
from lab.settings import LabSettings

BACKEND = "redis"

CONFIG_TEMPLATE = """\
# The lab's Redis write endpoint (rewritten by lab/redis_endpoint.py at every start).
# No `log`: in the foreground HAProxy writes its warnings (a server entering maintenance, no
# server left) to stderr, the component's log, by itself.
global
    # Without it HAProxy sizes its tables by the open-file limit, which the lab raises to the hard one.
    maxconn 2000
    stats socket ipv4@{host}:{admin_port} level admin
    stats timeout 10s
{state_file}
defaults
    mode tcp
    timeout connect 2s
    # Redis clients keep their connections open and idle for long.
    timeout client 1h
    timeout server 1h
{load_state}
frontend redis_endpoint
    bind {host}:{port}
    default_backend {backend}

backend {backend}
    server source {host}:{source_port}
    server target {host}:{target_port} disabled
"""


def directory(settings: LabSettings) -> Path:
    return settings.data_dir / "redis-endpoint"


def config_path(settings: LabSettings) -> Path:
    return directory(settings) / "haproxy.cfg"


def runtime_api(settings: LabSettings, command: str, timeout: float = 1) -> str:
    """One command on HAProxy's runtime API, its whole answer (HAProxy closes after answering)."""
    address = (settings.host, settings.redis_endpoint_admin_port)
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class RedisEndpoint(Component):
    name = "redis-endpoint"
    binary = Binary(Path("/usr/sbin/haproxy"), apt_hint("haproxy"))
    start_timeout_seconds = 15.0

    scheme, address_path = "redis", "/0"

    def port(self, settings: LabSettings) -> int:
        return settings.redis_endpoint_port

    def listens(self, settings: LabSettings) -> list[tuple[str, int]]:
        return [*super().listens(settings), (settings.host, settings.redis_endpoint_admin_port)]

    def command(self, settings: LabSettings) -> list[str]:
        # -db: in the foreground, not a daemon; SIGTERM stops it at once, as every component stops.
        return [str(self.binary.path), "-db", "-f", str(config_path(settings))]

    def prepare(self, settings: LabSettings) -> None:
        """Write the config; the state `stop()` saved is loaded by this start only, so a crash after
        it does not bring back a routing older than the crash."""
        directory(settings).mkdir(parents=True, exist_ok=True)
        saved, loading = directory(settings) / "server-state", directory(settings) / "server-state.loading"
        loading.unlink(missing_ok=True)
        if saved.exists():
            saved.replace(loading)
        config_path(settings).write_text(
            CONFIG_TEMPLATE.format(
                host=settings.host,
                port=settings.redis_endpoint_port,
                admin_port=settings.redis_endpoint_admin_port,
                backend=BACKEND,
                source_port=settings.redis_source_port,
                target_port=settings.redis_target_port,
                # HAProxy warns about a state file it cannot open: named only when there is one.
                state_file=f"    server-state-file {loading}\n" if loading.exists() else "",
                load_state="    load-server-state-from-file global\n" if loading.exists() else "",
            )
        )

    def stop(self, settings: LabSettings, pid: int | None) -> None:
        """Save where the endpoint routes (for the next start), then SIGTERM."""
        if pid is not None:
            with contextlib.suppress(OSError):
                state = runtime_api(settings, "show servers state", timeout=2)
                if state.startswith("1\n"):
                    (directory(settings) / "server-state").write_text(state)
        super().stop(settings, pid)

    def probe(self, settings: LabSettings) -> bool:
        """A PING through the endpoint (reaching the routed Redis) and `show info` on its runtime API."""
        client = redis.Redis(
            host=settings.host,
            port=settings.redis_endpoint_port,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        if not answers_ping(client):
            return False
        try:
            return "Name: HAProxy" in runtime_api(settings, "show info")
        except OSError:
            return False
