"""The migration as an ordered set of steps, derived from the configuration alone.

One structure serves both the DAG builder (each step becomes a task, each edge a dependency)
and `make plan` (each step printed with what it will touch), so what the engineer reads is
exactly what will run. It imports nothing from Airflow, so printing a plan is instant.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyairtable_migration.config import (
    ConfigError,
    InfrastructureNode,
    KafkaConfig,
    LoadTestConfig,
    MigrationConfig,
    ServiceNode,
    load_config,
    topological_order,
)
from pyairtable_migration.monitoring.alerts import expected_rules

REDIS_SYNC_TOUCHES = {"replicaof": "becomes a replica of the source", "copy": "every key copied"}

PHASES = ("preflight", "database", "services", "switchover", "traffic", "validation")

# The two DAGs: each one's first task refuses to act while the other is running.
MIGRATION_DAG_ID = "pyairtable_production_migration"
ROLLBACK_DAG_ID = "pyairtable_production_rollback"
# The preflight's last task: the end of a validate run (`preflight_only`), a pass-through otherwise.
PREFLIGHT_GATE = "preflight.passed"
LOAD_TEST_TASK = "traffic.load_test"


@dataclass(frozen=True)
class Step:
    """One task: its dotted id (TaskGroups and all), what it does, and what it touches.

    Like cosmos's TaskMetadata, the operator is named by its full import path (spelled out, so a
    search for it finds the step) with its arguments, so the plan stays free of Airflow imports.
    """

    task_id: str
    action: str
    touches: tuple[str, ...] = ()
    operator: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    # Off the phases' chain: an undo task hangs beside its phase and is never upstream of the next one.
    aside: bool = False

    def __post_init__(self) -> None:
        if not self.operator:
            raise ValueError(f"step {self.task_id} names no operator")

    @property
    def group_id(self) -> str:
        return self.task_id.rpartition(".")[0]

    @property
    def phase(self) -> str:
        return self.task_id.split(".", 1)[0]


@dataclass
class MigrationPlan:
    steps: dict[str, Step] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)
    group_tooltips: dict[str, str] = field(default_factory=dict)
    # Per service: the step a dependent waits for, and the step that waits for dependencies.
    service_entry: dict[str, str] = field(default_factory=dict)
    service_exit: dict[str, str] = field(default_factory=dict)

    def add(self, step: Step, after: str | None = None) -> str:
        self.steps[step.task_id] = step
        if after is not None:
            self.edges.add((after, step.task_id))
        return step.task_id

    def chain(self, *steps: Step) -> list[str]:
        ids: list[str] = []
        for step in steps:
            ids.append(self.add(step, after=ids[-1] if ids else None))
        return ids

    def ordered(self) -> list[Step]:
        """Steps with every upstream first; ties keep the order in which they were added."""
        position = {task_id: index for index, task_id in enumerate(self.steps)}
        upstream: dict[str, list[str]] = {task_id: [] for task_id in self.steps}
        for before, after in self.edges:
            upstream[after].append(before)
        return [self.steps[t] for t in topological_order(upstream, key=position.__getitem__)]

    def phase_roots_and_leaves(self, phase: str) -> tuple[list[str], list[str]]:
        ids = [task_id for task_id, step in self.steps.items() if step.phase == phase and not step.aside]
        inside = set(ids)
        has_upstream = {after for before, after in self.edges if before in inside and after in inside}
        has_downstream = {before for before, after in self.edges if before in inside and after in inside}
        return [t for t in ids if t not in has_upstream], [t for t in ids if t not in has_downstream]


def build_plan(config: MigrationConfig, rollback_dag_id: str = ROLLBACK_DAG_ID) -> MigrationPlan:
    plan = MigrationPlan()
    _preflight(plan, config, rollback_dag_id)
    _database(plan, config)
    if config.kafka is not None:
        _events(plan, config.kafka)
    _services(plan, config)
    _switchover(plan, config)
    _traffic(plan, config)
    _validation(plan, config)
    for earlier, later in itertools.pairwise(PHASES):
        _, leaves = plan.phase_roots_and_leaves(earlier)
        roots, _ = plan.phase_roots_and_leaves(later)
        plan.edges.update((leaf, root) for leaf in leaves for root in roots)
    return plan


def _preflight(plan: MigrationPlan, config: MigrationConfig, rollback_dag_id: str) -> None:
    db, dns, staging, production = (
        config.database,
        config.dns,
        config.environments.staging,
        config.environments.production,
    )
    checks = [
        Step(
            "preflight.check_database",
            "check both databases: versions, wal_level=logical, free slots and "
            "senders, privileges, replica identity of every table, target empty or ours",
            (
                f"connection {db.source_conn_id} (read only)",
                f"connection {db.target_conn_id} (read only)",
                *(f"pooler {p.name} via {p.admin_conn_id} (read only)" for p in db.poolers),
            ),
            operator="pyairtable_migration.operators.database.CheckDatabaseOperator",
            arguments={
                **_replication_arguments(config),
                **_schema_copy_arguments(config),
                "initial_copy": db.initial_copy,
                "copy_workers": db.copy_workers,
            },
        ),
        Step(
            "preflight.check_redis",
            "check both Redis servers answer and their versions are compatible",
            (
                f"connection {config.redis.source_conn_id} (read only)",
                f"connection {config.redis.target_conn_id} (read only)",
            ),
            operator="pyairtable_migration.operators.redis_sync.CheckRedisOperator",
            arguments=redis_arguments(config),
        ),
        Step(
            "preflight.check_kubernetes",
            "check both namespaces are reachable and production's service Secret exists",
            (f"namespace {staging.namespace} (read only)", f"namespace {production.namespace} (read only)"),
            operator="pyairtable_migration.operators.readiness.CheckKubernetesOperator",
            arguments={
                "namespaces": {"staging": staging.namespace, "production": production.namespace},
                "kubernetes_conn_ids": {
                    "staging": staging.kubernetes_conn_id,
                    "production": production.kubernetes_conn_id,
                },
                "service_secrets": {
                    "staging": staging.service_secret,
                    "production": production.service_secret,
                },
            },
        ),
        Step(
            "preflight.check_pooler_files",
            "check the worker that runs the switchover can read and replace every pooler's ini",
            tuple(f"pooler {p.name}: ini file (read only)" for p in db.poolers),
            operator="pyairtable_migration.operators.pooler.CheckPoolerFilesOperator",
            arguments={"poolers": _poolers(config), **pooler_queue_argument(config)},
        ),
        Step(
            "preflight.check_dns",
            "check the hosted zone and every weighted record exist",
            (f"hosted zone {dns.hosted_zone} (read only)", *(f"record {r} (read only)" for r in dns.records)),
            operator="pyairtable_migration.operators.traffic.CheckDnsOperator",
            arguments=route53_arguments(config),
        ),
        _check_backups(config),
        *(
            [
                Step(
                    "preflight.check_kafka",
                    "check both Kafka clusters answer, every topic exists on staging and production has "
                    "none that cannot take its copy, every consumer group's Deployment exists on both sides",
                    (
                        f"connection {config.kafka.source_conn_id} (read only)",
                        f"connection {config.kafka.target_conn_id} (read only)",
                    ),
                    operator="pyairtable_migration.operators.kafka_mirror.KafkaPreflightOperator",
                    arguments=kafka_consumer_arguments(config, config.kafka),
                )
            ]
            if config.kafka is not None
            else []
        ),
        Step(
            "preflight.check_prometheus",
            "check Prometheus answers the gate queries",
            (f"connection {config.traffic.gate.prometheus_conn_id} (read only)",),
            operator="pyairtable_migration.operators.traffic.CheckPrometheusOperator",
            arguments={**_gate_queries(config), "window": config.traffic.gate.window},
        ),
    ]
    params = plan.add(
        Step(
            "preflight.check_params",
            f"check the run's parameters against the configuration; refuse while {rollback_dag_id} runs",
            ("run parameters", f"runs of {rollback_dag_id} (read only)"),
            operator="pyairtable_migration.operators.params.CheckRunParamsOperator",
            arguments={"configured_steps": list(config.traffic.steps), "rollback_dag_id": rollback_dag_id},
        )
    )
    passed = plan.add(
        Step(
            PREFLIGHT_GATE,
            "every check passed; a validate run (run param preflight_only) stops here: every later "
            "task is skipped, so the live systems are read and nothing is changed",
            ("run parameters",),
            operator="pyairtable_migration.operators.params.PreflightOnlyGateOperator",
        )
    )
    for check in checks:
        plan.add(check, after=params)
        plan.edges.add((check.task_id, passed))


# The arguments of each operator family, built once for the migration's steps and the rollback's:
# both DAGs act on the same databases, Redis servers, records and services.


def database_arguments(config: MigrationConfig) -> dict[str, Any]:
    """What every DatabaseOperator takes: both clusters' connections."""
    return {
        "source_conn_id": config.database.source_conn_id,
        "target_conn_id": config.database.target_conn_id,
    }


def redis_arguments(config: MigrationConfig) -> dict[str, Any]:
    """What every RedisOperator takes: both servers' connections and how keys move between them."""
    redis = config.redis
    return {
        "source_conn_id": redis.source_conn_id,
        "target_conn_id": redis.target_conn_id,
        "mode": redis.mode,
        "endpoint_conn_id": redis.endpoint_conn_id,
    }


def route53_arguments(config: MigrationConfig) -> dict[str, Any]:
    """What every Route53Targets operator takes: the weighted records and both environments' sets."""
    dns, environments = config.dns, config.environments
    return {
        "aws_conn_id": dns.aws_conn_id,
        "hosted_zone": dns.hosted_zone,
        "records": list(dns.records),
        "staging_set_identifier": environments.staging.set_identifier,
        "production_set_identifier": environments.production.set_identifier,
    }


def approval_arguments(config: MigrationConfig) -> dict[str, Any]:
    """What every approval point takes: who may answer, how long it waits, who is told it waits."""
    approvals = config.approvals
    return {
        "approvers": [approver.model_dump() for approver in approvals.approvers],
        "timeout_seconds": approvals.timeout_seconds,
        "notifications": notification_settings(config),
    }


def notification_settings(config: MigrationConfig) -> dict[str, Any]:
    """Who is told (notifications.py), as plain data: the config's notifications section."""
    return config.notifications.model_dump(exclude_none=True)


def pooler_queue_argument(config: MigrationConfig) -> dict[str, Any]:
    """`queue` for the tasks that rewrite the poolers' files, when the config names one: they run on
    the worker beside the pooler (BaseOperator's own argument, so Airflow routes them)."""
    queue = config.database.pooler_queue
    return {"queue": queue} if queue else {}


def switchover_arguments(config: MigrationConfig) -> dict[str, Any]:
    """What SwitchoverOperatorBase takes: the switch and its rollback move writers over the same
    clusters, poolers and replication, with the same margin and freeze limit, on the poolers' worker."""
    return {**write_switch_arguments(config), **pooler_queue_argument(config)}


def write_switch_arguments(config: MigrationConfig) -> dict[str, Any]:
    """The write switch's clusters, poolers, replication, margin and freeze limit: what
    `switchover.undo` moves writers back with (its task, not these, names the poolers' queue)."""
    db = config.database
    return {
        **_replication_arguments(config),
        "sequence_margin": db.sequence_margin,
        "timeout_seconds": db.switchover_timeout_seconds,
        "replica_identity_full": list(db.replica_identity_full),
    }


def service_arguments(config: MigrationConfig, name: str, node: ServiceNode) -> dict[str, Any]:
    """What every BlueGreenOperator takes: the service, where it runs in production, its rollout
    deadline, dashboard link and platform objects (config.workload)."""
    production, blue_green = config.environments.production, config.blue_green
    return {
        "kubernetes_conn_id": production.kubernetes_conn_id,
        "namespace": production.namespace,
        "service_name": name,
        "image": node.image,
        "replicas": node.replicas,
        "port": node.port,
        "health_path": node.health_path,
        "service_secret": production.service_secret,
        "progress_deadline_seconds": blue_green.progress_deadline_seconds,
        "dashboard_url_template": blue_green.dashboard_url_template,
        **config.workload(name),
    }


def rollback_order(config: MigrationConfig) -> list[str]:
    """The deployable services, each dependent before its dependencies (the frontend tier first):
    the order in which services go back to their previous color."""
    return [name for name in reversed(config.topological_order()) if name in config.deployable]


def service_rollback_arguments(config: MigrationConfig, name: str) -> dict[str, Any]:
    """What BlueGreenRollbackOperator takes for one service: the rollback DAG's step and
    `services.undo` send it back alike."""
    node = config.deployable[name]
    return {**service_arguments(config, name, node), "poll_seconds": config.blue_green.rollout_poll_seconds}


def kafka_arguments(kafka: KafkaConfig) -> dict[str, Any]:
    """What every Kafka step takes: both clusters' connections and the topics that move."""
    return {
        "source_conn_id": kafka.source_conn_id,
        "target_conn_id": kafka.target_conn_id,
        "topics": list(kafka.topics),
    }


def kafka_consumer_arguments(config: MigrationConfig, kafka: KafkaConfig) -> dict[str, Any]:
    """The Kafka steps that read or scale the consumer groups' Deployments, in both namespaces."""
    staging, production = config.environments.staging, config.environments.production
    return {
        **kafka_arguments(kafka),
        "consumers": {
            group: consumer.deployment for group, consumer in sorted(kafka.consumer_groups.items())
        },
        "source_namespace": staging.namespace,
        "target_namespace": production.namespace,
        "source_kubernetes_conn_id": staging.kubernetes_conn_id,
        "target_kubernetes_conn_id": production.kubernetes_conn_id,
        "wait_seconds": kafka.group_empty_timeout_seconds,
    }


def mirror_state_dirs(kafka: KafkaConfig) -> tuple[str, str]:
    """The forward (staging -> production) and reverse mirrors' process state directories."""
    return f"{kafka.mirror_state_dir}/to-production", f"{kafka.mirror_state_dir}/to-staging"


def _mirror_arguments(kafka: KafkaConfig) -> dict[str, Any]:
    """The forward mirror's steps: its group, its state, and the one worker it lives on."""
    return {
        **kafka_arguments(kafka),
        "mirror_group": kafka.mirror_group,
        "state_dir": mirror_state_dirs(kafka)[0],
        **({"queue": kafka.mirror_queue} if kafka.mirror_queue else {}),
    }


def _replication_arguments(config: MigrationConfig) -> dict[str, Any]:
    """Both clusters, the poolers and both directions' replication: what the preflight checks is
    what the switch acts on."""
    db = config.database
    return {
        **database_arguments(config),
        "poolers": _poolers(config),
        "publication": db.publication,
        "subscription": db.subscription,
        "reverse_publication": db.reverse_publication,
        "reverse_subscription": db.reverse_subscription,
    }


def forward_replication_arguments(config: MigrationConfig) -> dict[str, Any]:
    """What the operators that create or drop forward replication take: both clusters, the
    publication and subscription, and the poolers (they refuse once writers are on the target)."""
    db = config.database
    return {
        **database_arguments(config),
        "publication": db.publication,
        "subscription": db.subscription,
        "poolers": _poolers(config),
    }


def _initial_copy(config: MigrationConfig, forward: dict[str, Any]) -> list[Step]:
    """From the publication to streaming: PostgreSQL's own copy (`native`: the subscription copies,
    then the indexes are built), or the parallel copy under the slot's snapshot (`parallel`: the
    copy, the indexes, then the subscription on that slot, copying nothing)."""
    db = config.database
    target, source = f"target {db.target_conn_id}", f"source {db.source_conn_id}"
    parallel = db.initial_copy == "parallel"
    subscribe = Step(
        "database.create_subscription",
        f"create or verify subscription {db.subscription}"
        + (" on the parallel copy's slot (copy_data = false)" if parallel else ""),
        (f"{target}: subscription {db.subscription}", f"{source}: replication slot {db.subscription}"),
        operator="pyairtable_migration.operators.database.CreateSubscriptionOperator",
        arguments={**forward_replication_arguments(config), **({"on_copied_slot": True} if parallel else {})},
    )
    wait = Step(
        "database.wait_initial_sync",
        "wait until every table is replicated (state r)",
        (f"{target} (read only)",),
        operator="pyairtable_migration.operators.database.WaitInitialSyncOperator",
        arguments={**forward, "timeout_seconds": db.initial_sync_timeout_seconds},
    )
    indexes = Step(
        "database.build_deferred_indexes",
        f"build the deferred indexes{' and keys' if parallel else ''}, {db.index_parallelism} at once "
        "(CONCURRENTLY once a subscription streams into the target)",
        (f"{target}: secondary indexes" + (", primary, unique and foreign keys" if parallel else ""),),
        operator="pyairtable_migration.operators.database.BuildDeferredIndexesOperator",
        arguments={**database_arguments(config), "parallelism": db.index_parallelism},
    )
    if not parallel:
        return [subscribe, wait, indexes]
    copy = Step(
        "database.copy_snapshot",
        f"create slot {db.subscription} with its snapshot exported; copy every table under it with "
        f"{db.copy_workers} workers, tables above {db.copy_split_bytes} bytes in ranges (progress and ETA "
        "in the log; the copy is a process of its own: a killed task cleared waits for it again, a copy "
        "done is verified, one whose process died starts over under a new snapshot)",
        (
            f"{source}: replication slot {db.subscription}",
            f"{target}: every table's rows, schema pyairtable_snapshot_copy (progress)",
            f"copy process state in {db.copy_state_dir}",
        ),
        operator="pyairtable_migration.operators.database.ParallelCopyOperator",
        arguments={
            **forward_replication_arguments(config),
            "copy_workers": db.copy_workers,
            "copy_split_bytes": db.copy_split_bytes,
            "copy_progress_seconds": db.copy_progress_seconds,
            "copy_state_dir": db.copy_state_dir,
            "pg_bin_dir": db.pg_bin_dir,
            **({"queue": db.copy_queue} if db.copy_queue else {}),
        },
    )
    return [copy, indexes, subscribe, wait]


def _schema_copy_arguments(config: MigrationConfig) -> dict[str, Any]:
    """What the schema copy runs with (pg_dump's directory, the tables it may set REPLICA IDENTITY
    FULL): the preflight checks the same."""
    db = config.database
    return {"replica_identity_full": list(db.replica_identity_full), "pg_bin_dir": db.pg_bin_dir}


def _poolers(config: MigrationConfig) -> list[dict[str, str]]:
    return [
        {"name": p.name, "admin_conn_id": p.admin_conn_id, "database": p.database}
        for p in config.database.poolers
    ]


def _gate_queries(config: MigrationConfig) -> dict[str, Any]:
    """The traffic gate's queries for production: the preflight checks the ones the gate runs."""
    gate = config.traffic.gate
    return {
        "prometheus_conn_id": gate.prometheus_conn_id,
        "error_ratio_query": gate.error_ratio_query,
        "p99_query": gate.p99_query,
        "prometheus_labels": dict(config.environments.production.prometheus_labels),
    }


def _database(plan: MigrationPlan, config: MigrationConfig) -> None:
    db, redis = config.database, config.redis
    target, source = f"target {db.target_conn_id}", f"source {db.source_conn_id}"
    both = database_arguments(config)
    # The forward replication every step from the subscription to the lag gate works on.
    forward = {**both, "publication": db.publication, "subscription": db.subscription}
    # The steps that write into the target refuse once the poolers send writers there.
    before_switchover = {**both, "poolers": _poolers(config)}
    identity = ", ".join(db.replica_identity_full)
    parallel = db.initial_copy == "parallel"
    plan.chain(
        Step(
            "database.copy_schema",
            "copy the schema, secondary indexes deferred"
            + (
                f" and the keys of tables above {db.copy_split_bytes} bytes (built after the parallel copy)"
                if parallel
                else ""
            ),
            (
                f"{target}: schema" + (f", REPLICA IDENTITY FULL on {identity}" if identity else ""),
                f"{source}: schema pyairtable_migration (switchover markers)",
            ),
            operator="pyairtable_migration.operators.database.CopySchemaOperator",
            arguments={
                **before_switchover,
                **_schema_copy_arguments(config),
                "defer_keys_from_bytes": db.copy_split_bytes if parallel else None,
            },
        ),
        Step(
            "database.create_publication",
            f"create or verify publication {db.publication}",
            (
                f"{source}: publication {db.publication}"
                + (f", REPLICA IDENTITY FULL on {identity}" if identity else ""),
            ),
            operator="pyairtable_migration.operators.database.CreatePublicationOperator",
            arguments={
                **before_switchover,
                "publication": db.publication,
                "replica_identity_full": list(db.replica_identity_full),
            },
        ),
        *_initial_copy(config, forward),
        Step(
            "database.lag_gate",
            f"wait until lag < {db.lag_threshold_bytes} bytes for {db.lag_consecutive_samples} samples",
            (f"{source} (read only)",),
            operator="pyairtable_migration.operators.database.LagGateOperator",
            arguments={
                **forward,
                "lag_threshold_bytes": "{{ params.lag_threshold_bytes }}",
                "lag_consecutive_samples": db.lag_consecutive_samples,
                "lag_sample_seconds": db.lag_sample_seconds,
                "lag_timeout_seconds": db.lag_timeout_seconds,
            },
        ),
        Step(
            "database.validate_data",
            "compare counts and chunked hashes per table on both sides",
            (f"{source} (read only)", f"{target} (read only)"),
            operator="pyairtable_migration.operators.database.ValidateDataOperator",
            arguments={
                **both,
                "subscription": db.subscription,
                "chunk_rows": db.validation_chunk_rows,
                "parallelism": db.validation_parallelism,
            },
        ),
    )
    plan.chain(
        Step(
            "database.sync_redis",
            f"replicate Redis ({redis.mode})",
            (f"redis {redis.target_conn_id}: {REDIS_SYNC_TOUCHES[redis.mode]}",),
            operator="pyairtable_migration.operators.redis_sync.SyncRedisOperator",
            arguments={**redis_arguments(config), "timeout_seconds": redis.sync_timeout_seconds},
        ),
        Step(
            "database.validate_redis",
            "compare key counts per type and TTLs",
            (f"redis {redis.source_conn_id} (read only)", f"redis {redis.target_conn_id} (read only)"),
            operator="pyairtable_migration.operators.redis_sync.ValidateRedisOperator",
            arguments={**redis_arguments(config), "ttl_tolerance_seconds": redis.ttl_tolerance_seconds},
        ),
    )


def _events(plan: MigrationPlan, kafka: KafkaConfig) -> None:
    """The platform's events, beside the database's replication: topics created on production and
    the mirror started, up to its lag gate. (The groups move at the switchover; the mirror drains and
    stops once staging takes no users, after traffic.finalize.)"""
    topics = ", ".join(kafka.topics)
    mirror = _mirror_arguments(kafka)
    plan.chain(
        Step(
            "database.kafka_create_topics",
            "create on production each topic it lacks, with staging's partitions and configs",
            (f"connection {kafka.target_conn_id}: topics {topics}",),
            operator="pyairtable_migration.operators.kafka_mirror.KafkaTopicsOperator",
            arguments=kafka_arguments(kafka),
        ),
        Step(
            "database.kafka_start_mirror",
            f"start the mirror staging -> production of {topics} (a process on the worker; a started "
            f"mirror resumes from its group {kafka.mirror_group}'s committed offsets)",
            (
                f"connection {kafka.source_conn_id}: consumer group {kafka.mirror_group}",
                f"connection {kafka.target_conn_id}: copies of {topics}",
                f"mirror process state in {mirror['state_dir']}",
            ),
            operator="pyairtable_migration.operators.kafka_mirror.StartKafkaMirrorOperator",
            arguments={**mirror, "window": kafka.mirror_window},
        ),
        Step(
            "database.kafka_mirror_lag",
            f"wait until the mirror is at most {kafka.max_lag} events behind staging "
            f"(at most {kafka.lag_timeout_seconds:g}s)",
            (f"connection {kafka.source_conn_id} (read only)",),
            operator="pyairtable_migration.operators.kafka_mirror.KafkaMirrorLagOperator",
            arguments={**mirror, "max_lag": kafka.max_lag, "timeout_seconds": kafka.lag_timeout_seconds},
        ),
    )


def _services(plan: MigrationPlan, config: MigrationConfig) -> None:
    production, blue_green = config.environments.production, config.blue_green
    namespace = production.namespace
    # The services deployed here run in production: production's stores are the ones to be ready.
    default_conn_ids = {"postgres": config.database.target_conn_id, "redis": config.redis.target_conn_id}
    for tier in config.tiers:
        plan.group_tooltips[f"services.{tier}"] = f"tier {tier}"
    for name in config.topological_order():
        node = config.services[name]
        group = f"services.{node.tier}.{name}"
        depends = ", ".join(node.depends_on) or "nothing"
        if isinstance(node, InfrastructureNode):
            plan.group_tooltips[group] = f"{name}: {node.check} readiness check; depends on {depends}"
            check = plan.add(
                Step(
                    f"{group}.check_ready",
                    f"check {name} is ready ({node.check})"
                    + (" — external, reported and skipped" if node.external else ""),
                    (f"{name} (read only)",),
                    operator="pyairtable_migration.operators.readiness.InfrastructureReadyOperator",
                    arguments={
                        "node": name,
                        "check": node.check,
                        "external": node.external,
                        "conn_id": node.conn_id or default_conn_ids.get(node.check),
                        "url": node.url,
                    },
                )
            )
            plan.service_entry[name] = plan.service_exit[name] = check
        else:
            assert isinstance(node, ServiceNode)
            plan.group_tooltips[group] = f"{name}: {node.image} x{node.replicas}; depends on {depends}"
            deployments = f"namespace {namespace}: deployment {name}-blue or {name}-green"
            service = service_arguments(config, name, node)
            ids = plan.chain(
                Step(
                    f"{group}.deploy",
                    f"deploy {node.image} as the idle color, with its ServiceAccount, NetworkPolicy, "
                    "HorizontalPodAutoscaler and PodDisruptionBudget",
                    (
                        deployments,
                        f"namespace {namespace}: service {name}-preview selector",
                        f"namespace {namespace}: serviceaccount, networkpolicy, poddisruptionbudget {name}; "
                        f"horizontalpodautoscaler of the deployment; networkpolicy default-deny-ingress",
                    ),
                    operator="pyairtable_migration.operators.bluegreen.BlueGreenDeployOperator",
                    # A dependency that was skipped (an external check) does not stop this service.
                    arguments={**service, "trigger_rule": "none_failed"},
                ),
                Step(
                    f"{group}.wait_rollout",
                    f"wait until {node.replicas} replica(s) are available",
                    (f"{deployments} (read only)",),
                    operator="pyairtable_migration.operators.bluegreen.BlueGreenRolloutOperator",
                    arguments={**service, "poll_seconds": blue_green.rollout_poll_seconds},
                ),
                Step(
                    f"{group}.smoke_test",
                    f"smoke-test {node.health_path} through {name}-preview "
                    f"(p95 < {config.slo_classes[node.slo_class]} ms, {node.slo_class})",
                    (f"namespace {namespace}: service {name}-preview",),
                    operator="pyairtable_migration.operators.bluegreen.BlueGreenSmokeTestOperator",
                    arguments={
                        **service,
                        "slo_class": node.slo_class,
                        "slo_ms": config.slo_classes[node.slo_class],
                        "requests": blue_green.smoke_requests,
                        "timeout_seconds": blue_green.smoke_timeout_seconds,
                    },
                ),
                Step(
                    f"{group}.promote",
                    f"point service {name} at the new color",
                    (f"namespace {namespace}: service {name} selector",),
                    operator="pyairtable_migration.operators.bluegreen.BlueGreenPromoteOperator",
                    arguments=service,
                ),
                Step(
                    f"{group}.retire_old_color",
                    f"keep the old color for the rollback window ({blue_green.rollback_window_seconds:g} s), "
                    "then scale it to 0",
                    (deployments,),
                    operator="pyairtable_migration.operators.bluegreen.BlueGreenRetireOperator",
                    arguments={**service, "rollback_window_seconds": blue_green.rollback_window_seconds},
                ),
            )
            plan.service_entry[name], plan.service_exit[name] = ids[0], ids[3]
    for name, node in config.services.items():
        for dependency in node.depends_on:
            plan.edges.add((plan.service_exit[dependency], plan.service_entry[name]))
    # The phase ends with one task under none_failed, so a skipped external check that nothing
    # depends on (a leaf, like the mesh) does not skip every phase after this one.
    _, leaves = plan.phase_roots_and_leaves("services")
    verify = plan.add(
        Step(
            "services.verify",
            "check every service's active Service selects a rolled-out color running its image",
            (f"namespace {namespace} (read only)",),
            operator="pyairtable_migration.operators.bluegreen.BlueGreenVerifyOperator",
            arguments={
                "kubernetes_conn_id": production.kubernetes_conn_id,
                "namespace": namespace,
                "services": {
                    name: {
                        "image": node.image,
                        "replicas": node.replicas,
                        "port": node.port,
                        "health_path": node.health_path,
                        "secret": production.service_secret,
                        "progress_deadline_seconds": blue_green.progress_deadline_seconds,
                        "workload": config.workload(name),
                    }
                    for name, node in config.deployable.items()
                },
                "trigger_rule": "none_failed",
            },
        )
    )
    plan.edges.update((leaf, verify) for leaf in leaves)
    plan.add(
        Step(
            "services.undo",
            "clear this task alone, after services.verify ended, to send every service back to its "
            "previous color, dependents first (the rollback DAG's services steps, in one task); refused "
            "while any record sends users to production (clear traffic.undo first). Never acts by itself: "
            "a failed services step is fixed and cleared with downstream, and this stays skipped",
            (
                f"namespace {namespace}: every service's selector; a retired previous color scaled up again",
                f"records {', '.join(config.dns.records)} (read only)",
            ),
            operator="pyairtable_migration.operators.bluegreen.ServicesUndoOperator",
            arguments={
                "services": [service_rollback_arguments(config, name) for name in rollback_order(config)],
                "route53": route53_arguments(config),
                "finalized_by": verify,
                "trigger_rule": "all_done",
            },
            aside=True,
        ),
        after=verify,
    )


def _switchover(plan: MigrationPlan, config: MigrationConfig) -> None:
    db, redis = config.database, config.redis
    ids = plan.chain(
        Step(
            "switchover.approve",
            "ask the on-call engineer to approve the write switchover",
            operator="pyairtable_migration.operators.switchover.SwitchoverApprovalOperator",
            arguments=approval_arguments(config),
        ),
        Step(
            "switchover.switch_database",
            "pause poolers, catch up, sync sequences, reverse replication, "
            "repoint poolers to the target, resume",
            (
                *(f"pooler {p.name}" for p in db.poolers),
                f"target {db.target_conn_id}: sequences, "
                f"subscription {db.subscription} dropped, publication {db.reverse_publication}, "
                f"replication slot {db.reverse_subscription}",
                f"source {db.source_conn_id}: marker row, subscription {db.reverse_subscription}, "
                f"replication slot {db.subscription} dropped",
            ),
            operator="pyairtable_migration.operators.switchover.SwitchDatabaseOperator",
            # An approval skipped because approvals are off must not skip the switch.
            arguments={**switchover_arguments(config), "trigger_rule": "none_failed"},
        ),
        Step(
            "switchover.switch_redis",
            (
                f"Redis writers moved to the target through the endpoint {redis.endpoint_conn_id} in a "
                f"freeze of at most {redis.freeze_seconds} s (writes held, target caught up and promoted, "
                "endpoint moved, the source follows the target), the target marked switched"
                if redis.endpoint_conn_id
                else "promote the target Redis and mark it switched (the rollback reads the mark)"
            ),
            (
                f"redis {redis.target_conn_id}",
                *(
                    (f"redis {redis.source_conn_id}", f"endpoint {redis.endpoint_conn_id}")
                    if redis.endpoint_conn_id
                    else ()
                ),
            ),
            operator="pyairtable_migration.operators.redis_sync.SwitchRedisOperator",
            arguments={
                **redis_arguments(config),
                "timeout_seconds": db.switchover_timeout_seconds,
                "freeze_seconds": redis.freeze_seconds,
            },
        ),
        *([_move_consumer_groups(config, config.kafka)] if config.kafka is not None else []),
        _full_backup(config),
    )
    plan.add(
        Step(
            "switchover.undo",
            "clear this task alone, after switchover.full_backup ended, to move every writer back to the "
            "source: the pooler(s) repointed to the source (as the rollback DAG's database.repoint_poolers), "
            "then Redis (as its redis.rollback); refused while any record sends users to production (clear "
            "traffic.undo first). Never acts by itself: a failed step is fixed and cleared with downstream. "
            "Dropping forward replication stays in the rollback DAG",
            (
                *(f"pooler {p.name}" for p in db.poolers),
                f"source {db.source_conn_id}: sequences, subscription {db.reverse_subscription} dropped",
                f"redis {redis.source_conn_id}, redis {redis.target_conn_id}"
                + (f", endpoint {redis.endpoint_conn_id}" if redis.endpoint_conn_id else ""),
                f"records {', '.join(config.dns.records)} (read only)",
            ),
            operator="pyairtable_migration.operators.redis_sync.SwitchoverUndoOperator",
            arguments={
                **redis_arguments(config),
                "timeout_seconds": redis.sync_timeout_seconds,
                "freeze_seconds": redis.freeze_seconds,
                "database": write_switch_arguments(config),
                "route53": route53_arguments(config),
                "finalized_by": ids[-1],
                "trigger_rule": "all_done",
                **pooler_queue_argument(config),
            },
            aside=True,
        ),
        after=ids[-1],
    )


def _move_consumer_groups(config: MigrationConfig, kafka: KafkaConfig) -> Step:
    staging, production = config.environments.staging, config.environments.production
    deployments = ", ".join(sorted({consumer.deployment for consumer in kafka.consumer_groups.values()}))
    groups = ", ".join(sorted(kafka.consumer_groups))
    return Step(
        "switchover.move_consumer_groups",
        "move each consumer group with the writers: its Deployment scaled to 0 on staging, its committed "
        "offsets translated through the mirror's copies and set on production, the Deployment scaled up "
        "on production to the replicas it had on staging",
        (
            f"namespace {staging.namespace}: {deployments} scaled to 0",
            f"namespace {production.namespace}: {deployments} scaled up",
            f"connection {kafka.target_conn_id}: offsets of groups {groups}",
        ),
        operator="pyairtable_migration.operators.kafka_mirror.MoveKafkaConsumerGroupsOperator",
        arguments=kafka_consumer_arguments(config, kafka),
    )


def _drain_mirror(plan: MigrationPlan, kafka: KafkaConfig, after: str) -> None:
    """Staging takes no users any more: the mirror copies what staging's producers sent last, stops."""
    mirror = _mirror_arguments(kafka)
    drained = plan.add(
        Step(
            "traffic.kafka_drain_mirror",
            "wait until the mirror has copied every event staging took (lag 0 for 3 samples) and staging "
            f"took none for {kafka.drain_quiet_seconds:g}s",
            (f"connection {kafka.source_conn_id} (read only)",),
            operator="pyairtable_migration.operators.kafka_mirror.KafkaMirrorLagOperator",
            arguments={
                **mirror,
                "max_lag": 0,
                "timeout_seconds": kafka.lag_timeout_seconds,
                "quiet_seconds": kafka.drain_quiet_seconds,
            },
        ),
        after=after,
    )
    plan.add(
        Step(
            "traffic.kafka_stop_mirror",
            "stop the mirror staging -> production (it commits what it copied first)",
            (f"mirror process state in {mirror['state_dir']}",),
            operator="pyairtable_migration.operators.kafka_mirror.StopKafkaMirrorOperator",
            arguments=mirror,
        ),
        after=drained,
    )


def _traffic(plan: MigrationPlan, config: MigrationConfig) -> None:
    dns, traffic, gate = config.dns, config.traffic, config.traffic.gate
    records = ", ".join(dns.records)
    route53 = route53_arguments(config)
    # A weight left out of the run's traffic_steps, or an approval with approvals off, is skipped;
    # the steps after it still run (a failure still stops them).
    after_skips = {"trigger_rule": "none_failed"}
    writers_guard = traffic.require_writers_on_target
    gate_arguments = {
        **_gate_queries(config),
        "max_error_ratio": gate.max_error_ratio,
        "max_p99_seconds": gate.max_p99_seconds,
        "sample_seconds": gate.sample_seconds,
        "consecutive_breaches": gate.consecutive_breaches,
        "window": gate.window,
    }
    steps = [
        Step(
            "traffic.lower_ttl",
            f"lower TTL to {dns.cutover_ttl_seconds}s and wait out the old TTL",
            (f"records {records}: TTL",),
            operator="pyairtable_migration.operators.traffic.LowerTtlOperator",
            arguments={**route53, "cutover_ttl_seconds": dns.cutover_ttl_seconds},
        )
    ]
    for weight in traffic.steps:
        if weight == traffic.steps[-1] and traffic.load_test is not None:
            steps.append(_load_test(config, traffic.load_test, after_skips))
        if weight in traffic.approval_before:
            steps.append(
                Step(
                    f"traffic.approve_{weight}",
                    f"ask the on-call engineer to approve {weight} %",
                    (f"records {records}: weights back to staging if rejected",),
                    operator="pyairtable_migration.operators.traffic.TrafficApprovalOperator",
                    arguments={
                        **route53,
                        "weight": weight,
                        **approval_arguments(config),
                        **after_skips,
                    },
                )
            )
        steps.append(
            Step(
                f"traffic.shift_to_{weight}",
                f"production weight {weight}, bake {traffic.bake_seconds:g}s, gate on error ratio and p99"
                + (" (refused unless every pooler sends writers to the target)" if writers_guard else ""),
                (f"records {records}: weights",),
                operator="pyairtable_migration.operators.traffic.ShiftTrafficOperator",
                arguments={
                    **route53,
                    "weight": weight,
                    "bake_seconds": "{{ params.bake_seconds }}",
                    **gate_arguments,
                    **database_arguments(config),
                    "poolers": _poolers(config),
                    "require_writers_on_target": writers_guard,
                    **after_skips,
                },
            )
        )
    steps.append(
        Step(
            "traffic.watch",
            f"keep the gate on production at 100 % for {traffic.watch_seconds:g}s (the run's watch_seconds) "
            "before the TTL goes back up: a breach puts every user back on staging within the cutover TTL",
            (f"records {records}: weights back to staging on a breach",),
            operator="pyairtable_migration.operators.traffic.WatchProductionOperator",
            arguments={
                **route53,
                "weight": 100,
                "bake_seconds": "{{ params.watch_seconds }}",
                **gate_arguments,
                **database_arguments(config),
                "poolers": _poolers(config),
                "require_writers_on_target": writers_guard,
                **after_skips,
            },
        )
    )
    steps.append(
        Step(
            "traffic.finalize",
            f"keep staging at weight 0 for {dns.retention_seconds}s, restore TTL {dns.final_ttl_seconds}s",
            (f"records {records}: TTL",),
            operator="pyairtable_migration.operators.traffic.FinalizeTrafficOperator",
            arguments={
                **route53,
                "final_ttl_seconds": dns.final_ttl_seconds,
                "retention_seconds": dns.retention_seconds,
                **after_skips,
            },
        )
    )
    finalize = plan.chain(*steps)[-1]
    if config.kafka is not None:
        _drain_mirror(plan, config.kafka, after=finalize)
    plan.add(
        Step(
            "traffic.undo",
            "put every user back on staging (production 0 / staging 100, INSYNC): acts by itself when a "
            "traffic step failed, skipped on a healthy run; clear this task alone to undo the cutover "
            "(first, before services.undo or switchover.undo)",
            (f"records {records}: weights",),
            operator="pyairtable_migration.operators.traffic.TrafficUndoOperator",
            arguments={
                **route53,
                "finalized_by": finalize,
                "not_undone_for": [LOAD_TEST_TASK] if traffic.load_test is not None else [],
                "trigger_rule": "all_done",
            },
            aside=True,
        ),
        after=finalize,
    )


def _load_test(config: MigrationConfig, load_test: LoadTestConfig, after_skips: dict[str, str]) -> Step:
    """Production driven at the seed's rate before the last weight (and its approval): its users
    stay where they are whatever it finds."""
    return Step(
        LOAD_TEST_TASK,
        f"drive {load_test.rate:g} requests/s for {load_test.duration_seconds:g}s at production's ingress "
        f"over every service: under {load_test.max_error_ratio:.1%} failed, each p95 below its SLO class",
        ("production's ingress: synthetic requests to every service's health path",),
        operator="pyairtable_migration.operators.loadtest.LoadTestOperator",
        arguments={
            "url_template": load_test.url_template,
            "services": {
                name: [node.slo_class, node.health_path] for name, node in sorted(config.deployable.items())
            },
            "slo_classes": dict(config.slo_classes),
            "rate": load_test.rate,
            "duration_seconds": load_test.duration_seconds,
            "max_error_ratio": load_test.max_error_ratio,
            "connections_per_service": load_test.connections_per_service,
            "request_timeout_seconds": load_test.request_timeout_seconds,
            "hey_path": load_test.hey_path,
            **after_skips,
        },
    )


def _validation(plan: MigrationPlan, config: MigrationConfig) -> None:
    db, production, gate = config.database, config.environments.production, config.traffic.gate
    checks_config = config.validation
    prometheus = {
        "prometheus_conn_id": gate.prometheus_conn_id,
        "prometheus_labels": dict(production.prometheus_labels),
    }
    slo_services = {name: node.slo_class for name, node in config.deployable.items()}
    connection_ids = sorted(
        {
            db.source_conn_id,
            db.target_conn_id,
            *(p.admin_conn_id for p in db.poolers),
            config.redis.source_conn_id,
            config.redis.target_conn_id,
            config.dns.aws_conn_id,
            gate.prometheus_conn_id,
            *filter(None, [checks_config.alertmanager_conn_id]),
        }
    )
    # A check whose upstream was skipped (a weight left out of the run) still runs.
    after_skips = {"trigger_rule": "none_failed"}
    checks = [
        Step(
            "validation.latency_slos",
            f"p95 of real production requests per service over {checks_config.latency_window} against its "
            f"SLO class ({', '.join(f'{k} < {v} ms' for k, v in config.slo_classes.items())}); "
            f"no traffic: {checks_config.no_traffic}",
            (f"connection {gate.prometheus_conn_id} (read only)",),
            operator="pyairtable_migration.operators.validation.LatencySloOperator",
            arguments={
                **prometheus,
                "services": slo_services,
                "slo_classes": dict(config.slo_classes),
                "window": checks_config.latency_window,
                "no_traffic": checks_config.no_traffic,
                **after_skips,
            },
        ),
        Step(
            "validation.data_parity",
            "final data parity from the writers' side to its follower (counts and chunked hashes), "
            "table sets of both sides, forward subscription gone, reverse replication healthy",
            (f"{db.source_conn_id}, {db.target_conn_id} (read only)",),
            operator="pyairtable_migration.operators.validation.DataParityOperator",
            arguments={
                **database_arguments(config),
                "poolers": _poolers(config),
                "subscription": db.subscription,
                "reverse_subscription": db.reverse_subscription,
                "chunk_rows": db.validation_chunk_rows,
                "parallelism": db.validation_parallelism,
                **after_skips,
            },
        ),
        Step(
            "validation.security",
            "no replication leftovers but the reverse path, one color per production Service, every "
            "service's ServiceAccount, NetworkPolicy, PodDisruptionBudget, autoscaler and securityContext "
            "as configured, the namespace's default deny and Pod Security label, no connection password "
            "in this run's XComs, task arguments or task logs",
            (
                f"namespace {production.namespace} (read only)",
                f"{db.source_conn_id}, {db.target_conn_id} (read only)",
            ),
            operator="pyairtable_migration.operators.validation.SecurityOperator",
            arguments={
                **database_arguments(config),
                "allowed": {
                    "source": [f"subscription:{db.reverse_subscription}"],
                    "target": [f"publication:{db.reverse_publication}", f"slot:{db.reverse_subscription}"],
                },
                "kubernetes_conn_id": production.kubernetes_conn_id,
                "namespace": production.namespace,
                "services": sorted(config.deployable),
                "workloads": {
                    name: {"port": node.port, **config.workload(name)}
                    for name, node in sorted(config.deployable.items())
                },
                "pod_security_level": config.platform.pod_security_level,
                "connection_ids": connection_ids,
                **after_skips,
            },
        ),
        _verify_backup(config, after_skips),
        _monitoring(config, prometheus, after_skips),
    ]
    report = Step(
        "validation.report",
        "write the migration report (HTML with charts, and its data as JSON), whatever the checks' outcome",
        (f"directory {checks_config.report_dir}",),
        operator="pyairtable_migration.operators.validation.MigrationReportOperator",
        arguments={"report_dir": checks_config.report_dir, "report_base_url": checks_config.report_base_url},
    )
    for check in checks:
        plan.add(check)
        plan.edges.add((check.task_id, report.task_id))
    plan.add(report)


def _monitoring(
    config: MigrationConfig, prometheus: Mapping[str, Any], after_skips: Mapping[str, str]
) -> Step:
    """Production's targets up; with an Alertmanager configured, alerting proven end to end."""
    checks_config, gate = config.validation, config.traffic.gate
    rules = expected_rules(config)
    touches = [f"connection {gate.prometheus_conn_id} (read only)"]
    if checks_config.alertmanager_conn_id:
        what = (
            f"every production target is up in Prometheus, which has production's {len(rules)} alert rules "
            f"loaded and healthy and sends to an Alertmanager; a test alert posted to Alertmanager "
            f"({checks_config.alertmanager_conn_id}) is notified within "
            f"{checks_config.alert_delivery_timeout_seconds:g} s, none failed"
        )
        touches.append(
            f"connection {checks_config.alertmanager_conn_id} (one test alert, resolves by itself)"
        )
    else:
        what = "every production target is up in Prometheus (alerting not checked: no alertmanager_conn_id)"
    return Step(
        "validation.monitoring",
        what,
        tuple(touches),
        operator="pyairtable_migration.operators.validation.MonitoringOperator",
        arguments={
            **prometheus,
            "alertmanager_conn_id": checks_config.alertmanager_conn_id or "",
            "alert_rules": rules,
            "alert_delivery_timeout_seconds": checks_config.alert_delivery_timeout_seconds,
            **after_skips,
        },
    )


def _check_backups(config: MigrationConfig) -> Step:
    backup, rds = config.backup, config.backup.managed
    if rds is not None:
        return Step(
            "preflight.check_archiving",
            f"check production's managed backups: RDS cluster {rds.db_cluster_identifier} available, "
            f"PostgreSQL, automated backups kept >= {rds.min_retention_days} days",
            (f"RDS cluster {rds.db_cluster_identifier} (read only, connection {rds.aws_conn_id})",),
            operator="pyairtable_migration.operators.backup.CheckRdsBackupsOperator",
            arguments=backup_arguments(config),
        )
    return Step(
        "preflight.check_archiving",
        f"check production archives every WAL segment into pgBackRest stanza {backup.stanza} "
        "(archive_mode, archive_command, last failure, stanza, pgbackrest check)",
        (
            f"connection {backup.target_conn_id} (read only)",
            f"stanza {backup.stanza}: one WAL segment archived (pgbackrest check)",
        ),
        operator="pyairtable_migration.operators.backup.CheckArchivingOperator",
        arguments=backup_arguments(config),
    )


def _full_backup(config: MigrationConfig) -> Step:
    backup, rds = config.backup, config.backup.managed
    if rds is not None:
        return Step(
            "switchover.full_backup",
            "a manual snapshot of the managed production, now that writers are on it (once per run; a "
            "retry finds this run's snapshot); its automated backups keep the point-in-time window",
            (f"RDS cluster {rds.db_cluster_identifier}: one snapshot {rds.snapshot_prefix}-<run>",),
            operator="pyairtable_migration.operators.backup.RdsSnapshotOperator",
            arguments=backup_arguments(config),
        )
    return Step(
        "switchover.full_backup",
        "a full pgBackRest backup of production, now that writers are on it: from here on it can "
        "be restored to any second (once per run; a retry finds this run's backup)",
        (
            f"stanza {backup.stanza}: one full backup in the {backup.repository.type} "
            f"repository {backup.repository.path}, kept {backup.retention_full_days} days",
        ),
        operator="pyairtable_migration.operators.backup.FullBackupOperator",
        arguments=backup_arguments(config),
    )


def _verify_backup(config: MigrationConfig, after_skips: dict[str, Any]) -> Step:
    backup, rds = config.backup, config.backup.managed
    if rds is not None:
        return Step(
            "validation.backup",
            f"the migration's snapshot of RDS cluster {rds.db_cluster_identifier} available, of the engine "
            "production runs, inside the cluster's point-in-time window (a restore to compare rows would "
            "create a managed cluster: not done)",
            (f"RDS cluster {rds.db_cluster_identifier} and its snapshots (read only)",),
            operator="pyairtable_migration.operators.backup.VerifyRdsSnapshotOperator",
            arguments={**backup_arguments(config), **after_skips},
        )
    return Step(
        "validation.backup",
        f"pgbackrest verify stanza {backup.stanza}; restore its latest backup into a scratch "
        "cluster on its own port (never production's), compare every table with production "
        "(counts and chunked hashes), remove it",
        (
            f"scratch cluster {backup.scratch_dir} on a free port (created, then removed)",
            f"connection {backup.target_conn_id} (read only; one WAL switch per re-check)",
        ),
        operator="pyairtable_migration.operators.backup.VerifyBackupOperator",
        arguments={
            **backup_arguments(config),
            "parallelism": config.database.validation_parallelism,
            **after_skips,
        },
    )


def backup_arguments(config: MigrationConfig) -> dict[str, Any]:
    """Every pgBackRest step reads the same settings (paths, stanza, production's connection)."""
    return {"backup": config.backup.model_dump()}


def format_plan(plan: MigrationPlan) -> str:
    lines: list[str] = []
    phase = None
    for number, step in enumerate(plan.ordered(), start=1):
        if step.phase != phase:
            phase = step.phase
            lines.append(f"\n== {phase} ==")
        lines.append(f"{number:3}. {step.task_id}: {step.action}")
        lines.extend(f"       touches {touched}" for touched in step.touches)
    return "\n".join(lines).lstrip("\n")


def main(argv: list[str], build: Callable[[MigrationConfig], MigrationPlan] = build_plan) -> int:
    """Print the plan `build` makes from the config at argv[0] (else the default); the rollback's
    `python -m` prints its own plan through this too."""
    try:
        config = load_config(Path(argv[0])) if argv else load_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(format_plan(build(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
