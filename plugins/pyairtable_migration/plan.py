"""The migration as an ordered set of steps, derived from the configuration alone.

One structure serves both the DAG builder (each step becomes a task, each edge a dependency)
and `make plan` (each step printed with what it will touch), so what the engineer reads is
exactly what will run. It imports nothing from Airflow, so printing a plan is instant.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyairtable_migration.config import (
    ConfigError,
    InfrastructureNode,
    MigrationConfig,
    ServiceNode,
    load_config,
    topological_order,
)

REDIS_SYNC_TOUCHES = {"replicaof": "becomes a replica of the source", "copy": "every key copied"}

PHASES = ("preflight", "database", "services", "switchover", "traffic", "validation")


OPERATORS = "pyairtable_migration.operators"
PLACEHOLDER = f"{OPERATORS}.placeholder.PlaceholderStepOperator"


@dataclass(frozen=True)
class Step:
    """One task: its dotted id (TaskGroups and all), what it does, and what it touches.

    Like cosmos's TaskMetadata, the operator is named by import path with its arguments, so the
    plan stays free of Airflow imports. A step without an operator yet is a placeholder.
    """

    task_id: str
    action: str
    touches: tuple[str, ...] = ()
    operator: str = PLACEHOLDER
    arguments: Mapping[str, Any] = field(default_factory=dict)

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
        ids = [task_id for task_id, step in self.steps.items() if step.phase == phase]
        inside = set(ids)
        has_upstream = {after for before, after in self.edges if before in inside and after in inside}
        has_downstream = {before for before, after in self.edges if before in inside and after in inside}
        return [t for t in ids if t not in has_upstream], [t for t in ids if t not in has_downstream]


def build_plan(config: MigrationConfig) -> MigrationPlan:
    plan = MigrationPlan()
    _preflight(plan, config)
    _database(plan, config)
    _services(plan, config)
    _switchover(plan, config)
    _traffic(plan, config)
    _validation(plan, config)
    for earlier, later in itertools.pairwise(PHASES):
        _, leaves = plan.phase_roots_and_leaves(earlier)
        roots, _ = plan.phase_roots_and_leaves(later)
        plan.edges.update((leaf, root) for leaf in leaves for root in roots)
    return plan


def _preflight(plan: MigrationPlan, config: MigrationConfig) -> None:
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
        ),
        Step(
            "preflight.check_redis",
            "check both Redis servers answer and their versions are compatible",
            (
                f"connection {config.redis.source_conn_id} (read only)",
                f"connection {config.redis.target_conn_id} (read only)",
            ),
        ),
        Step(
            "preflight.check_kubernetes",
            "check both namespaces are reachable and every image is named",
            (f"namespace {staging.namespace} (read only)", f"namespace {production.namespace} (read only)"),
        ),
        Step(
            "preflight.check_dns",
            "check the hosted zone and every weighted record exist",
            (f"hosted zone {dns.hosted_zone} (read only)", *(f"record {r} (read only)" for r in dns.records)),
        ),
        Step(
            "preflight.check_prometheus",
            "check Prometheus answers the gate queries",
            (f"connection {config.traffic.gate.prometheus_conn_id} (read only)",),
        ),
    ]
    params = plan.add(
        Step(
            "preflight.check_params",
            "check the run's parameters against the configuration",
            ("run parameters",),
            operator=f"{OPERATORS}.params.CheckRunParamsOperator",
            arguments={"configured_steps": list(config.traffic.steps)},
        )
    )
    for check in checks:
        plan.add(check, after=params)


def _database(plan: MigrationPlan, config: MigrationConfig) -> None:
    db, redis = config.database, config.redis
    target, source = f"target {db.target_conn_id}", f"source {db.source_conn_id}"
    plan.chain(
        Step("database.copy_schema", "copy the schema, secondary indexes deferred", (f"{target}: schema",)),
        Step(
            "database.create_publication",
            f"create or verify publication {db.publication}",
            (f"{source}: publication {db.publication}",),
        ),
        Step(
            "database.create_subscription",
            f"create or verify subscription {db.subscription}",
            (f"{target}: subscription {db.subscription}", f"{source}: replication slot {db.subscription}"),
        ),
        Step(
            "database.wait_initial_sync",
            "wait until every table is replicated (state r)",
            (f"{target} (read only)",),
        ),
        Step(
            "database.build_deferred_indexes",
            "build the deferred indexes concurrently",
            (f"{target}: secondary indexes",),
        ),
        Step(
            "database.lag_gate",
            f"wait until lag < {db.lag_threshold_bytes} bytes for {db.lag_consecutive_samples} samples",
            (f"{source} (read only)",),
        ),
        Step(
            "database.validate_data",
            "compare counts and chunked hashes per table on both sides",
            (f"{source} (read only)", f"{target} (read only)"),
        ),
    )
    plan.chain(
        Step(
            "database.sync_redis",
            f"replicate Redis ({redis.mode})",
            (f"redis {redis.target_conn_id}: {REDIS_SYNC_TOUCHES[redis.mode]}",),
        ),
        Step(
            "database.validate_redis",
            "compare key counts per type and TTLs",
            (f"redis {redis.source_conn_id} (read only)", f"redis {redis.target_conn_id} (read only)"),
        ),
    )


def _services(plan: MigrationPlan, config: MigrationConfig) -> None:
    production = config.environments.production
    namespace = production.namespace
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
                )
            )
            plan.service_entry[name] = plan.service_exit[name] = check
        else:
            assert isinstance(node, ServiceNode)
            plan.group_tooltips[group] = f"{name}: {node.image} x{node.replicas}; depends on {depends}"
            deployments = f"namespace {namespace}: deployment {name}-blue or {name}-green"
            ids = plan.chain(
                Step(f"{group}.deploy", f"deploy {node.image} as the idle color", (deployments,)),
                Step(
                    f"{group}.wait_rollout",
                    f"wait until {node.replicas} replica(s) are available",
                    (f"{deployments} (read only)",),
                ),
                Step(
                    f"{group}.smoke_test",
                    f"smoke-test {node.health_path} through {name}-preview "
                    f"(p95 < {config.slo_classes[node.slo_class]} ms, {node.slo_class})",
                    (f"namespace {namespace}: service {name}-preview",),
                ),
                Step(
                    f"{group}.promote",
                    f"point service {name} at the new color",
                    (f"namespace {namespace}: service {name} selector",),
                ),
                Step(
                    f"{group}.retire_old_color",
                    "keep the old color for the rollback window, then scale it to 0",
                    (deployments,),
                ),
            )
            plan.service_entry[name], plan.service_exit[name] = ids[0], ids[3]
    for name, node in config.services.items():
        for dependency in node.depends_on:
            plan.edges.add((plan.service_exit[dependency], plan.service_entry[name]))


def _switchover(plan: MigrationPlan, config: MigrationConfig) -> None:
    db, redis = config.database, config.redis
    plan.chain(
        Step("switchover.approve", "ask the on-call engineer to approve the write switchover"),
        Step(
            "switchover.switch_database",
            "pause poolers, catch up, sync sequences, reverse replication, "
            "repoint poolers to the target, resume",
            (
                *(f"pooler {p.name}" for p in db.poolers),
                f"target {db.target_conn_id}: sequences, "
                f"subscription {db.subscription} dropped, publication {db.reverse_publication}",
                f"source {db.source_conn_id}: subscription {db.reverse_subscription}",
            ),
        ),
        Step("switchover.switch_redis", "promote the target Redis", (f"redis {redis.target_conn_id}",)),
    )


def _traffic(plan: MigrationPlan, config: MigrationConfig) -> None:
    dns, traffic = config.dns, config.traffic
    records = ", ".join(dns.records)
    steps = [
        Step(
            "traffic.lower_ttl",
            f"lower TTL to {dns.cutover_ttl_seconds}s and wait out the old TTL",
            (f"records {records}: TTL",),
        )
    ]
    for weight in traffic.steps:
        if weight in traffic.approval_before:
            steps.append(
                Step(
                    f"traffic.approve_{weight}",
                    f"ask the on-call engineer to approve {weight} %",
                )
            )
        steps.append(
            Step(
                f"traffic.shift_to_{weight}",
                f"production weight {weight}, bake {traffic.bake_seconds:g}s, gate on error ratio and p99",
                (f"records {records}: weights",),
            )
        )
    steps.append(
        Step(
            "traffic.finalize",
            f"keep staging at weight 0 for {dns.retention_seconds}s, restore TTL {dns.final_ttl_seconds}s",
            (f"records {records}: TTL",),
        )
    )
    plan.chain(*steps)


def _validation(plan: MigrationPlan, config: MigrationConfig) -> None:
    db, production = config.database, config.environments.production
    checks = [
        Step(
            "validation.latency_slos",
            "p95 of real requests per SLO class",
            (f"connection {config.traffic.gate.prometheus_conn_id} (read only)",),
        ),
        Step(
            "validation.data_parity",
            "final data parity, both directions",
            (f"{db.source_conn_id}, {db.target_conn_id} (read only)",),
        ),
        Step(
            "validation.security",
            "no replication leftovers, one color per service, no secret in task output",
            (f"namespace {production.namespace} (read only)",),
        ),
        Step(
            "validation.backup_restore",
            "restore a dump of the target into a scratch database",
            (f"target {db.target_conn_id}: scratch database",),
        ),
        Step(
            "validation.monitoring",
            "every production target is up in Prometheus",
            (f"connection {config.traffic.gate.prometheus_conn_id} (read only)",),
        ),
    ]
    report = Step("validation.report", "write the migration report", ("report file",))
    for check in checks:
        plan.add(check)
        plan.edges.add((check.task_id, report.task_id))
    plan.add(report)


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


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else None
    try:
        config = load_config(path) if path else load_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(format_plan(build_plan(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
