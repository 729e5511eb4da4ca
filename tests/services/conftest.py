"""Fixtures for the services phase: a Kubernetes API emulator reached through an ordinary Airflow
`kubernetes` connection, and a way to run one task the way a worker (and the triggerer) would."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from kubernetes import client

from lab.kube import IngressRoute, KubeEmulator
from tests.lab.conftest import apps, core  # noqa: F401
from tests.services.support import (
    CONN_ENV,
    emulator_client,
    kubernetes_connection,
    postgres_server,
    redis_server,
    write_kubeconfig,
)

INGRESS_NAMESPACE = "services-ingress"
READY_DELAY_SECONDS = 0.2
_numbers = itertools.count()


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEmulator]:
    """One emulator for the session (each test in a namespace of its own) and the Airflow connection to it."""
    emulator = KubeEmulator(
        ingresses=[IngressRoute("127.0.0.1", 0, INGRESS_NAMESPACE)],
        pod_ready_delay_seconds=READY_DELAY_SECONDS,
        pod_drain_seconds=0.3,
    )
    with emulator:
        kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", emulator.url)
        previous = os.environ.get(CONN_ENV)
        os.environ[CONN_ENV] = kubernetes_connection(kubeconfig)
        try:
            yield emulator
        finally:
            if previous is None:
                os.environ.pop(CONN_ENV, None)
            else:
                os.environ[CONN_ENV] = previous


@pytest.fixture(scope="session")
def kube_api(kube: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> client.ApiClient:
    """The emulator's client, for `core` and `apps` (imported from tests/lab/conftest.py)."""
    return emulator_client(kube.url, tmp_path_factory.mktemp("kube-test"))


def create_namespace(core: client.CoreV1Api, name: str) -> str:  # noqa: F811
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:  # noqa: F811
    name = create_namespace(core, f"services-test-{next(_numbers)}")
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def postgres_port() -> Iterator[int]:
    with postgres_server() as port:
        yield port


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port
