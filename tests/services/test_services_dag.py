"""A real Airflow run (dag.test) of the services phase for every PyAirtable node.

The DAG is built from the project's configuration by the project's builder, keeping only the
services steps (the other phases have their own tests); it runs in apply mode against the
Kubernetes emulator, a throwaway PostgreSQL and Redis, through ordinary Airflow connections.
Kafka and the mesh are marked `external` here (nothing of them runs beside the test): their checks
end skipped and their dependents still deploy. Then a second release of two services, and the
rollback DAG scoped to one of them moves that one alone back.
"""

from __future__ import annotations

import copy

import pytest
import yaml
from airflow.sdk import DAG
from kubernetes import client

from lab.kube import KubeEmulator
from lab.synthetic_graph import real_document
from pyairtable_migration.builder import build_airflow_graph, run_params
from pyairtable_migration.config import MigrationConfig, parse_config
from pyairtable_migration.plan import MigrationPlan, build_plan
from pyairtable_migration.rollback import build_rollback_dag
from tests.dagrun import registered, task_states, xcom
from tests.services.conftest import create_namespace
from tests.services.support import BlueGreenService, postgres_connection, redis_connection

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("airflow_db")]
DAG_ID = "pyairtable_services_phase"
SECOND_RELEASE = "2.0.0"


def drill_config() -> MigrationConfig:
    """The real configuration with drill-sized waits."""
    document = copy.deepcopy(real_document())
    document["blue_green"].update(
        rollback_window_seconds=0.3, progress_deadline_seconds=30, rollout_poll_seconds=0.1, smoke_requests=20
    )
    for unreachable in ("kafka", "istio"):  # no broker and no mesh beside this test
        document["services"][unreachable]["external"] = True
    return parse_config(yaml.safe_dump(document))


def services_phase(plan: MigrationPlan) -> MigrationPlan:
    keep = {task_id for task_id, step in plan.steps.items() if step.phase == "services"}
    return MigrationPlan(
        steps={task_id: plan.steps[task_id] for task_id in keep},
        edges={(a, b) for a, b in plan.edges if a in keep and b in keep},
        group_tooltips=plan.group_tooltips,
    )


def build_services_dag(config: MigrationConfig) -> DAG:
    dag = DAG(DAG_ID, schedule=None, params=run_params(config), default_args={"retries": 0})
    build_airflow_graph(services_phase(build_plan(config)), dag)
    return registered(dag)


def test_the_services_phase_deploys_every_service_in_dependency_order_and_one_rolls_back_alone(
    kube: KubeEmulator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    postgres_port: int,
    redis_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = drill_config()
    namespace = config.environments.production.namespace
    create_namespace(core, namespace)
    secret = config.environments.production.service_secret
    assert secret
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=secret),
            string_data={"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{postgres_port}/postgres"},
        ),
    )
    # Production's stores: the readiness checks of the services deployed to production read them.
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{config.database.target_conn_id.upper()}", postgres_connection(postgres_port)
    )
    monkeypatch.setenv(f"AIRFLOW_CONN_{config.redis.target_conn_id.upper()}", redis_connection(redis_port))
    dag = build_services_dag(config)

    try:
        run = dag.test(run_conf={"mode": "apply"})
        instances = {ti.task_id: ti for ti in run.get_task_instances()}
        states = {task_id: ti.state for task_id, ti in instances.items()}

        external = {f"services.infrastructure.{name}.check_ready" for name in ("kafka", "istio")}
        # The phase's undo is there to be cleared alone, not taken: a healthy run skips it.
        skipped = {*external, "services.undo"}
        assert {task_id for task_id, state in states.items() if state != "success"} == skipped, states
        assert {states[task_id] for task_id in skipped} == {"skipped"}
        assert run.state == "success"
        assert states["services.domain.automation-service.deploy"] == "success", (
            "kafka's skip must not cascade"
        )
        assert len(states) == len(dag.tasks)

        for task in dag.tasks:
            ti = instances[task.task_id]
            if ti.state != "success":
                continue
            for upstream_id in task.upstream_task_ids:
                upstream = instances[upstream_id]
                assert upstream.end_date is not None and ti.start_date >= upstream.end_date, (
                    f"{task.task_id} started before {upstream_id} ended"
                )

        for name, node in config.deployable.items():
            service = core.read_namespaced_service(name, namespace)
            assert service.spec.selector == {"app": name, "color": "blue"}, name
            blue = apps.read_namespaced_deployment(f"{name}-blue", namespace)
            assert blue.spec.template.spec.containers[0].image == node.image
            assert (blue.status.ready_replicas or 0) == node.replicas
            assert blue.spec.template.spec.containers[0].env_from[0].secret_ref.name == secret
        assert {d.metadata.name for d in apps.list_namespaced_deployment(namespace).items} == {
            f"{name}-blue" for name in config.deployable
        }

        link = xcom(run, "services.core.api-gateway.deploy", "_link_ServiceDashboardLink")
        assert "pyairtable-production" in link and "api-gateway" in link
        assert xcom(run, "services.core.api-gateway.promote", "return_value")["changed"] is True
        assert xcom(run, "services.verify", "return_value")["problems"] == 0
        assert_one_service_rolls_back_alone(config, core, secret)
    finally:
        core.delete_namespace(namespace)


def assert_one_service_rolls_back_alone(config: MigrationConfig, core: client.CoreV1Api, secret: str) -> None:
    """A second release of two services, then the rollback DAG scoped to one of them: that one
    selects its previous color again; the other keeps its new release; every other step is skipped."""
    namespace = config.environments.production.namespace
    chosen, other = "web-bff", "mobile-bff"
    for name in (chosen, other):
        release = BlueGreenService(
            namespace, name=name, replicas=config.deployable[name].replicas, secret=secret
        )
        release.deploy(SECOND_RELEASE)
        release.wait_rollout(SECOND_RELEASE)
        release.promote(SECOND_RELEASE)
        assert core.read_namespaced_service(name, namespace).spec.selector["color"] == "green", name

    rollback = registered(build_rollback_dag(config, dag_id="pyairtable_services_rollback"))
    run = rollback.test(run_conf={"mode": "apply", "scope": "services", "services": [chosen]})
    states = task_states(run)
    assert run.state == "success", states
    undo = f"services.{config.deployable[chosen].tier}.{chosen}"
    acted = {task_id for task_id, state in states.items() if state == "success"}
    assert acted == {"check_run", undo}, states
    assert set(states.values()) == {"success", "skipped"}, states
    assert xcom(run, undo, "return_value")["changed"] is True
    assert core.read_namespaced_service(chosen, namespace).spec.selector == {"app": chosen, "color": "blue"}
    assert core.read_namespaced_service(other, namespace).spec.selector == {"app": other, "color": "green"}


def test_services_without_a_path_between_them_can_run_in_parallel() -> None:
    """No edge orders two services unless depends_on does (through any chain of services)."""
    config = drill_config()
    dag = DAG("services_structure", schedule=None, params=run_params(config))
    build_airflow_graph(services_phase(build_plan(config)), dag)
    depends = {name: set(node.depends_on) for name, node in config.services.items()}

    def reaches(name: str, other: str) -> bool:
        return other in depends[name] or any(reaches(d, other) for d in depends[name])

    entry = {
        name: f"services.{node.tier}.{name}." + ("deploy" if name in config.deployable else "check_ready")
        for name, node in config.services.items()
    }
    for name, task_id in entry.items():
        upstream = dag.get_task(task_id).get_flat_relative_ids(upstream=True)
        for other, other_task in entry.items():
            if other != name:
                assert (other_task in upstream) == reaches(name, other), (name, other)
    core = [name for name, node in config.services.items() if node.tier == "core"]
    assert sorted(core) == ["api-gateway", "auth-service"]
    assert dag.get_task("services.verify").trigger_rule == "none_failed"
