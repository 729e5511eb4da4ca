"""Lab fixtures: one running lab per test session, shared by every module that needs one.

Modules outside tests/lab import them (`from tests.lab.conftest import lab  # noqa: F401`); `core`
and `apps` serve whichever API server `kube_api` reaches (the services tests and the Kubernetes
emulator tests override it with an emulator of their own).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from lab.connections import connections_in_environment
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
    try:
        with connections_in_environment(settings):
            yield settings
    finally:
        if not already_up:
            down(settings)


@pytest.fixture(scope="session")
def kube_api(lab: LabSettings) -> Iterator[k8s.ApiClient]:
    """A kubernetes client for the lab's API server, built from .lab/kubeconfig as Airflow builds it."""
    with k8s_config.new_client_from_config(config_file=str(kubeconfig_path(lab))) as api:
        yield api


@pytest.fixture
def core(kube_api: k8s.ApiClient) -> k8s.CoreV1Api:
    """The core API through `kube_api` (a module with an API server of its own overrides `kube_api`)."""
    return k8s.CoreV1Api(kube_api)


@pytest.fixture
def apps(kube_api: k8s.ApiClient) -> k8s.AppsV1Api:
    """The apps API through `kube_api`."""
    return k8s.AppsV1Api(kube_api)


@pytest.fixture
def isolated_settings() -> Iterator[LabSettings]:
    """Settings for a second, throwaway lab: free ports and its own data directory.

    The directory is under /tmp with mode 0755 (pytest's tmp_path is 0700, which the `postgres`
    OS user could not enter). Anything the test leaves running is stopped afterwards.
    """
    settings = LabSettings.throwaway("pyairtable-lab-test-")
    try:
        yield settings
    finally:
        down(settings, purge=True)
