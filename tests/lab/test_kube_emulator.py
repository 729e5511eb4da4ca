"""The Kubernetes API emulator, driven through the official Python client as the operators drive it.

One emulator serves the whole module; each test works in a namespace of its own.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lab.kube import POD_PORT_ANNOTATION, IngressRoute, KubeEmulator
from tests.services.support import emulator_client, free_port, wait_for, write_kubeconfig

REPO_ROOT = Path(__file__).resolve().parents[2]
INGRESS_NAMESPACE = "kube-test-ingress"
READY_DELAY_SECONDS = 0.2
_namespace_numbers = itertools.count()

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def kube_emulator() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator(
        ingresses=[IngressRoute("127.0.0.1", 0, INGRESS_NAMESPACE)],
        pod_ready_delay_seconds=READY_DELAY_SECONDS,
        pod_drain_seconds=0.2,
    )
    with emulator:
        yield emulator


@pytest.fixture(scope="module")
def kube_api(kube_emulator: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> client.ApiClient:
    """The emulator's client, in place of the lab's: `core` and `apps` (tests/lab/conftest.py) use it."""
    return emulator_client(kube_emulator.url, tmp_path_factory.mktemp("kube"))


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"kube-test-{next(_namespace_numbers)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def deployment(
    name: str,
    image: str,
    replicas: int = 2,
    color: str = "blue",
    env: dict[str, str] | None = None,
    progress_deadline_seconds: int | None = None,
) -> client.V1Deployment:
    labels = {"app": "web", "color": color}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            progress_deadline_seconds=progress_deadline_seconds,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="web",
                            image=image,
                            env=[client.V1EnvVar(name=k, value=v) for k, v in (env or {}).items()],
                        )
                    ]
                ),
            ),
        ),
    )


def service(name: str, selector: dict[str, str]) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ServiceSpec(selector=selector, ports=[client.V1ServicePort(name="http", port=8080)]),
    )


def wait_rolled_out(apps: client.AppsV1Api, namespace: str, name: str) -> client.V1Deployment:
    def rolled_out() -> client.V1Deployment | None:
        found = apps.read_namespaced_deployment(name, namespace)
        status = found.status
        done = (
            status.observed_generation == found.metadata.generation
            and (status.ready_replicas or 0) == found.spec.replicas
            and (status.updated_replicas or 0) == found.spec.replicas
            and (status.replicas or 0) == found.spec.replicas
        )
        return found if done else None

    return wait_for(rolled_out, what=f"deployment {name} to roll out")


def behind_services(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    namespace: str,
    images: dict[str, tuple[str, dict[str, str] | None]],
) -> None:
    """Per name, a Deployment of the image (color: the name) behind a Service of that name; returns
    once all are rolled out, so a test compares what they answer."""
    for name, (image, env) in images.items():
        apps.create_namespaced_deployment(namespace, deployment(name, image, color=name, env=env))
    for name in images:
        core.create_namespaced_service(namespace, service(name, {"color": name}))
    for name in images:
        wait_rolled_out(apps, namespace, name)


def proxy_get(core: client.CoreV1Api, namespace: str, service_name: str, path: str) -> tuple[int, Any]:
    """GET through the Service proxy; (status, parsed JSON body), whatever the status."""
    try:
        response = core.connect_get_namespaced_service_proxy_with_path(
            f"{service_name}:http", namespace, path, _preload_content=False
        )
    except ApiException as exc:
        return exc.status, json.loads(exc.body)
    return response.status, json.loads(response.data)


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def ready_condition(pod: client.V1Pod) -> client.V1PodCondition:
    return next(c for c in pod.status.conditions if c.type == "Ready")


def test_deployment_rolls_out_ready_pods(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    created = apps.create_namespaced_deployment(
        namespace, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0")
    )
    assert created.metadata.generation == 1
    assert created.metadata.uid
    assert created.metadata.creation_timestamp is not None

    rolled_out = wait_rolled_out(apps, namespace, "web-blue")
    assert int(rolled_out.metadata.resource_version) > int(created.metadata.resource_version)
    progressing = next(c for c in rolled_out.status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("True", "NewReplicaSetAvailable")

    pods = core.list_namespaced_pod(namespace, label_selector="app=web,color in (blue,green)").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.metadata.name.startswith("web-blue-")
        assert pod.metadata.labels["pod-template-hash"] in pod.metadata.name
        assert pod.status.phase == "Running"
        assert ready_condition(pod).status == "True"
        assert pod.status.container_statuses[0].ready is True
        assert pod.status.container_statuses[0].image == "ghcr.io/pyairtable/web:1.4.0"
        assert pod.status.pod_ip == "127.0.0.1"
        assert int(pod.metadata.annotations[POD_PORT_ANNOTATION]) > 0
    assert core.list_namespaced_pod(namespace, label_selector="color=green").items == []


def test_service_proxy_follows_the_selector(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0"))
    core.create_namespaced_service(namespace, service("web", {"app": "web", "color": "blue"}))
    wait_rolled_out(apps, namespace, "web-blue")

    answers = [proxy_get(core, namespace, "web", "health") for _ in range(4)]
    assert {status for status, _ in answers} == {200}
    assert {body["color"] for _, body in answers} == {"blue"}
    assert len({body["pod"] for _, body in answers}) == 2, "round robin should reach both pods"

    apps.create_namespaced_deployment(
        namespace, deployment("web-green", "ghcr.io/pyairtable/web:1.5.0", color="green")
    )
    wait_rolled_out(apps, namespace, "web-green")
    patched = core.patch_namespaced_service("web", namespace, {"spec": {"selector": {"color": "green"}}})
    assert patched.spec.selector == {"app": "web", "color": "green"}

    status, body = proxy_get(core, namespace, "web", "/health")
    assert (status, body["color"], body["version"]) == (200, "green", "1.5.0")


def test_merge_patch_null_removes_a_selector_key(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_service(namespace, service("web", {"app": "web", "color": "blue"}))
    patched = core.patch_namespaced_service(
        "web",
        namespace,
        {"spec": {"selector": {"color": None, "tier": "edge"}}},
        _content_type="application/merge-patch+json",
    )
    assert patched.spec.selector == {"app": "web", "tier": "edge"}
    assert patched.spec.cluster_ip, "the allocated cluster IP survives the patch"


def test_strategic_patch_merges_containers_by_name(apps: client.AppsV1Api, namespace: str) -> None:
    apps.create_namespaced_deployment(
        namespace, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0", env={"HEALTH_PATH": "/healthz"})
    )
    patched = apps.patch_namespaced_deployment(
        "web-blue",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "web", "image": "ghcr.io/pyairtable/web:1.5.0"}]}
                }
            }
        },
    )
    container = patched.spec.template.spec.containers[0]
    assert (container.image, container.env[0].value) == ("ghcr.io/pyairtable/web:1.5.0", "/healthz")
    assert patched.metadata.generation == 2

    relabelled = apps.patch_namespaced_deployment("web-blue", namespace, {"metadata": {"labels": {"x": "y"}}})
    assert relabelled.metadata.generation == 2, "a metadata-only change leaves generation alone"


def test_rolling_update_replaces_pods_without_failed_requests(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0"))
    core.create_namespaced_service(namespace, service("web", {"app": "web"}))
    before = wait_rolled_out(apps, namespace, "web-blue")
    old_pods = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}

    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            statuses.append(proxy_get(core, namespace, "web", "health")[0])

    hammering = threading.Thread(target=hammer)
    hammering.start()
    try:
        before.spec.template.spec.containers[0].image = "ghcr.io/pyairtable/web:1.5.0"
        replaced = apps.replace_namespaced_deployment("web-blue", namespace, before)
        assert replaced.metadata.generation == 2
        after = wait_rolled_out(apps, namespace, "web-blue")
        wait_for(lambda: len(core.list_namespaced_pod(namespace).items) == 2, what="old pods to go")
        time.sleep(0.3)
    finally:
        stop.set()
        hammering.join()

    assert after.status.observed_generation == 2
    new_pods = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}
    assert not new_pods & old_pods
    assert len(statuses) > 10
    assert set(statuses) == {200}, f"requests failed during the rollout: {sorted(set(statuses))}"
    assert {proxy_get(core, namespace, "web", "health")[1]["version"] for _ in range(4)} == {"1.5.0"}


def test_never_ready_image_exceeds_the_progress_deadline(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(
        namespace,
        deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0-neverready", progress_deadline_seconds=2),
    )

    def deadline_exceeded() -> client.V1Deployment | None:
        found = apps.read_namespaced_deployment_status("web-blue", namespace)
        progressing = next((c for c in found.status.conditions or [] if c.type == "Progressing"), None)
        return found if progressing and progressing.reason == "ProgressDeadlineExceeded" else None

    started = time.monotonic()
    stuck = wait_for(deadline_exceeded, timeout=6, what="ProgressDeadlineExceeded")
    assert time.monotonic() - started > 1.5
    assert not stuck.status.ready_replicas
    assert stuck.status.unavailable_replicas == 2
    progressing = next(c for c in stuck.status.conditions if c.type == "Progressing")
    assert progressing.status == "False"

    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Running"
        assert (ready_condition(pod).status, ready_condition(pod).reason) == ("False", "ContainersNotReady")
    with pytest.raises(ApiException) as unready:
        core.connect_get_namespaced_pod_proxy_with_path(pods[0].metadata.name, namespace, "health")
    assert unready.value.status == 503

    core.create_namespaced_service(namespace, service("web", {"app": "web"}))
    status, body = proxy_get(core, namespace, "web", "health")
    assert (status, body["reason"]) == (503, "ServiceUnavailable")


def test_5xx_image_fails_every_request(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0-5xx"))
    core.create_namespaced_service(namespace, service("web", {"app": "web"}))
    wait_rolled_out(apps, namespace, "web-blue")
    assert proxy_get(core, namespace, "web", "health")[0] == 500
    assert proxy_get(core, namespace, "web", "api/records")[0] == 500


def test_slow_image_adds_latency(core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str) -> None:
    behind_services(
        core,
        apps,
        namespace,
        {
            "slow": ("ghcr.io/pyairtable/web:1.4.0-slow", {"SLOW_MS": "300"}),
            "fast": ("ghcr.io/pyairtable/web:1.4.0", None),
        },
    )

    def timed(service_name: str) -> float:
        started = time.perf_counter()
        assert proxy_get(core, namespace, service_name, "health")[0] == 200
        return time.perf_counter() - started

    assert min(timed("slow") for _ in range(3)) > 0.3
    assert min(timed("fast") for _ in range(3)) < 0.2


def test_api_errors_are_status_objects(apps: client.AppsV1Api, namespace: str) -> None:
    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment("absent", namespace)
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["reason"] == "NotFound"

    first = apps.create_namespaced_deployment(
        namespace, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0")
    )
    with pytest.raises(ApiException) as duplicate:
        apps.create_namespaced_deployment(namespace, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0"))
    assert (duplicate.value.status, json.loads(duplicate.value.body)["reason"]) == (409, "AlreadyExists")

    apps.patch_namespaced_deployment("web-blue", namespace, {"spec": {"replicas": 3}})
    first.spec.replicas = 1
    with pytest.raises(ApiException) as stale:
        apps.replace_namespaced_deployment("web-blue", namespace, first)
    assert (stale.value.status, json.loads(stale.value.body)["reason"]) == (409, "Conflict")

    mismatched = deployment("odd", "ghcr.io/pyairtable/web:1.4.0")
    mismatched.spec.selector.match_labels = {"app": "other"}
    with pytest.raises(ApiException) as invalid:
        apps.create_namespaced_deployment(namespace, mismatched)
    assert (invalid.value.status, json.loads(invalid.value.body)["reason"]) == (422, "Invalid")

    with pytest.raises(ApiException) as no_namespace:
        apps.create_namespaced_deployment(
            "no-such-namespace", deployment("x", "ghcr.io/pyairtable/web:1.4.0")
        )
    assert no_namespace.value.status == 404


def test_scale_to_zero_then_delete(core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0"))
    wait_rolled_out(apps, namespace, "web-blue")

    scaled = apps.patch_namespaced_deployment_scale("web-blue", namespace, {"spec": {"replicas": 0}})
    assert scaled.spec.replicas == 0
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, what="pods to be removed")
    assert not wait_rolled_out(apps, namespace, "web-blue").status.replicas

    apps.patch_namespaced_deployment("web-blue", namespace, {"spec": {"replicas": 1}})
    wait_rolled_out(apps, namespace, "web-blue")
    apps.delete_namespaced_deployment("web-blue", namespace)
    with pytest.raises(ApiException) as gone:
        apps.read_namespaced_deployment("web-blue", namespace)
    assert gone.value.status == 404
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, what="orphaned pods to be removed")


def test_ingress_routes_by_service_prefix(
    kube_emulator: KubeEmulator, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=INGRESS_NAMESPACE)))
    try:
        apps.create_namespaced_deployment(
            INGRESS_NAMESPACE, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0")
        )
        core.create_namespaced_service(INGRESS_NAMESPACE, service("web", {"app": "web"}))
        core.create_namespaced_service(INGRESS_NAMESPACE, service("empty", {"app": "nothing"}))
        wait_rolled_out(apps, INGRESS_NAMESPACE, "web-blue")
        host, port = kube_emulator.ingress_address(INGRESS_NAMESPACE)

        status, headers, body = http_get(f"http://{host}:{port}/web/api/anything?x=1")
        assert status == 200
        assert headers["X-Lab-Namespace"] == INGRESS_NAMESPACE
        assert headers["X-Lab-Pod"].startswith("web-blue-")
        assert json.loads(body)["path"] == "/api/anything"
        assert http_get(f"http://{host}:{port}/empty/health")[0] == 503
        assert http_get(f"http://{host}:{port}/absent/health")[0] == 404
    finally:
        core.delete_namespace(INGRESS_NAMESPACE)


def test_metrics_count_requests_and_sd_lists_ready_pods(
    kube_emulator: KubeEmulator, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(
        namespace, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0", replicas=1)
    )
    apps.create_namespaced_deployment(
        namespace, deployment("broken", "ghcr.io/pyairtable/web:1.4.0-neverready", replicas=1, color="red")
    )
    wait_rolled_out(apps, namespace, "web-blue")
    pod = core.list_namespaced_pod(namespace, label_selector="color=blue").items[0]
    pod_url = f"http://127.0.0.1:{pod.metadata.annotations[POD_PORT_ANNOTATION]}"
    for _ in range(3):
        assert http_get(f"{pod_url}/health")[0] == 200
    assert http_get(f"{pod_url}/api/users/7")[0] == 200

    metrics = http_get(f"{pod_url}/metrics")[2].decode()
    identity = f'service="web",namespace="{namespace}",color="blue",version="1.4.0"'
    assert f'pyairtable_http_requests_total{{{identity},code="200",route="/health"}} 3' in metrics
    assert f'pyairtable_http_requests_total{{{identity},code="200",route="/api/users/:id"}} 1' in metrics
    assert f'pyairtable_http_request_duration_seconds_count{{{identity},route="/health"}} 3' in metrics
    assert (
        f'pyairtable_http_request_duration_seconds_bucket{{{identity},route="/health",le="+Inf"}} 3'
        in metrics
    )

    groups = json.loads(http_get(f"{kube_emulator.url}/lab/sd")[2])
    mine = [g for g in groups if g["labels"]["namespace"] == namespace]
    assert mine == [
        {
            "targets": [pod_url.removeprefix("http://")],
            "labels": {
                "namespace": namespace,
                "service": "web",
                "color": "blue",
                "version": "1.4.0",
                "pod": pod.metadata.name,
            },
        }
    ], "the never-ready pod must not be a target"


def test_database_routes(core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str) -> None:
    unreachable = f"postgresql://lab@127.0.0.1:{free_port()}/pyairtable"
    behind_services(
        core,
        apps,
        namespace,
        {
            "db": ("ghcr.io/pyairtable/web:1.4.0", {"DATABASE_URL": unreachable}),
            "static": ("ghcr.io/pyairtable/web:1.4.0", None),
        },
    )

    status, body = proxy_get(core, namespace, "db", "api/records")
    assert (status, body["error"]) == (503, "database unavailable")
    status, body = proxy_get(core, namespace, "static", "api/records")
    assert (status, body["source"]) == (200, "static")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_discovers_and_prints(
    kube_emulator: KubeEmulator, apps: client.AppsV1Api, namespace: str, tmp_path: Path
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0"))
    wait_rolled_out(apps, namespace, "web-blue")
    kubeconfig = write_kubeconfig(tmp_path / "config", kube_emulator.url)
    environment = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}
    printed = subprocess.run(
        ["kubectl", "-n", namespace, "get", "deployments,pods"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "deployment.apps/web-blue   2/2" in printed
    assert printed.count("1/1     Running") == 2


def test_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    api_port, ingress_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab.kube",
            "--port",
            str(api_port),
            "--ingress",
            f"127.0.0.1:{ingress_port}=pyairtable-staging",
            "--state-dir",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"kube-emulator listening on http://127.0.0.1:{api_port}"
        status, _, body = http_get(f"http://127.0.0.1:{api_port}/version")
        assert (status, json.loads(body)["major"]) == (200, "1")
        assert http_get(f"http://127.0.0.1:{ingress_port}/web/health")[0] == 404
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert (tmp_path / "kube-emulator.log").exists()


# --- Secrets, and pods that take their environment from them -------------------------------------


def _decoded(secret: client.V1Secret) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


def test_secrets_fold_string_data_into_base64_data(core: client.CoreV1Api, namespace: str) -> None:
    created = core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="app-env"),
            string_data={"DATABASE_URL": "postgresql://app:s3cret@db/pyairtable"},
        ),
    )
    assert created.type == "Opaque"
    assert created.string_data is None, "stringData is write-only"
    assert _decoded(created) == {"DATABASE_URL": "postgresql://app:s3cret@db/pyairtable"}
    assert [s.metadata.name for s in core.list_namespaced_secret(namespace).items] == ["app-env"]

    patched = core.patch_namespaced_secret("app-env", namespace, {"stringData": {"REDIS_URL": "redis://r/0"}})
    assert set(_decoded(patched)) == {"DATABASE_URL", "REDIS_URL"}

    current = core.read_namespaced_secret("app-env", namespace)
    current.data = {"ONLY": base64.b64encode(b"one").decode()}
    replaced = core.replace_namespaced_secret("app-env", namespace, current)
    assert _decoded(replaced) == {"ONLY": "one"}
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_secret("app-env", namespace, current)
    assert stale.value.status == 409

    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_secret(
            namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="bad"), data={"K": "not base64!"})
        )
    assert (invalid.value.status, json.loads(invalid.value.body)["reason"]) == (422, "Invalid")

    core.delete_namespaced_secret("app-env", namespace)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_secret("app-env", namespace)
    assert gone.value.status == 404


def test_pods_resolve_secret_references_without_copying_them(
    kube_emulator: KubeEmulator, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    password = "s3cret-" + namespace
    unreachable = f"postgresql://app:{password}@127.0.0.1:{free_port()}/pyairtable"
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="app-env"),
            string_data={"HEALTH_PATH": "/ready", "DATABASE_URL": unreachable},
        ),
    )
    spec = deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0", replicas=1)
    container = spec.spec.template.spec.containers[0]
    container.env_from = [client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name="app-env"))]
    container.env = [
        client.V1EnvVar(
            name="DATABASE_URL",
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name="app-env", key="DATABASE_URL")
            ),
        )
    ]
    apps.create_namespaced_deployment(namespace, spec)
    core.create_namespaced_service(namespace, service("web", {"app": "web"}))
    wait_rolled_out(apps, namespace, "web-blue")

    status, body = proxy_get(core, namespace, "web", "ready")
    assert (status, body["status"]) == (200, "ok"), "HEALTH_PATH comes from envFrom"
    status, body = proxy_get(core, namespace, "web", "api/records")
    assert (status, body["error"]) == (503, "database unavailable"), "DATABASE_URL comes from secretKeyRef"

    for path in (
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        f"/api/v1/namespaces/{namespace}/pods",
    ):
        assert password not in http_get(kube_emulator.url + path)[2].decode()


def test_a_missing_secret_leaves_pods_waiting_with_a_config_error(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    spec = deployment("web-blue", "ghcr.io/pyairtable/web:1.4.0", replicas=1)
    spec.spec.template.spec.containers[0].env_from = [
        client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name="absent"))
    ]
    optional = deployment("web-green", "ghcr.io/pyairtable/web:1.4.0", replicas=1, color="green")
    optional.spec.template.spec.containers[0].env_from = [
        client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name="absent", optional=True))
    ]
    apps.create_namespaced_deployment(namespace, spec)
    apps.create_namespaced_deployment(namespace, optional)
    wait_rolled_out(apps, namespace, "web-green")

    pod = wait_for(
        lambda: next(iter(core.list_namespaced_pod(namespace, label_selector="color=blue").items), None),
        what="the pod",
    )
    waiting = pod.status.container_statuses[0].state.waiting
    assert pod.status.phase == "Pending"
    assert (waiting.reason, waiting.message) == ("CreateContainerConfigError", 'secret "absent" not found')
    time.sleep(READY_DELAY_SECONDS * 2)
    assert not apps.read_namespaced_deployment("web-blue", namespace).status.ready_replicas
