"""Blue-green operators against the Kubernetes API emulator, through the real kubernetes client.

Each test works in a namespace of its own; pods are real HTTP servers whose image tag selects
faults (`-neverready`, `-5xx`, `-slow`), so rollouts, smoke tests and traffic are measured live.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lab.kube import KubeEmulator
from pyairtable_migration.hooks.bluegreen import BlueGreenHook
from pyairtable_migration.kubernetes.bluegreen import PREVIOUS_COLOR_ANNOTATION, ServiceSpec, StateChanged
from pyairtable_migration.links import ServiceDashboardLink
from pyairtable_migration.loadtest.driver import percentile
from pyairtable_migration.operators.bluegreen import BlueGreenDeployOperator, BlueGreenRollbackOperator
from tests.services.conftest import INGRESS_NAMESPACE, create_namespace
from tests.services.support import CONN_ID, BlueGreenService, run_task, wait_for

pytestmark = pytest.mark.timeout(90)


def objects(core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str) -> dict[str, Any]:
    """kind/name -> what a write by the operators changes: a Service's resourceVersion; a Deployment's
    generation (spec), labels and annotations (its resourceVersion also moves with status updates)."""
    found: dict[str, Any] = {
        f"deployment/{d.metadata.name}": (d.metadata.generation, d.metadata.labels, d.metadata.annotations)
        for d in apps.list_namespaced_deployment(namespace).items
    }
    found.update(
        {
            f"service/{s.metadata.name}": s.metadata.resource_version
            for s in core.list_namespaced_service(namespace).items
        }
    )
    return found


def selector(core: client.CoreV1Api, namespace: str, name: str = "web") -> dict[str, str] | None:
    try:
        return dict(core.read_namespaced_service(name, namespace).spec.selector)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def answers(core: client.CoreV1Api, namespace: str, service: str = "web", count: int = 4) -> list[Any]:
    """(status, version, color) of GET /health through a Service proxy."""
    found = []
    for _ in range(count):
        try:
            response = core.connect_get_namespaced_service_proxy_with_path(
                f"{service}:http", namespace, "health", _preload_content=False
            )
            body = json.loads(response.data)
            found.append((response.status, body.get("version"), body.get("color")))
        except ApiException as exc:
            found.append((exc.status, None, None))
    return found


def replicas(apps: client.AppsV1Api, namespace: str, name: str) -> int:
    return int(apps.read_namespaced_deployment(name, namespace).spec.replicas)


@pytest.fixture
def web(kube: KubeEmulator, namespace: str) -> BlueGreenService:
    return BlueGreenService(namespace)


def test_first_deploy_into_an_empty_namespace(
    web: BlueGreenService, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    deployed, waited, smoked, promoted, retired = web.release("1.0.0")

    assert deployed["color"] == "blue"
    assert deployed["action"] == "created"
    assert deployed["active_color"] is None
    assert waited["ready"] == 2
    assert smoked["errors"] == 0
    assert smoked["p95_ms"] < web.slo_ms
    assert (promoted["previous_color"], promoted["changed"]) == (None, True)
    assert retired["retired"] is None, "a first deploy has no old color"

    assert set(objects(core, apps, namespace)) == {
        "deployment/web-blue",
        "service/web",
        "service/web-preview",
    }
    blue = apps.read_namespaced_deployment("web-blue", namespace)
    assert blue.metadata.labels["version"] == "1.0.0"
    assert blue.spec.template.metadata.labels == {"app": "web", "color": "blue", "version": "1.0.0"}
    assert selector(core, namespace) == {"app": "web", "color": "blue"}
    assert selector(core, namespace, "web-preview") == {"app": "web", "color": "blue"}
    assert {answer[1:] for answer in answers(core, namespace)} == {("1.0.0", "blue")}


def test_blue_to_green_moves_requests_without_errors(
    kube: KubeEmulator, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    namespace = create_namespace(core, INGRESS_NAMESPACE)
    try:
        web = BlueGreenService(namespace, rollback_window_seconds=1.0)
        web.release("1.0.0")
        host, port = kube.ingress_address(namespace)
        seen: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def clients() -> None:
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(f"http://{host}:{port}/web/health", timeout=5) as response:
                        seen.append((response.status, json.loads(response.read())["version"]))
                except urllib.error.HTTPError as exc:
                    seen.append((exc.code, None))

        traffic = threading.Thread(target=clients)
        traffic.start()
        try:
            deployed = web.deploy("2.0.0")
            web.wait_rollout("2.0.0")
            web.smoke_test("2.0.0")
            before_promote = len(seen)
            promoted = web.promote("2.0.0")
            wait_for(lambda: len(seen) > before_promote + 20, what="requests after promote")
            assert replicas(apps, namespace, "web-blue") == 2, "the old color stays up during the window"
            retired = web.retire("2.0.0")
            wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector="color=blue").items)
            after_retire = len(seen)
            wait_for(lambda: len(seen) > after_retire + 20, what="requests after retire")
        finally:
            stop.set()
            traffic.join()

        assert deployed["color"] == "green"
        assert (promoted["previous_color"], promoted["color"]) == ("blue", "green")
        assert retired["retired"] == "web-blue"
        assert replicas(apps, namespace, "web-blue") == 0
        statuses = {status for status, _ in seen}
        assert statuses == {200}, f"requests failed during the switch: {sorted(statuses)}"
        versions = [version for _, version in seen]
        first_green = versions.index("2.0.0")
        assert set(versions[:first_green]) == {"1.0.0"}
        assert set(versions[first_green:]) == {"2.0.0"}, "requests went back to blue: the selector flapped"
        assert first_green >= before_promote - 1, "green answered before promote"
    finally:
        core.delete_namespace(namespace)


def test_never_ready_image_fails_at_the_progress_deadline_naming_the_condition(
    web: BlueGreenService, core: client.CoreV1Api, namespace: str
) -> None:
    web.release("1.0.0")
    before = core.read_namespaced_service("web", namespace).metadata.resource_version
    slow_web = BlueGreenService(namespace, progress_deadline_seconds=2)

    slow_web.deploy("2.0.0-neverready")
    with pytest.raises(AirflowFailException) as failed:
        slow_web.wait_rollout("2.0.0-neverready")
    message = str(failed.value)
    assert "web-green made no progress" in message
    assert "Ready=False ContainersNotReady" in message
    assert "pod web-green-" in message

    with pytest.raises(AirflowFailException, match="refusing to promote web-green: not rolled out"):
        slow_web.promote("2.0.0-neverready")
    assert selector(core, namespace) == {"app": "web", "color": "blue"}
    assert core.read_namespaced_service("web", namespace).metadata.resource_version == before
    assert {answer[1:] for answer in answers(core, namespace)} == {("1.0.0", "blue")}


def failed_smoke_test(
    web: BlueGreenService,
    core: client.CoreV1Api,
    namespace: str,
    image: str,
    tester: BlueGreenService | None = None,
) -> str:
    """Release 1.0.0 (blue), deploy and roll out `image` on green and smoke-test it (by `tester`,
    `web` itself by default): the message the smoke test fails with, the Service still on blue."""
    web.release("1.0.0")
    web.deploy(image)
    web.wait_rollout(image)
    with pytest.raises(AirflowFailException) as failed:
        (tester or web).smoke_test(image)
    assert selector(core, namespace) == {"app": "web", "color": "blue"}
    return str(failed.value)


def test_5xx_image_fails_the_smoke_test_and_keeps_the_selector(
    web: BlueGreenService, core: client.CoreV1Api, namespace: str
) -> None:
    message = failed_smoke_test(web, core, namespace, "2.0.0-5xx")
    assert f"{web.smoke_requests}/{web.smoke_requests} requests failed (HTTP [500]" in message
    assert "the active Service is unchanged" in message


def test_slow_image_breaching_its_slo_class_fails_with_the_measured_p95(
    web: BlueGreenService, core: client.CoreV1Api, namespace: str
) -> None:
    tester = BlueGreenService(namespace, smoke_requests=3)
    message = failed_smoke_test(web, core, namespace, "2.0.0-slow", tester)
    assert "breaches the business SLO of 500" in message
    p95 = float(message.split("p95 ")[1].split(" ms", maxsplit=1)[0])
    assert 800 <= p95 < 2000, message


def test_clearing_and_rerunning_every_task_changes_nothing(
    web: BlueGreenService, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    web.release("1.0.0")
    first = objects(core, apps, namespace)
    deployed, _, _, promoted, retired = web.release("1.0.0")
    assert deployed["action"] == "unchanged"
    assert deployed["preview_changed"] is False
    assert promoted["changed"] is False
    assert retired["retired"] is None
    assert objects(core, apps, namespace) == first, "a re-run wrote to the cluster"

    web.release("2.0.0")
    second = objects(core, apps, namespace)
    assert set(second) == {
        "deployment/web-blue",
        "deployment/web-green",
        "service/web",
        "service/web-preview",
    }
    # Each task cleared and run again on its own, out of order too: green stays the target.
    for step in (web.deploy, web.promote, web.wait_rollout, web.smoke_test, web.retire, web.deploy):
        result = step("2.0.0")
        assert result["color"] == "green", step
    assert objects(core, apps, namespace) == second, "a re-run wrote to the cluster"
    assert selector(core, namespace) == {"app": "web", "color": "green"}


def test_rollback_restores_the_previous_color_and_requests_follow(
    web: BlueGreenService, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    web.release("1.0.0")
    web.release("2.0.0")
    assert replicas(apps, namespace, "web-blue") == 0
    assert (
        core.read_namespaced_service("web", namespace).metadata.annotations[PREVIOUS_COLOR_ANNOTATION]
        == "blue"
    )

    rolled_back = web.rollback("2.0.0")
    assert (rolled_back["color"], rolled_back["changed"], rolled_back["rolled_back_from"]) == (
        "blue",
        True,
        "green",
    )
    assert replicas(apps, namespace, "web-blue") == 2, "the retired color was scaled up again"
    assert selector(core, namespace) == {"app": "web", "color": "blue"}
    assert {answer for answer in answers(core, namespace)} == {(200, "1.0.0", "blue")}

    settled = objects(core, apps, namespace)
    again = web.rollback("2.0.0")
    assert again["changed"] is False
    assert objects(core, apps, namespace) == settled, "a second rollback changed something"

    # Retiring now would take away the color serving traffic: refused.
    with pytest.raises(AirflowFailException, match="promote first; nothing retired"):
        web.retire("2.0.0")
    # The run can go forward again: green still runs 2.0.0, so promote needs no new rollout.
    assert web.deploy("2.0.0")["action"] == "unchanged"
    assert web.promote("2.0.0")["previous_color"] == "blue"
    assert {answer for answer in answers(core, namespace)} == {(200, "2.0.0", "green")}


def test_rollback_without_a_previous_color_is_a_no_op(web: BlueGreenService, namespace: str) -> None:
    assert web.rollback("1.0.0")["changed"] is False
    web.release("1.0.0")
    assert web.rollback("1.0.0")["changed"] is False


def test_plan_mode_reads_but_changes_nothing(
    web: BlueGreenService, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    plan = [
        step("1.0.0", mode="plan")
        for step in (web.deploy, web.wait_rollout, web.smoke_test, web.promote, web.retire, web.rollback)
    ]
    assert objects(core, apps, namespace) == {}
    assert plan[0]["action"] == "create"
    web.release("1.0.0")
    settled = objects(core, apps, namespace)
    assert web.deploy("2.0.0", mode="plan")["action"] == "create"
    assert web.promote("2.0.0", mode="plan")["previous_color"] == "blue"
    assert objects(core, apps, namespace) == settled


def test_plan_mode_succeeds_without_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": "/nonexistent/kubeconfig"}}),
    )
    web = BlueGreenService("nowhere")
    assert web.deploy("1.0.0", mode="plan")["action"] == "create"
    assert web.promote("1.0.0", mode="plan")["color"] == "blue"
    with pytest.raises(Exception):  # noqa: B017 - apply mode must not pretend
        web.deploy("1.0.0")


def test_the_services_secret_is_referenced_never_copied(
    web: BlueGreenService,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    namespace: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secure = BlueGreenService(namespace, secret="web-env")
    with pytest.raises(AirflowFailException, match="secret web-env not found"):
        secure.deploy("1.0.0")
    assert objects(core, apps, namespace) == {}

    password = "pw-" + namespace
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="web-env"),
            string_data={"DATABASE_URL": f"postgresql://app:{password}@127.0.0.1:1/pyairtable"},
        ),
    )
    capfd.readouterr()
    results = secure.release("1.0.0")
    logged = "".join(capfd.readouterr())
    container = apps.read_namespaced_deployment("web-blue", namespace).spec.template.spec.containers[0]
    assert container.env_from[0].secret_ref.name == "web-env"
    everything = json.dumps(
        apps.api_client.sanitize_for_serialization(apps.list_namespaced_deployment(namespace))
    )
    assert password not in everything
    assert password not in json.dumps(results)
    assert "Secret web-env provides keys DATABASE_URL (values not read)" in logged
    assert password not in logged
    status = core.connect_get_namespaced_service_proxy_with_path
    try:
        status("web:http", namespace, "api/records", _preload_content=False)
        raise AssertionError("the pod should have tried the database from the Secret")
    except ApiException as exc:
        assert (exc.status, json.loads(exc.body)["error"]) == (503, "database unavailable")


def test_a_stale_selector_write_is_refused_and_retried(
    kube: KubeEmulator, web: BlueGreenService, core: client.CoreV1Api, namespace: str
) -> None:
    web.release("1.0.0")
    hook = BlueGreenHook(CONN_ID, namespace)
    spec = ServiceSpec("web", web.image("1.0.0"), 2, 8080, "/health")
    stale = hook.read_state("web").active
    core.patch_namespaced_service("web", namespace, {"metadata": {"labels": {"touched": "yes"}}})
    with pytest.raises(StateChanged):
        hook.point_service(spec, "web", "active", "green", stale)
    assert selector(core, namespace) == {"app": "web", "color": "blue"}


def test_rollback_reads_again_when_the_deployment_changes_under_it(
    web: BlueGreenService,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The emulator's controller writes a Deployment's status at any moment; here a real write lands
    right after each of the operator's first two reads (its read is wrapped only to time that write)."""
    web.release("1.0.0")
    web.release("2.0.0")
    operator = BlueGreenRollbackOperator(task_id="rollback", poll_seconds=0.1, **web.arguments("2.0.0"))
    observe = operator.observe
    writes: list[str] = []

    def observe_then_change(mode: str) -> Any:
        state = observe(mode)
        if len(writes) < 2:
            writes.append(f"touch-{len(writes)}")
            apps.patch_namespaced_deployment(
                "web-blue", namespace, {"metadata": {"labels": {"touched": writes[-1]}}}
            )
        return state

    monkeypatch.setattr(operator, "observe", observe_then_change)
    assert run_task(operator)["color"] == "blue"
    assert writes == ["touch-0", "touch-1"]
    assert replicas(apps, namespace, "web-blue") == 2
    assert selector(core, namespace) == {"app": "web", "color": "blue"}


def test_dashboard_link_names_namespace_and_deployment(web: BlueGreenService, namespace: str) -> None:
    operator = BlueGreenDeployOperator(task_id="deploy", **web.arguments("1.0.0"))
    run_task(operator)
    link = ServiceDashboardLink().get_link(operator, ti_key=None)  # type: ignore[arg-type]
    assert link == f"http://dashboards.test/d?ns={namespace}&deploy=web-blue"


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 21)]
    assert percentile(samples, 0.95) == 19.0
    assert percentile(samples, 0.5) == 10.0
    assert percentile([5.0], 0.95) == 5.0
