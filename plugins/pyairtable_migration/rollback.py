"""The rollback DAG `pyairtable_production_rollback`: undo what is in place, in reverse dependency order.

    traffic  -> every user back on staging (production weight 0, staging 100, INSYNC)
    services -> each production Service back to its previous color, dependents before their
                dependencies (frontend tier first: reverse topological order)
    database -> the pooler(s) back to the source, which reverse replication kept current; then
                forward replication dropped too (no slot left holding the source's WAL)
    redis    -> only if the target carries the switch marker: the source takes the target's keys
                (replicaof: it replicates the target until caught up and is promoted, then the
                target replicates it as before the switch; copy: the keys are copied back)
    kafka    -> if the consumer groups run on production: its events mirrored back, the groups
                moved back with their Deployments; then no mirror is left running

Every step reads the state first and is a no-op when there is nothing to undo, so the DAG is
safe after a partial migration, twice in a row, or after clearing any task. The trigger form's
mode defaults to `apply` (this is the emergency path); `plan` logs what would change.

The trigger form's `scope` picks what is undone: `all`; `traffic` (the emergency path: weights
back to staging, nothing else); `services` (the chosen `services`, dependents first); `from_phase`
(that migration phase and every later one, latest first). Every step names the phase it undoes and
skips itself outside the scope, so the graph stays one DAG and a cleared task decides again from the
same run params. The first task, `check_run`, refuses a scope the DAG cannot honour and, in apply
mode, refuses while a migration run is queued or running, naming it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param

from pyairtable_migration.config import KafkaConfig, MigrationConfig
from pyairtable_migration.operators.base import ROLLBACK_SCOPES, UNDOABLE_PHASES
from pyairtable_migration.plan import (
    MIGRATION_DAG_ID,
    ROLLBACK_DAG_ID,
    MigrationPlan,
    Step,
    forward_replication_arguments,
    kafka_consumer_arguments,
    main,
    mirror_state_dirs,
    notification_settings,
    redis_arguments,
    rollback_order,
    route53_arguments,
    service_rollback_arguments,
    switchover_arguments,
)

DOC_MD = """
### PyAirtable: roll production back to staging

Undoes what the migration put in place, in reverse dependency order: **traffic** (every user back
on staging) → **services** (each production Service back to its previous color, frontend first)
→ **database** (the pooler(s) back to the source, kept current by reverse replication) →
**redis** (only if the target carries the switch marker: the source takes the target's keys, and
the target replicates the source again as before the switch) → **kafka** (if the consumer groups
run on production: its events mirrored back, the groups moved back; no mirror left running).

Every step is a no-op when there is nothing to undo: safe after a partial migration, twice, or
after a clear. Mode **apply** (default) acts; **plan** logs what would change.

**Scope**: `all` (default); `traffic` — the emergency path, every user back on staging and nothing
else; `services` — only the services chosen in **services**, dependents first; `from_phase` — the
phase chosen in **from_phase** and every later one, latest first. Steps outside the scope are
skipped and say why. `check_run` refuses while a migration run is queued or running.
Configuration: `{config_path}`.
"""


def undoing(phase: str, service: str | None = None) -> dict[str, Any]:
    """A rollback step's scope arguments: the phase it undoes, and none_failed so it still runs after
    a step skipped as outside the scope (a failure upstream still stops it)."""
    return {"undoes": phase, "undoes_service": service, "trigger_rule": "none_failed"}


def build_rollback_plan(config: MigrationConfig, migration_dag_id: str = MIGRATION_DAG_ID) -> MigrationPlan:
    plan = MigrationPlan()
    dns, db, redis = config.dns, config.database, config.redis
    production = config.environments.production
    check = plan.add(
        Step(
            "check_run",
            f"check the scope; refuse while a run of {migration_dag_id} is queued or running",
            ("run parameters", f"runs of {migration_dag_id} (read only)"),
            operator="pyairtable_migration.operators.params.CheckRollbackRunOperator",
            arguments={
                "migration_dag_id": migration_dag_id,
                "services": sorted(config.deployable),
                "notifications": notification_settings(config),
            },
        )
    )
    traffic = plan.add(
        Step(
            "traffic.revert_weights",
            "production weight 0, staging 100 on every record in one batch; wait INSYNC",
            (f"records {', '.join(dns.records)}: weights",),
            operator="pyairtable_migration.operators.traffic.TrafficRollbackOperator",
            arguments={**route53_arguments(config), **undoing("traffic")},
        ),
        after=check,
    )
    for tier in config.tiers:
        plan.group_tooltips[f"services.{tier}"] = f"tier {tier}"
    order = rollback_order(config)
    ids: dict[str, str] = {}
    for name in order:
        ids[name] = plan.add(
            Step(
                f"services.{config.services[name].tier}.{name}",
                f"point service {name} back at its previous color (scaled up again if retired)",
                (f"namespace {production.namespace}: service {name} selector, {name}-blue/-green",),
                operator="pyairtable_migration.operators.bluegreen.BlueGreenRollbackOperator",
                arguments={**service_rollback_arguments(config, name), **undoing("services", name)},
            )
        )
    # A dependent rolls back before its dependencies (the reverse of the migration's edges).
    for name in order:
        for dependency in config.services[name].depends_on:
            if dependency in ids:
                plan.edges.add((ids[name], ids[dependency]))
    database = plan.chain(
        Step(
            "database.repoint_poolers",
            "pause the pooler(s), wait until the source has the target's writes, sync sequences, "
            "repoint to the source, resume",
            (
                *(f"pooler {p.name}" for p in db.poolers),
                f"source {db.source_conn_id}: sequences, subscription {db.reverse_subscription} dropped",
            ),
            operator="pyairtable_migration.operators.switchover.RollbackDatabaseOperator",
            arguments={**switchover_arguments(config), **undoing("switchover")},
        ),
        Step(
            "database.drop_forward_replication",
            f"drop subscription {db.subscription} and publication {db.publication}: no replication is "
            "left (a rollback after the database phase only)",
            (
                f"target {db.target_conn_id}: subscription {db.subscription}",
                f"source {db.source_conn_id}: replication slot and publication",
            ),
            operator="pyairtable_migration.operators.database.DropForwardReplicationOperator",
            arguments={**forward_replication_arguments(config), **undoing("database")},
        ),
        Step(
            "redis.rollback",
            (
                f"if the endpoint {redis.endpoint_conn_id} routes to the target: writers moved back in a "
                f"freeze of at most {redis.freeze_seconds} s; "
                if redis.endpoint_conn_id
                else ""
            )
            + "if the target carries the switch marker: the source takes the target's keys "
            + (
                "(REPLICAOF until caught up, then promoted), the target replicates the source again"
                if redis.mode == "replicaof"
                else "(copied back)"
            )
            + "; marker deleted",
            (
                f"redis {redis.source_conn_id}: replaced by the target's keys",
                f"redis {redis.target_conn_id}: "
                + ("REPLICAOF the source again" if redis.mode == "replicaof" else "switch marker deleted"),
            ),
            operator="pyairtable_migration.operators.redis_sync.RollbackRedisOperator",
            arguments={
                **redis_arguments(config),
                "timeout_seconds": redis.sync_timeout_seconds,
                "freeze_seconds": redis.freeze_seconds,
                **undoing("switchover"),
            },
        ),
        *([_kafka_rollback(config, config.kafka)] if config.kafka is not None else []),
    )[0]
    services_roots, services_leaves = plan.phase_roots_and_leaves("services")
    plan.edges.update((traffic, root) for root in services_roots)
    plan.edges.update((leaf, database) for leaf in services_leaves)
    if not services_roots:
        plan.edges.add((traffic, database))
    return plan


def _kafka_rollback(config: MigrationConfig, kafka: KafkaConfig) -> Step:
    """After the writers: the consumer groups follow them back, and no mirror is left running."""
    forward, reverse = mirror_state_dirs(kafka)
    groups = ", ".join(sorted(kafka.consumer_groups))
    return Step(
        "kafka.rollback",
        f"if the consumer groups ({groups}) run on production: production's events mirrored back to "
        f"staging (reverse mirror, lag gate {kafka.max_lag}), the groups moved back with their Deployments "
        "(offsets translated); then the forward mirror stops, the reverse mirror drains (production took "
        f"no event for {kafka.drain_quiet_seconds:g}s) and stops",
        (
            f"namespace {config.environments.production.namespace}: consumer Deployments scaled to 0",
            f"namespace {config.environments.staging.namespace}: consumer Deployments scaled up",
            f"connection {kafka.source_conn_id}: copies, offsets of groups {groups}",
            f"mirror processes in {forward} and {reverse} stopped",
        ),
        operator="pyairtable_migration.operators.kafka_mirror.KafkaRollbackOperator",
        arguments={
            **kafka_consumer_arguments(config, kafka),
            "forward_state_dir": forward,
            "reverse_state_dir": reverse,
            "mirror_group": kafka.mirror_group,
            "reverse_mirror_group": kafka.reverse_mirror_group,
            "window": kafka.mirror_window,
            "max_lag": kafka.max_lag,
            "lag_timeout_seconds": kafka.lag_timeout_seconds,
            "quiet_seconds": kafka.drain_quiet_seconds,
            **({"queue": kafka.mirror_queue} if kafka.mirror_queue else {}),
            **undoing("switchover"),
        },
    )


def rollback_params(config: MigrationConfig) -> dict[str, Param]:
    """The trigger form: mode, and the scope of what is undone."""
    from pyairtable_migration.builder import mode_param

    return {
        "mode": mode_param(
            "apply",
            "apply: roll back what is in place (each step a no-op when there is nothing to undo). "
            "plan: log what would change, change nothing.",
        ),
        "scope": Param(
            "all",
            type="string",
            enum=list(ROLLBACK_SCOPES),
            title="Scope",
            description="all: undo everything in reverse order. traffic: every user back on staging, "
            "nothing else (the emergency path). services: only the services chosen below, dependents "
            "first. from_phase: the phase chosen below and every later one, latest first.",
        ),
        "services": Param(
            [],
            type="array",
            items={"type": "string", "enum": sorted(config.deployable)},
            uniqueItems=True,
            title="Services (scope services)",
            description="Each chosen service goes back to its previous color; other services, traffic "
            "and the database stay as they are.",
        ),
        "from_phase": Param(
            "traffic",
            type="string",
            enum=list(UNDOABLE_PHASES),
            title="From phase (scope from_phase)",
            description="Undo this migration phase and every later one ("
            + " -> ".join(UNDOABLE_PHASES)
            + "), latest first.",
        ),
    }


def build_rollback_dag(
    config: MigrationConfig,
    config_path: str | Path = "",
    dag_id: str = ROLLBACK_DAG_ID,
    migration_dag_id: str = MIGRATION_DAG_ID,
) -> DAG:
    from pyairtable_migration.builder import build_plan_dag

    return build_plan_dag(
        dag_id,
        build_rollback_plan(config, migration_dag_id),
        params=rollback_params(config),
        doc_md=DOC_MD.format(config_path=config_path),
        description="Undo the PyAirtable production migration: traffic, services, database, Redis",
        tags=["pyairtable", "migration", "rollback"],
        notifications=config.notifications,
        on_success="rollback_done",
        on_failure="rollback_failed",
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], build_rollback_plan))
