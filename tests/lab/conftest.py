"""Lab fixtures: one running lab per test session, shared by every module that needs one.

Modules outside tests/lab import them (`from tests.lab.conftest import lab  # noqa: F401`).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from lab.connections import environment
from lab.kube_seed import kubeconfig_path
from lab.settings import LabSettings
from lab.supervisor import down, status, up

# Small, so the session starts fast; a reused lab may have another scale
# (lab.supervisor.seeded_records).
TEST_SCALE = 2000


@pytest.fixture(scope="session")
def lab() -> Iterator[LabSettings]:
    """The running lab's settings, its Airflow connections in os.environ.

    Reuses a lab that is already fully up (and leaves it running); otherwise brings it up at
    TEST_SCALE and takes it down at the end of the session. Passwords: `lab.credentials.secrets`;
    the seeded scale: `lab.supervisor.seeded_records`.
    """
    settings = LabSettings.from_env()
    already_up = all(entry.state == "up" for entry in status(settings))
    if not already_up:
        up(settings, TEST_SCALE)
    connection_env = environment(settings)
    saved = {name: os.environ.get(name) for name in connection_env}
    os.environ.update(connection_env)
    try:
        yield settings
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if not already_up:
            down(settings)


@pytest.fixture(scope="session")
def kube_api(lab: LabSettings) -> Iterator[k8s.ApiClient]:
    """A kubernetes client for the lab's API server, built from .lab/kubeconfig as Airflow builds it."""
    with k8s_config.new_client_from_config(config_file=str(kubeconfig_path(lab))) as api:
        yield api


def free_ports(count: int) -> list[int]:
    """Ports free right now on loopback (held open together, so they are distinct)."""
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            held = stack.enter_context(socket.socket())
            held.bind(("127.0.0.1", 0))
            sockets.append(held)
        return [held.getsockname()[1] for held in sockets]


@pytest.fixture
def isolated_settings() -> Iterator[LabSettings]:
    """Settings for a second, throwaway lab: free ports and its own data directory.

    The directory is under /tmp with mode 0755 (pytest's tmp_path is 0700, which the `postgres`
    OS user could not enter). Anything the test leaves running is stopped afterwards.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="pyairtable-lab-test-"))
    data_dir.chmod(0o755)
    ports = free_ports(11)
    settings = LabSettings(
        postgres_source_port=ports[0],
        postgres_target_port=ports[1],
        pgbouncer_port=ports[2],
        redis_source_port=ports[3],
        redis_target_port=ports[4],
        moto_port=ports[5],
        prometheus_port=ports[6],
        kube_api_port=ports[7],
        ingress_port=ports[8],
        edge_metrics_port=ports[9],
        loadgen_metrics_port=ports[10],
        data_dir=data_dir,
    )
    try:
        yield settings
    finally:
        down(settings, purge=True)
