"""The migration configuration: a typed model that refuses bad input, naming every problem.

A bad file must be refused before anything is touched, and the on-call engineer should fix it
in one pass, so every problem is collected and reported at once: field errors from pydantic,
duplicate YAML keys, and the cross-references (dependencies, cycles, tiers, SLO classes).

    python -m pyairtable_migration.config check include/migration.yaml
"""

from __future__ import annotations

import heapq
import itertools
import re
import string
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Discriminator,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from pyairtable_migration.pgbackrest.settings import BackupSettings
from pyairtable_migration.problems import ConfigError, describe_error
from pyairtable_migration.problems import StrictModel as _Strict

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "include" / "migration.yaml"

# Service names become Kubernetes object names (`<name>-preview` the longest) and task ids.
SERVICE_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,53}[a-z0-9])?$")

ConnId = Annotated[str, StringConstraints(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
Name = Annotated[str, StringConstraints(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]


class InfrastructureNode(_Strict):
    """A shared dependency this DAG checks for readiness but never deploys."""

    kind: Literal["infrastructure"]
    tier: str
    depends_on: list[str] = Field(default_factory=list)
    check: Literal["postgres", "redis", "kafka", "mesh"]
    external: bool = False
    # postgres and redis default to database.source_conn_id and redis.source_conn_id; kafka needs
    # a connection whose host:port is a bootstrap broker; mesh needs an HTTP(S) URL to GET.
    conn_id: ConnId | None = None
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None

    @model_validator(mode="after")
    def _check_is_reachable(self) -> InfrastructureNode:
        if not self.external and self.check == "kafka" and self.conn_id is None:
            raise ValueError("a kafka check needs conn_id (a bootstrap broker), or external: true")
        if not self.external and self.check == "mesh" and self.url is None:
            raise ValueError("a mesh check needs url (an HTTP readiness endpoint), or external: true")
        return self


# A PodDisruptionBudget count: pods, or a percentage of the selected pods ("50%").
PodCount = Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=r"^(100|[1-9]?[0-9])%$")]
Percent = Annotated[int, Field(ge=1, le=100)]
KubeName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]


class ServiceNode(_Strict):
    """A deployable service, moved by blue-green deployment.

    The autoscaling and disruption fields override the `platform` section's defaults (None: the
    default). `replicas` is what a new color starts with; it must lie within the autoscaler's range.
    """

    kind: Literal["service"] = "service"
    tier: str
    depends_on: list[str] = Field(default_factory=list)
    image: Annotated[str, StringConstraints(pattern=r"^[^\s:@]+(:[^\s:@/]+)$")]
    replicas: PositiveInt
    health_path: Annotated[str, StringConstraints(pattern=r"^/\S*$")]
    slo_class: str
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    # Reached by users through the ingress controller (a public DNS name fronts it): its
    # NetworkPolicy admits the ingress namespace besides the services that depend on it.
    public: bool = False
    min_replicas: PositiveInt | None = None
    max_replicas: PositiveInt | None = None
    target_cpu_utilization: Percent | None = None
    # Either one (a service setting one replaces the platform's pair).
    min_available: PodCount | None = None
    max_unavailable: PodCount | None = None

    @model_validator(mode="after")
    def _one_disruption_bound(self) -> ServiceNode:
        if self.min_available is not None and self.max_unavailable is not None:
            raise ValueError("set min_available or max_unavailable, not both")
        return self


def _node_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("kind", "service"))
    return str(getattr(value, "kind", "service"))


Node = Annotated[
    Annotated[ServiceNode, Tag("service")] | Annotated[InfrastructureNode, Tag("infrastructure")],
    Discriminator(_node_kind),
]


class Environment(_Strict):
    namespace: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    kubernetes_conn_id: ConnId
    set_identifier: Name
    prometheus_labels: dict[str, str] = Field(min_length=1)
    # A Secret in this namespace every service container loads its environment from (envFrom):
    # DATABASE_URL and the like reach the pods without ever appearing in a Deployment spec.
    service_secret: (
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")] | None
    ) = None


class Environments(_Strict):
    staging: Environment
    production: Environment


_SQL_NAME_PART = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
TableName = Annotated[str, StringConstraints(pattern=rf"^{_SQL_NAME_PART}(\.{_SQL_NAME_PART})?$")]


class Pooler(_Strict):
    name: Name
    admin_conn_id: ConnId
    database: Name
    # The Airflow queue of the tasks that touch this pooler's ini (the file check, the switch and
    # its rollback rewrite it and send RELOAD): served by a worker beside the pooler, sharing its
    # config volume. None: Airflow's default queue, for workers that all share the pooler's files.
    queue: Name | None = None


class DatabaseConfig(_Strict):
    source_conn_id: ConnId
    target_conn_id: ConnId
    poolers: list[Pooler] = Field(min_length=1)
    publication: Name
    subscription: Name
    reverse_publication: Name
    reverse_subscription: Name
    lag_threshold_bytes: PositiveInt
    lag_consecutive_samples: PositiveInt
    lag_sample_seconds: PositiveFloat
    lag_timeout_seconds: PositiveFloat
    initial_sync_timeout_seconds: PositiveFloat
    switchover_timeout_seconds: PositiveFloat
    sequence_margin: PositiveInt
    validation_chunk_rows: PositiveInt
    # Tables without a primary key the migration may set REPLICA IDENTITY FULL on (source and
    # target) before publishing: `table` (schema public) or `schema.table`, SQL spelling ("Quoted"
    # parts keep their case). Any other table without a replica identity fails preflight by name.
    replica_identity_full: list[TableName] = Field(default_factory=list)
    # Concurrent hash scans per side during validation.
    validation_parallelism: PositiveInt = 2
    # Deferred index and key builds at once, biggest tables first; their processes together.
    index_parallelism: PositiveInt = 2
    # The initial copy: `native`, PostgreSQL's own (one sync worker per table), or `parallel`, ranges
    # of every table copied by `copy_workers` under the forward slot's exported snapshot (tables above
    # `copy_split_bytes` split by key or CTID), then the subscription on that slot without copying.
    initial_copy: Literal["native", "parallel"] = "native"
    copy_workers: PositiveInt = 4
    copy_split_bytes: PositiveInt = 256 * 1024 * 1024
    copy_progress_seconds: PositiveFloat = 10.0
    # The parallel copy runs as a process of the worker that starts it (it holds the snapshot while
    # a killed task is cleared), its pid, log and result here; with `copy_queue`, its task runs on that
    # queue's one worker, so a clear finds it.
    copy_state_dir: str = "/opt/airflow/parallel-copy"
    copy_queue: Name | None = None
    # Where pg_dump and psql live on the workers (pg_dump's major version must be >= the source's).
    pg_bin_dir: Annotated[str, StringConstraints(pattern=r"^/\S*$")] = "/usr/lib/postgresql/15/bin"

    @field_validator("poolers")
    @classmethod
    def _unique_pooler_names(cls, poolers: list[Pooler]) -> list[Pooler]:
        duplicates = _duplicates(pooler.name for pooler in poolers)
        if duplicates:
            raise ValueError(f"duplicate pooler name(s): {', '.join(duplicates)}")
        queues = sorted({pooler.queue or "(default)" for pooler in poolers})
        if len(queues) > 1:
            raise ValueError(
                f"poolers name different queues ({', '.join(queues)}): the switchover repoints every "
                "pooler in one task, so their files must be reachable from one worker"
            )
        return poolers

    @property
    def pooler_queue(self) -> str | None:
        """The queue of the tasks that rewrite the poolers' files (one for all, validated above)."""
        return self.poolers[0].queue


class RedisConfig(_Strict):
    source_conn_id: ConnId
    target_conn_id: ConnId
    mode: Literal["replicaof", "copy"]
    ttl_tolerance_seconds: PositiveFloat
    # Longest wait for the target to catch up (replicaof) during the database phase.
    sync_timeout_seconds: PositiveFloat = 1800
    # The Redis write endpoint's admin API (HAProxy runtime API: host, port, extra `backend`, default
    # "redis"); None: no endpoint, each environment keeps its own Redis (README, Known limits).
    endpoint_conn_id: ConnId | None = None
    # Longest time Redis writes are held (CLIENT PAUSE WRITE) while the endpoint moves to the other
    # server; the move gives up (and puts everything back) rather than outlast it.
    freeze_seconds: PositiveFloat = 5


class ConsumerGroupConfig(_Strict):
    # The Deployment (the same name in both namespaces) whose pods are the group's members: scaled
    # to 0 where the group leaves, and to the replicas it had there where the group arrives.
    deployment: Name


class KafkaConfig(_Strict):
    """The platform's events: `topics` mirrored from the source cluster to the target from the
    database phase until staging takes no users (then drained and stopped), the consumer groups
    moved at the switchover. Producers stay with their environment's cluster (the service Secret's
    bootstrap), so during the cutover both clusters take events and the mirror merges staging's in."""

    source_conn_id: ConnId
    target_conn_id: ConnId
    topics: list[Name] = Field(min_length=1)
    consumer_groups: dict[Name, ConsumerGroupConfig] = Field(default_factory=dict)
    # The mirrors' consumer groups on the cluster they read (their committed offsets are their progress).
    mirror_group: Name = "pyairtable-mirror-to-production"
    reverse_mirror_group: Name = "pyairtable-mirror-to-staging"
    # Where the worker that starts a mirror keeps its pid, spec and log; the tasks that start and
    # stop it run on `mirror_queue` (one worker) when set.
    mirror_state_dir: str
    mirror_queue: Name | None = None
    # Events in flight at most: also the bound on events copied twice after a mirror crash.
    mirror_window: PositiveInt = 5000
    # The lag gate before the groups move: events the mirror may still have to copy.
    max_lag: PositiveInt = 1000
    lag_timeout_seconds: PositiveFloat = 600
    # Before a mirror stops (after the cutover, and on the way back): the side it copies from must
    # have taken no new event for this long, since clients holding an old DNS answer (many cache it
    # past its TTL) and requests in flight still write there after the weights moved.
    drain_quiet_seconds: PositiveFloat = 60
    # How long a group's members may take to leave once their Deployment is scaled to 0.
    group_empty_timeout_seconds: PositiveFloat = 120


class DnsConfig(_Strict):
    aws_conn_id: ConnId
    hosted_zone: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]+\.$")]
    records: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.*-]+\.$")]] = Field(min_length=1)
    cutover_ttl_seconds: PositiveInt
    final_ttl_seconds: PositiveInt
    retention_seconds: PositiveInt

    @field_validator("records")
    @classmethod
    def _unique_records(cls, records: list[str]) -> list[str]:
        duplicates = _duplicates(records)
        if duplicates:
            raise ValueError(f"duplicate record(s): {', '.join(duplicates)}")
        return records

    @model_validator(mode="after")
    def _records_inside_zone(self) -> DnsConfig:
        outside = [r for r in self.records if not r.endswith("." + self.hosted_zone)]
        if outside:
            raise ValueError(f"record(s) outside hosted zone {self.hosted_zone}: {', '.join(outside)}")
        return self


class GateConfig(_Strict):
    prometheus_conn_id: ConnId
    error_ratio_query: Annotated[str, StringConstraints(min_length=1)]
    p99_query: Annotated[str, StringConstraints(min_length=1)]
    max_error_ratio: Annotated[float, Field(ge=0, le=1)]
    max_p99_seconds: PositiveFloat
    sample_seconds: PositiveFloat
    consecutive_breaches: PositiveInt
    # The PromQL range each sample looks back over ($window in the queries).
    window: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*(ms|s|m|h)$")] = "30s"


def traffic_step_problems(steps: Iterable[Any]) -> list[str]:
    """Why a list of production weights is not a valid cutover, or [] when it is.

    Shared by the config model and the run's trigger-form parameters.
    """
    steps = list(steps)
    if not steps:
        return ["must list at least one weight, ending at 100"]
    problems = []
    not_ints = [s for s in steps if not isinstance(s, int) or isinstance(s, bool)]
    if not_ints:
        return [f"weights must be whole numbers, got {not_ints}"]
    outside = [s for s in steps if not 1 <= s <= 100]
    if outside:
        problems.append(f"weights must be within 1..100, got {outside}")
    not_increasing = [f"{a} -> {b}" for a, b in itertools.pairwise(steps) if b <= a]
    if not_increasing:
        problems.append(f"weights must be strictly increasing, got {', '.join(not_increasing)}")
    if steps[-1] != 100:
        problems.append(f"the last weight must be 100, got {steps[-1]}")
    return problems


class LoadTestConfig(_Strict):
    """The load test before the last weight step: `rate` requests per second for `duration_seconds`,
    spread over every service, at production's ingress (`url_template` with `{service}` and `{path}`:
    the service's health path)."""

    url_template: str
    rate: PositiveFloat = 1000  # the seed's target: 1,000+ requests/s
    duration_seconds: PositiveFloat = 60
    max_error_ratio: float = Field(default=0.01, ge=0, le=1)  # the seed's target: under 1 % errors
    connections_per_service: PositiveInt = 10
    request_timeout_seconds: PositiveFloat = 10
    hey_path: str = "/usr/bin/hey"

    @field_validator("url_template")
    @classmethod
    def _names_the_service(cls, template: str) -> str:
        missing = [field for field in ("{service}", "{path}") if field not in template]
        if missing:
            raise ValueError(f"url_template must contain {' and '.join(missing)}: {template!r}")
        return template


class TrafficConfig(_Strict):
    steps: list[Any]
    bake_seconds: PositiveFloat
    # After the last step the gate keeps watching production this long (the seed's checklist: 4 h).
    watch_seconds: NonNegativeFloat = 14400
    approval_before: list[int] = Field(default_factory=list)
    gate: GateConfig
    # A weight step refuses to send users to production unless every pooler sends writers to the
    # target (both environments must write to one primary). Off only to test the traffic phase alone.
    require_writers_on_target: bool = True
    # None: no load test (the last step follows the gate's verdict alone).
    load_test: LoadTestConfig | None = None

    @field_validator("steps")
    @classmethod
    def _valid_steps(cls, steps: list[Any]) -> list[int]:
        problems = traffic_step_problems(steps)
        if problems:
            raise ValueError("; ".join(problems))
        return steps

    @model_validator(mode="after")
    def _approvals_name_steps(self) -> TrafficConfig:
        unknown = sorted(set(self.approval_before) - set(self.steps))
        if unknown:
            raise ValueError(f"approval_before names weights that are not steps: {unknown}")
        return self


class Approver(_Strict):
    """A person who may answer the migration's approvals (Airflow's HITL `assigned_users`): `id`
    as the auth manager knows the user (the FAB auth manager: the user's id; the simple one: the
    username)."""

    id: str
    name: str


class Approvals(_Strict):
    required: bool = True
    # Who may answer; empty: anyone who can see the run.
    approvers: list[Approver] = Field(default_factory=list)
    # An approval nobody answers is rejected after this long (the safe side: users stay where they
    # are, writers do not move).
    timeout_seconds: PositiveFloat = 3600


DASHBOARD_TEMPLATE_FIELDS = frozenset({"namespace", "deployment", "service", "color"})


class BlueGreenConfig(_Strict):
    """How each service moves: the blue-green knobs every service shares."""

    # The old color keeps running this long after promote: the instant way back.
    rollback_window_seconds: PositiveFloat = 30
    # A rollout that makes no progress for this long fails, naming the pods' conditions.
    progress_deadline_seconds: PositiveInt = 600
    rollout_poll_seconds: PositiveFloat = 2
    smoke_requests: PositiveInt = 20
    smoke_timeout_seconds: PositiveFloat = 5
    # Each service task's "Service dashboard" link; $namespace, $deployment, $service, $color.
    dashboard_url_template: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] = (
        "https://grafana.example.com/d/k8s-deployment?var-namespace=$namespace&var-deployment=$deployment"
    )

    @field_validator("dashboard_url_template")
    @classmethod
    def _known_placeholders(cls, template: str) -> str:
        parsed = string.Template(template)
        if not parsed.is_valid():
            raise ValueError("not a valid $placeholder template")
        unknown = sorted(set(parsed.get_identifiers()) - DASHBOARD_TEMPLATE_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {unknown} (known: {', '.join(sorted(DASHBOARD_TEMPLATE_FIELDS))})"
            )
        return template


class SecurityContextConfig(_Strict):
    """Every service pod's securityContext: the Pod Security Standards `restricted` profile."""

    run_as_non_root: bool = True
    read_only_root_filesystem: bool = True
    allow_privilege_escalation: bool = False
    drop_capabilities: list[Annotated[str, StringConstraints(pattern=r"^[A-Z_]+$")]] = Field(
        default_factory=lambda: ["ALL"]
    )
    seccomp_profile: Literal["RuntimeDefault"] = "RuntimeDefault"


class PlatformConfig(_Strict):
    """What every service gets around its Deployments (per-service fields override the first five)."""

    min_replicas: PositiveInt = 2
    max_replicas: PositiveInt = 10
    target_cpu_utilization: Percent = 70
    min_available: PodCount | None = 1
    max_unavailable: PodCount | None = None
    # Where the ingress controller's pods run (public services admit it) and Prometheus (every
    # service admits its scrapes), matched by the namespace's kubernetes.io/metadata.name label.
    ingress_namespace: KubeName = "ingress-nginx"
    monitoring_namespace: KubeName = "monitoring"
    # The Pod Security Standards level production's namespace must enforce (its label; the
    # namespace is not this migration's to change: validation.security checks it).
    pod_security_level: Literal["restricted", "baseline"] = "restricted"
    security_context: SecurityContextConfig = SecurityContextConfig()

    @model_validator(mode="after")
    def _one_disruption_bound(self) -> PlatformConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        if self.min_available is not None and self.max_unavailable is not None:
            raise ValueError("set min_available or max_unavailable, not both")
        if self.min_available is None and self.max_unavailable is None:
            raise ValueError("set min_available or max_unavailable")
        return self


class ValidationConfig(_Strict):
    """The validation phase and its report."""

    # PromQL range of the latency SLO check (p95 of real requests in production).
    latency_window: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*(ms|s|m|h)$")] = "5m"
    # A service with no production traffic in the window: `fail` (an unmeasured SLO is not met)
    # or `warn` (reported in the log, the XCom and the report, the check still passes).
    no_traffic: Literal["fail", "warn"] = "fail"
    # The migration report (HTML + JSON per run); relative paths are from the repository root.
    report_dir: str = "reports"
    # Where the report task's link points: `<report_base_url>/<file>`; empty: Airflow's api-server serves it.
    report_base_url: str = ""
    # Alertmanager's API (an `http` connection): validation.monitoring checks that Prometheus has
    # production's alert rules loaded and sends to an Alertmanager, and that a test alert posted
    # there is notified. None or empty: alerting is not checked, only the scrape targets.
    alertmanager_conn_id: ConnId | Literal[""] | None = None
    # How long validation.monitoring waits for the test alert's notification; longer than the route's
    # group_wait (and than group_interval, for a retry whose earlier test alert is still active).
    alert_delivery_timeout_seconds: PositiveFloat = 60


EmailAddress = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")]


class SmtpNotifications(_Strict):
    """Mail through Airflow's SmtpNotifier; the server and its password live in the connection."""

    smtp_conn_id: ConnId
    to: list[EmailAddress] = Field(min_length=1)
    # None: the connection's from_email (the notifier refuses when neither names a sender).
    from_email: EmailAddress | None = None


class SlackNotifications(_Strict):
    """A Slack incoming webhook through Airflow's SlackWebhookNotifier: the webhook (its URL is the
    secret) lives in the connection and posts to the channel it was created for."""

    slack_webhook_conn_id: ConnId


class NotificationsConfig(_Strict):
    """Who is told when an approval waits, a gate trips, a task fails, a rollback starts or ends, and
    the migration is done. Neither set: nobody is told, and nothing fails for it."""

    smtp: SmtpNotifications | None = None
    slack: SlackNotifications | None = None


class MigrationConfig(_Strict):
    tiers: list[Name] = Field(min_length=1)
    slo_classes: dict[Name, PositiveInt] = Field(min_length=1)
    environments: Environments
    services: dict[str, Node] = Field(min_length=1)
    database: DatabaseConfig
    redis: RedisConfig
    dns: DnsConfig
    traffic: TrafficConfig
    approvals: Approvals = Approvals()
    blue_green: BlueGreenConfig = BlueGreenConfig()
    platform: PlatformConfig = PlatformConfig()
    validation: ValidationConfig = ValidationConfig()
    # pgBackRest for production: archiving checked, a full backup after the switch, verified, PITR.
    backup: BackupSettings = BackupSettings()
    notifications: NotificationsConfig = NotificationsConfig()
    # None: the platform's events are not moved (the readiness check of a kafka node still runs).
    kafka: KafkaConfig | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _report_every_problem(cls, data: Any, handler: Callable[[Any], MigrationConfig]) -> MigrationConfig:
        """Run field validation and the graph checks together, so one pass shows all problems."""
        problems: list[str] = []
        model = None
        try:
            model = handler(data)
        except ValidationError as exc:
            problems.extend(describe_error(error) for error in exc.errors())
        problems.extend(graph_problems(data))
        if model is not None:
            problems.extend(platform_problems(model))
        if problems or model is None:
            raise ConfigError(problems)
        return model

    @property
    def deployable(self) -> dict[str, ServiceNode]:
        return {name: node for name, node in self.services.items() if isinstance(node, ServiceNode)}

    def workload(self, name: str) -> dict[str, Any]:
        """One service's platform settings, defaults applied: the deploy's and the audit's arguments."""
        node, platform = self.deployable[name], self.platform
        own_bound = node.min_available is not None or node.max_unavailable is not None
        return {
            "min_replicas": node.min_replicas or platform.min_replicas,
            "max_replicas": node.max_replicas or platform.max_replicas,
            "target_cpu_utilization": node.target_cpu_utilization or platform.target_cpu_utilization,
            "min_available": node.min_available if own_bound else platform.min_available,
            "max_unavailable": node.max_unavailable if own_bound else platform.max_unavailable,
            "public": node.public,
            # Who may call it: the services that depend on it.
            "dependents": sorted(
                other for other, dependent in self.deployable.items() if name in dependent.depends_on
            ),
            "ingress_namespace": platform.ingress_namespace,
            "monitoring_namespace": platform.monitoring_namespace,
            "security_context": platform.security_context.model_dump(),
        }

    def topological_order(self) -> list[str]:
        """Service names with every dependency before its dependents, ties by tier then name."""
        tier_rank = {tier: rank for rank, tier in enumerate(self.tiers)}
        return topological_order(
            {name: node.depends_on for name, node in self.services.items()},
            key=lambda name: (tier_rank[self.services[name].tier], name),
        )


def platform_problems(config: MigrationConfig) -> list[str]:
    """Autoscaling and disruption settings that contradict each other, per service after defaults."""
    problems = []
    for name, node in config.deployable.items():
        where = f"services.{name}"
        workload = config.workload(name)
        low, high = workload["min_replicas"], workload["max_replicas"]
        if low > high:
            field = (
                "min_replicas"
                if node.min_replicas is not None or node.max_replicas is None
                else "max_replicas"
            )
            problems.append(f"{where}.{field}: min_replicas {low} is above max_replicas {high}")
            continue
        if not low <= node.replicas <= high:
            problems.append(
                f"{where}.replicas: {node.replicas} is outside the autoscaler's range {low}..{high} "
                "(min_replicas..max_replicas): the autoscaler would change it at once"
            )
        min_available = workload["min_available"]
        if isinstance(min_available, int) and min_available >= low:
            problems.append(
                f"{where}.min_available: {min_available} leaves no pod evictable at min_replicas {low}: "
                "node drains would block"
            )
        if workload["max_unavailable"] in (0, "0%"):
            problems.append(f"{where}.max_unavailable: 0 leaves no pod evictable: node drains would block")
    return problems


def topological_order(
    depends_on: Mapping[str, list[str]], key: Callable[[str], Any] = lambda name: name
) -> list[str]:
    """Kahn's algorithm with a deterministic tie-break by `key`; the graph must be acyclic."""
    waiting_on = {name: len(set(deps)) for name, deps in depends_on.items()}
    dependents: dict[str, list[str]] = {name: [] for name in depends_on}
    for name, deps in depends_on.items():
        for dependency in set(deps):
            dependents[dependency].append(name)
    ready = [(key(name), name) for name, count in waiting_on.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for dependent in dependents[name]:
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                heapq.heappush(ready, (key(dependent), dependent))
    if len(order) != len(depends_on):
        raise ValueError(f"dependency cycle among {sorted(set(depends_on) - set(order))}")
    return order


def graph_problems(data: Any) -> list[str]:
    """Cross-reference checks on the raw document, tolerant of fields that are malformed.

    These run even when field validation failed, so a file with a typo and a cycle reports both.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("services"), Mapping):
        return []
    services: Mapping[str, Any] = data["services"]
    tiers = data.get("tiers") if isinstance(data.get("tiers"), list) else None
    slo_classes = data.get("slo_classes") if isinstance(data.get("slo_classes"), Mapping) else None
    tier_rank = {tier: rank for rank, tier in enumerate(tiers or [])}
    problems: list[str] = []
    graph: dict[str, list[str]] = {}
    for name, node in services.items():
        where = f"services.{name}"
        if not isinstance(name, str) or not SERVICE_NAME_PATTERN.match(name):
            problems.append(f"{where}: name must be lowercase letters, digits and '-', at most 55 characters")
        if not isinstance(node, Mapping):
            continue
        tier = node.get("tier")
        if tiers is not None and isinstance(tier, str) and tier not in tier_rank:
            problems.append(f"{where}.tier: unknown tier {tier!r} (known: {', '.join(tiers)})")
        slo_class = node.get("slo_class")
        if slo_classes is not None and isinstance(slo_class, str) and slo_class not in slo_classes:
            problems.append(
                f"{where}.slo_class: unknown SLO class {slo_class!r} "
                f"(known: {', '.join(map(str, slo_classes))})"
            )
        depends_on = node.get("depends_on", [])
        if not isinstance(depends_on, list):
            continue
        graph[name] = []
        for dependency in depends_on:
            if dependency == name:
                problems.append(f"{where}.depends_on: {name!r} depends on itself")
            elif dependency not in services:
                problems.append(f"{where}.depends_on: unknown dependency {dependency!r}")
            else:
                graph[name].append(dependency)
                dependency_tier = (
                    services[dependency].get("tier") if isinstance(services[dependency], Mapping) else None
                )
                if (
                    tier in tier_rank
                    and dependency_tier in tier_rank
                    and (tier_rank[dependency_tier] > tier_rank[tier])
                ):
                    problems.append(
                        f"{where}.depends_on: {dependency!r} is in tier {dependency_tier!r}, "
                        f"after this service's tier {tier!r}"
                    )
    problems.extend(f"services: dependency cycle: {' -> '.join(cycle)}" for cycle in find_cycles(graph))
    return problems


def find_cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """One cycle per strongly connected knot, each printed closed (a -> b -> a)."""
    state: dict[str, str] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(name: str) -> None:
        state[name] = "open"
        stack.append(name)
        for dependency in graph.get(name, []):
            if state.get(dependency) == "open":
                cycles.append([*stack[stack.index(dependency) :], dependency])
            elif dependency not in state:
                visit(dependency)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return cycles


def _duplicates(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that records duplicate mapping keys instead of silently keeping the last."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.duplicate_keys.append(
                    f"line {line}: duplicate key {key!r} (first at line {first_line[key]})"
                )
            else:
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping
)


def parse_config(text: str, source: str = "configuration") -> MigrationConfig:
    """Validate YAML text; raise ConfigError naming every problem."""
    loader = _UniqueKeyLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source) from None
    finally:
        loader.dispose()
    problems = list(loader.duplicate_keys)
    try:
        config = MigrationConfig.model_validate(data)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, source)
    return config


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> MigrationConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], str(path)) from None
    return parse_config(text, str(path))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "check":
        print("usage: python -m pyairtable_migration.config check PATH", file=sys.stderr)
        return 2
    try:
        config = load_config(argv[1])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    deployable = len(config.deployable)
    print(
        f"{argv[1]}: OK ({len(config.services)} nodes, {deployable} deployable services, "
        f"traffic steps {config.traffic.steps})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
