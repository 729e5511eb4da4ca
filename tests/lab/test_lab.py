"""The lab: every part answers real requests, the seed has its traps, and bad input is refused.

Most tests use the session's shared lab (the `lab` fixture); the ones that stop processes run
a second lab on other ports and another data directory (`isolated_settings`), so the shared one
keeps working for every other module.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg2
import pytest
import redis
import requests
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from lab import supervisor
from lab.credentials import APP_ROLE, MIGRATOR_ROLE, PGBOUNCER_ADMIN, secrets
from lab.kafka_lab import PRODUCTION_CONN_ID as KAFKA_PRODUCTION_CONN_ID
from lab.kafka_lab import STAGING_CONN_ID as KAFKA_STAGING_CONN_ID
from lab.kube_seed import consumer_deployments
from lab.migration_config import lab_config
from lab.pgbouncer import PgBouncer
from lab.processes import Binary, LabError, State, apt_hint, marked_processes, port_is_free
from lab.prometheus import RULES_FILE, Prometheus
from lab.redis_lab import SESSION_TTL_SECONDS, RedisServer
from lab.route53 import moto_client
from lab.settings import REPO_ROOT, LabSettings
from pyairtable_migration.config import load_config
from pyairtable_migration.hooks.prometheus import PrometheusHook
from pyairtable_migration.monitoring.alerts import alert_rules
from tests.own_lab import point_pooler

pytestmark = pytest.mark.lab
CONFIG = load_config()


def connect(
    settings: LabSettings,
    port: int | None,
    user: str | None,
    password: str | None,
    dbname: str | None = "pyairtable",
):
    connection = psycopg2.connect(
        host=settings.host, port=port, user=user, password=password, dbname=dbname, connect_timeout=5
    )
    connection.autocommit = True
    return connection


def query(connection, statement: str, params: tuple = ()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args],
        check=False,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'plugins'}:{REPO_ROOT}", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def lab_env(settings: LabSettings) -> dict[str, str]:
    """LAB_* variables that point the CLI at `settings`."""
    return {f"LAB_{name.upper()}": str(value) for name, value in vars(settings).items() if name != "host"}


# --- each part answers ------------------------------------------------------------------------


def test_both_clusters_answer_with_passwords_and_logical_replication(lab: LabSettings) -> None:
    settings, passwords = lab, secrets(lab)
    for port in (settings.postgres_source_port, settings.postgres_target_port):
        connection = connect(settings, port, MIGRATOR_ROLE, passwords[MIGRATOR_ROLE])
        try:
            assert query(connection, "SHOW server_version")[0][0].startswith("15.")
            assert query(connection, "SHOW wal_level") == [("logical",)]
            assert query(connection, "SHOW max_replication_slots") == [("10",)]
            assert query(connection, "SHOW listen_addresses") == [("127.0.0.1",)]
            # No TCP line may trust anyone: every app login needs its password.
            methods = query(
                connection, "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'"
            )
            assert methods == [("scram-sha-256",)]
            owner = query(
                connection, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'pyairtable'"
            )
            assert owner == [(MIGRATOR_ROLE,)]
            roles = dict(
                query(connection, "SELECT rolname, rolreplication FROM pg_roles WHERE rolname LIKE '%%a%%'")
            )
            assert roles[MIGRATOR_ROLE] is True
            assert roles[APP_ROLE] is False
        finally:
            connection.close()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connect(settings, settings.postgres_source_port, APP_ROLE, "not-the-password")


def test_target_starts_empty_and_source_is_seeded(lab: LabSettings) -> None:
    settings, passwords = lab, secrets(lab)
    target = connect(settings, settings.postgres_target_port, MIGRATOR_ROLE, passwords[MIGRATOR_ROLE])
    source = connect(settings, settings.postgres_source_port, APP_ROLE, passwords[APP_ROLE])
    try:
        assert query(target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
        assert query(source, "SELECT count(*) >= %s FROM records", (supervisor.seeded_records(lab),)) == [
            (True,)
        ]
        for table in (
            "users",
            "workspaces",
            "workspace_members",
            "permissions",
            "bases",
            "tables",
            "automations",
            "audit_log",
            '"Record Comments"',
        ):
            assert query(source, f"SELECT count(*) > 0 FROM {table}") == [(True,)], table
    finally:
        target.close()
        source.close()


def test_seed_has_the_traps_the_migration_must_handle(lab: LabSettings) -> None:
    settings = lab
    connection = connect(settings, settings.postgres_source_port, MIGRATOR_ROLE, secrets(lab)[MIGRATOR_ROLE])
    try:
        without_pk = query(
            connection,
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind = 'r'
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                                 WHERE k.conrelid = c.oid AND k.contype = 'p')""",
        )
        assert without_pk == [("audit_log",)]
        assert query(connection, "SELECT to_regclass('public.\"Record Comments\"') IS NOT NULL") == [(True,)]
        assert query(connection, "SELECT last_value > 1000 FROM invoice_number_seq") == [(True,)]
        assert query(
            connection,
            "SELECT attidentity FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'id'",
        ) == [("a",)]
        foreign_keys = query(connection, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'")[0][0]
        assert foreign_keys >= 10
        secondary = query(
            connection,
            """SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND NOT i.indisunique""",
        )[0][0]
        assert secondary >= 5
        # The seeded objects belong to migrator, and the app may use them but not own them.
        owners = query(
            connection,
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'",
        )
        assert owners == [(MIGRATOR_ROLE,)]
    finally:
        connection.close()


def test_pgbouncer_serves_the_app_in_transaction_mode(lab: LabSettings) -> None:
    settings = lab
    app = connect(settings, settings.pgbouncer_port, APP_ROLE, secrets(lab)[APP_ROLE])
    try:
        (row_id,) = query(
            app, "INSERT INTO records (table_id, data) VALUES (1, %s) RETURNING id", ('{"lab": "test"}',)
        )[0]
        assert query(app, "SELECT data->>'lab' FROM records WHERE id = %s", (row_id,)) == [("test",)]
        query(app, "DELETE FROM records WHERE id = %s RETURNING id", (row_id,))
    finally:
        app.close()
    admin = connect(
        settings, settings.pgbouncer_port, PGBOUNCER_ADMIN, secrets(lab)[PGBOUNCER_ADMIN], "pgbouncer"
    )
    try:
        with admin.cursor() as cursor:
            cursor.execute("SHOW DATABASES")
            columns = [column.name for column in cursor.description]
            databases = {row[0]: dict(zip(columns, row, strict=True)) for row in cursor.fetchall()}
            cursor.execute("SHOW CONFIG")
            config = {row[0]: row[1] for row in cursor.fetchall()}
    finally:
        admin.close()
    assert databases["pyairtable"]["port"] == settings.postgres_source_port
    assert config["pool_mode"] == "transaction"
    assert config["max_client_conn"] == "500"
    assert config["default_pool_size"] == "20"


def test_redis_source_is_seeded_with_every_type_and_target_is_empty(lab: LabSettings) -> None:
    settings = lab
    source = redis.Redis(host=settings.host, port=settings.redis_source_port, decode_responses=True)
    target = redis.Redis(host=settings.host, port=settings.redis_target_port, decode_responses=True)
    assert source.ping() and target.ping()
    assert source.dbsize() >= 400
    types = {source.type(key) for key in source.scan_iter(count=1000)}
    assert types == {"string", "hash", "list", "set", "zset"}
    session = next(source.scan_iter(match="session:*"))
    # Counting down since the lab was seeded, which on a busy machine may be many minutes before.
    assert 0 < source.ttl(session) <= SESSION_TTL_SECONDS
    assert source.ttl("config:feature_flags") == -1
    assert target.dbsize() == 0


def test_route53_has_weighted_records_staging_100_production_0(lab: LabSettings) -> None:
    settings = lab
    route53 = moto_client(settings)
    zones = [z for z in route53.list_hosted_zones()["HostedZones"] if z["Name"] == CONFIG.dns.hosted_zone]
    assert len(zones) == 1
    sets = route53.list_resource_record_sets(HostedZoneId=zones[0]["Id"])["ResourceRecordSets"]
    weighted = {(s["Name"], s["SetIdentifier"]): s for s in sets if "SetIdentifier" in s}
    for name in CONFIG.dns.records:
        staging = weighted[(name, CONFIG.environments.staging.set_identifier)]
        production = weighted[(name, CONFIG.environments.production.set_identifier)]
        assert (staging["Weight"], staging["ResourceRecords"]) == (
            100,
            [{"Value": settings.staging_ingress_host}],
        )
        assert (production["Weight"], production["ResourceRecords"]) == (
            0,
            [{"Value": settings.production_ingress_host}],
        )
        assert staging["TTL"] == production["TTL"] == 300


# The consumer groups' worker Deployments, seeded in both namespaces.
WORKERS = tuple(consumer_deployments(CONFIG).values())


def test_kubernetes_staging_deployments_are_ready_and_production_has_only_idle_workers(
    lab: LabSettings,
) -> None:
    settings = lab
    staging, production = CONFIG.environments.staging, CONFIG.environments.production
    with k8s_config.new_client_from_config(config_file=str(settings.data_dir / "kubeconfig")) as api:
        apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
        deployments = {d.metadata.name: d for d in apps.list_namespaced_deployment(staging.namespace).items}
        services = {s.metadata.name for s in core.list_namespaced_service(staging.namespace).items}
        environments = {
            name: effective_env(core, staging.namespace, deployment.spec.template.spec.containers[0])
            for name, deployment in deployments.items()
        }
        assert {ns.metadata.name for ns in core.list_namespace().items} >= {
            staging.namespace,
            production.namespace,
        }
        # Production: no service yet, only the consumer groups' workers, at 0 replicas until their
        # group moves there.
        idle = {
            d.metadata.name: d.spec.replicas
            for d in apps.list_namespaced_deployment(production.namespace).items
        }
        assert idle == dict.fromkeys(WORKERS, 0)
        assert core.list_namespaced_service(production.namespace).items == []
        if production.service_secret:
            production_env = secret_values(core, production.namespace, production.service_secret)
            assert production_env["REDIS_URL"] == f"redis://{settings.host}:{settings.redis_endpoint_port}/0"
            assert production_env["DATABASE_URL"].endswith(
                f"@{settings.host}:{settings.pgbouncer_port}/pyairtable"
            )
            # Each environment's services produce to its own Kafka cluster.
            assert production_env["KAFKA_BOOTSTRAP"] == f"{settings.host}:{settings.kafka_production_port}"
    assert set(deployments) == {f"{name}-blue" for name in CONFIG.deployable} | set(WORKERS)
    for worker in WORKERS:
        assert deployments[worker].status.ready_replicas == 1
        assert environments[worker]["KAFKA_BOOTSTRAP"] == f"{settings.host}:{settings.kafka_staging_port}"
        assert environments[worker]["KAFKA_CONSUMER_GROUP"] in CONFIG.kafka.consumer_groups  # type: ignore[union-attr]
    for name, service in CONFIG.deployable.items():
        deployment = deployments[f"{name}-blue"]
        assert deployment.status.ready_replicas == service.replicas
        assert deployment.metadata.labels == {
            "app": name,
            "color": "blue",
            "version": service.image.rsplit(":")[1],
        }
        env = environments[f"{name}-blue"]
        assert env["DATABASE_URL"] == (
            f"postgresql://{APP_ROLE}:{secrets(lab)[APP_ROLE]}@{settings.host}:{settings.pgbouncer_port}/pyairtable"
        )
        assert env["REDIS_URL"] == f"redis://{settings.host}:{settings.redis_endpoint_port}/0"
        assert env["HEALTH_PATH"] == service.health_path
        assert {name, f"{name}-preview"} <= services
    latency = {
        service.slo_class: int(environments[f"{name}-blue"]["BASE_LATENCY_MS"])
        for name, service in CONFIG.deployable.items()
    }
    assert latency["ai"] > latency["business"] > latency["health"]
    # The staging ingress routes to the pods, and the pods reach the seeded database.
    reply = requests.get(
        f"http://{settings.staging_ingress_host}:{settings.ingress_port}/user-service/api/users/1", timeout=5
    )
    assert reply.status_code == 200
    assert reply.json()["user"]["email"] == "user1@example.com"


def secret_values(core: k8s.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    secret = core.read_namespaced_secret(name, namespace)
    return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


def effective_env(core: k8s.CoreV1Api, namespace: str, container: k8s.V1Container) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom Secrets, then env."""
    env: dict[str, str] = {}
    for source in container.env_from or []:
        env |= secret_values(core, namespace, source.secret_ref.name)
    env |= {item.name: item.value for item in container.env or []}
    return env


def test_prometheus_scrapes_every_ready_staging_pod(lab: LabSettings) -> None:
    settings = lab
    expected = sum(service.replicas for service in CONFIG.deployable.values())
    deadline = time.monotonic() + 30
    while True:
        targets = requests.get(
            f"http://{settings.host}:{settings.prometheus_port}/api/v1/targets", timeout=5
        ).json()["data"]["activeTargets"]
        pods = [t for t in targets if t["labels"]["job"] == "pods"]
        healthy = [t for t in pods if t["health"] == "up"]
        if len(healthy) >= expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(healthy) >= expected, [(t["labels"], t["health"], t["lastError"]) for t in pods]
    assert {t["labels"]["namespace"] for t in healthy} == {CONFIG.environments.staging.namespace}
    assert {t["labels"]["job"] for t in targets} == {"pods", "edge", "loadgen"}


def test_connections_cover_every_config_id_and_work(lab: LabSettings) -> None:
    from airflow.models.connection import Connection

    settings = lab
    for path in (settings.data_dir / "connections.json", settings.data_dir / "airflow.env"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    stored = json.loads((settings.data_dir / "connections.json").read_text())
    endpoint_conn_id = CONFIG.redis.endpoint_conn_id
    assert endpoint_conn_id, "the shipped config names the Redis write endpoint"
    alertmanager_conn_id = CONFIG.validation.alertmanager_conn_id
    assert alertmanager_conn_id, "the shipped config names Alertmanager"
    expected = {
        CONFIG.database.source_conn_id: "postgres",
        CONFIG.database.target_conn_id: "postgres",
        CONFIG.database.poolers[0].admin_conn_id: "postgres",
        CONFIG.redis.source_conn_id: "redis",
        CONFIG.redis.target_conn_id: "redis",
        endpoint_conn_id: "haproxy",
        CONFIG.dns.aws_conn_id: "aws",
        CONFIG.environments.staging.kubernetes_conn_id: "kubernetes",
        CONFIG.environments.production.kubernetes_conn_id: "kubernetes",
        CONFIG.traffic.gate.prometheus_conn_id: "http",
        alertmanager_conn_id: "http",
        KAFKA_STAGING_CONN_ID: "generic",
        KAFKA_PRODUCTION_CONN_ID: "generic",
    }
    assert {conn_id: fields["conn_type"] for conn_id, fields in stored.items()} == expected
    env_lines = (settings.data_dir / "airflow.env").read_text()
    for conn_id in expected:
        assert f"AIRFLOW_CONN_{conn_id.upper()}='" in env_lines
    # What Airflow itself reads from the environment (the fixture put it there) must work.
    source = Connection.from_json(os.environ[f"AIRFLOW_CONN_{CONFIG.database.source_conn_id.upper()}"])
    connection = connect(settings, source.port, source.login, source.password, source.schema)
    try:
        assert query(connection, "SELECT current_user") == [(MIGRATOR_ROLE,)]
    finally:
        connection.close()
    admin = Connection.from_json(
        os.environ[f"AIRFLOW_CONN_{CONFIG.database.poolers[0].admin_conn_id.upper()}"]
    )
    ini = Path(admin.extra_dejson["ini_path"]).read_text()
    assert f"pyairtable = host=127.0.0.1 port={settings.postgres_source_port} dbname=pyairtable" in ini
    endpoint = Connection.from_json(os.environ[f"AIRFLOW_CONN_{endpoint_conn_id.upper()}"])
    assert (endpoint.host, endpoint.port) == (settings.host, settings.redis_endpoint_admin_port)
    assert endpoint.extra_dejson == {"backend": "redis"}
    alertmanager = Connection.from_json(os.environ[f"AIRFLOW_CONN_{alertmanager_conn_id.upper()}"])
    assert (alertmanager.host, alertmanager.port) == (settings.host, settings.alertmanager_port)
    aws = Connection.from_json(os.environ[f"AIRFLOW_CONN_{CONFIG.dns.aws_conn_id.upper()}"])
    assert aws.extra_dejson["endpoint_url"] == f"http://127.0.0.1:{settings.moto_port}"
    kube = Connection.from_json(
        os.environ[f"AIRFLOW_CONN_{CONFIG.environments.staging.kubernetes_conn_id.upper()}"]
    )
    assert Path(kube.extra_dejson["kube_config_path"]).exists()


def test_status_reports_every_component_up_without_printing_secrets(lab: LabSettings) -> None:
    result = run_cli("status", "--resources", env=lab_env(lab))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [c.name for c in supervisor.components()] + ["resources"]
    assert all(" up " in line for line in lines[:-1])
    for password in secrets(lab).values():
        assert password not in result.stdout + result.stderr


def test_up_again_starts_nothing_and_keeps_the_pids(lab: LabSettings) -> None:
    before = dict(State(lab).pids)
    lines: list[str] = []
    supervisor.up(lab, supervisor.seeded_records(lab), echo=lines.append)
    assert State(lab).pids == before
    component_lines = [line for line in lines if line.split()[0] in before]
    assert len(component_lines) == len(before) == len(supervisor.components())
    assert all("already running" in line for line in component_lines), lines


def test_an_up_finding_prometheus_with_stale_alert_rules_has_it_reload_them(lab: LabSettings) -> None:
    prometheus = PrometheusHook(CONFIG.traffic.gate.prometheus_conn_id)
    rules_file = Prometheus().directory(lab) / RULES_FILE
    rules_file.write_text("groups: []\n")  # as a lab started before the rules existed
    requests.post(f"http://{lab.host}:{lab.prometheus_port}/-/reload", timeout=10).raise_for_status()
    assert prometheus.rules() == []
    lines: list[str] = []
    supervisor.up(lab, supervisor.seeded_records(lab), echo=lines.append)
    assert [line.split()[0] for line in lines if "config and alert rules reloaded" in line] == ["prometheus"]
    loaded = {rule["name"] for group in prometheus.rules() for rule in group["rules"]}
    assert loaded == {rule.alert for rule in alert_rules(lab_config(lab))}
    lines.clear()
    supervisor.up(lab, supervisor.seeded_records(lab), echo=lines.append)
    assert not any("reloaded" in line for line in lines)  # nothing changed: left alone


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["lots", "0", "-5", "1.5", ""])
def test_a_scale_that_is_not_a_positive_number_is_refused_by_name(
    scale: str, isolated_settings: LabSettings
) -> None:
    with pytest.raises(
        LabError, match=f"seed scale must be a positive whole number of records, got '{scale}'"
    ):
        supervisor.up(isolated_settings, scale)
    assert marked_processes(isolated_settings) == []


def test_the_cli_names_a_bad_scale(isolated_settings: LabSettings) -> None:
    result = run_cli("up", "--scale", "ten", env=lab_env(isolated_settings))
    assert result.returncode == 1
    assert "seed scale must be a positive whole number of records, got 'ten'" in result.stderr


def test_a_taken_port_is_named_with_its_component_and_holder(isolated_settings: LabSettings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", isolated_settings.redis_source_port))
        squatter.listen()
        with pytest.raises(LabError) as refused:
            supervisor.up(isolated_settings, 100)
    message = str(refused.value)
    assert f"port {isolated_settings.redis_source_port} on 127.0.0.1, needed by redis-source" in message
    assert f"pid {os.getpid()}" in message
    assert marked_processes(isolated_settings) == []  # refused before anything started


def test_two_components_on_one_port_are_refused(isolated_settings: LabSettings) -> None:
    from dataclasses import replace

    clash = replace(isolated_settings, redis_target_port=isolated_settings.redis_source_port)
    with pytest.raises(
        LabError, match=f"port {clash.redis_source_port} .* both redis-source and redis-target"
    ):
        supervisor.up(clash, 100)


def test_a_missing_binary_is_named_with_its_apt_package(
    isolated_settings: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PgBouncer, "binary", Binary(Path("/nonexistent/pgbouncer"), apt_hint("pgbouncer")))
    with pytest.raises(
        LabError, match=r"pgbouncer: /nonexistent/pgbouncer is missing; .*apt-get install pgbouncer"
    ):
        supervisor.up(isolated_settings, 100)
    assert marked_processes(isolated_settings) == []


def test_a_component_that_fails_to_start_stops_what_this_call_started(
    isolated_settings: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_command = RedisServer.command

    def broken(self: RedisServer, settings: LabSettings) -> list[str]:
        argv = real_command(self, settings)
        return [*argv, "--no-such-option", "yes"] if self.role == "source" else argv

    monkeypatch.setattr(RedisServer, "command", broken)
    with pytest.raises(LabError, match="redis-source exited with code 1 while starting"):
        supervisor.up(isolated_settings, 100)
    assert marked_processes(isolated_settings) == []
    settings = isolated_settings
    for port in (settings.postgres_source_port, settings.postgres_target_port, settings.pgbouncer_port):
        assert port_is_free(settings.host, port), port
    assert State(settings).pids == {}


# --- a whole second lab: timing, memory, fault drills, down -------------------------------------


def test_a_lab_on_other_ports_starts_in_time_restarts_parts_and_goes_fully_down(
    isolated_settings: LabSettings,
) -> None:
    settings = isolated_settings
    startup = supervisor.up(settings)  # the default scale
    time.sleep(3)  # let the pods and Prometheus settle into idle
    count, rss = supervisor.resources(settings)
    print(
        f"\nlab startup at scale {supervisor.DEFAULT_SCALE}: {startup:.1f} s; "
        f"idle: {count} processes, {rss / 2**20:.0f} MiB RSS"
    )
    assert startup < 60
    assert rss < 2 * 2**30
    assert all(entry.state == "up" for entry in supervisor.status(settings))
    pids = dict(State(settings).pids)

    # Fault drill: PostgreSQL source crashes (SIGKILL), is reported down, restarts with its data.
    supervisor.stop_component("postgres-source", settings, crash=True)
    assert gone(pids["postgres-source"])
    states = {entry.name: entry.state for entry in supervisor.status(settings)}
    assert states["postgres-source"] == "down"
    assert states["postgres-target"] == "up"
    new_pid = supervisor.start_component("postgres-source", settings)
    assert new_pid != pids["postgres-source"]
    source = connect(
        settings, settings.postgres_source_port, MIGRATOR_ROLE, supervisor.secrets(settings)[MIGRATOR_ROLE]
    )
    try:
        assert query(source, "SELECT count(*) FROM records") == [(supervisor.DEFAULT_SCALE,)]
    finally:
        source.close()

    # The switchover's move: rewrite the [databases] line, RELOAD, and writers reach the target.
    point_pooler(settings, settings.postgres_target_port)
    app = connect(settings, settings.pgbouncer_port, APP_ROLE, supervisor.secrets(settings)[APP_ROLE])
    try:
        assert query(app, "SELECT current_setting('port')::int") == [(settings.postgres_target_port,)]
    finally:
        app.close()

    # moto restarts empty; starting it again recreates the zone and the weighted records.
    supervisor.restart_component("moto", settings)
    route53 = moto_client(settings)
    zone_id = route53.list_hosted_zones()["HostedZones"][0]["Id"]
    weighted = [
        s
        for s in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        if "Weight" in s
    ]
    assert len(weighted) == 2 * len(CONFIG.dns.records)

    lab_pids = [p.pid for p in marked_processes(settings)]
    assert len(lab_pids) >= 8
    assert supervisor.down(settings) == []
    assert [pid for pid in lab_pids if not gone(pid)] == []
    for component in supervisor.components():
        for host, port in component.listens(settings):
            assert port_is_free(host, port), (component.name, port)
    assert all(entry.state == "down" for entry in supervisor.status(settings))
    assert supervisor.down(settings) == []  # safe to repeat
    result = run_cli("status", env=lab_env(settings))
    assert result.returncode == 1
    assert supervisor.down(settings, purge=True) == []
    assert not settings.data_dir.exists()
