"""The rollback DAG `pyairtable_production_rollback`: undo what is in place, in reverse dependency order.

    traffic  -> every user back on staging (production weight 0, staging 100, INSYNC)
    services -> each production Service back to its previous color, dependents before their
                dependencies (frontend tier first: reverse topological order)
    database -> the pooler(s) back to the source, which reverse replication kept current
    redis    -> only if the target carries the switch marker: the source takes the target's keys
                (replicaof: it replicates the target until caught up and is promoted, then the
                target replicates it as before the switch; copy: the keys are copied back)

Every step reads the state first and is a no-op when there is nothing to undo, so the DAG is
safe after a partial migration, twice in a row, or after clearing any task. The trigger form's
mode defaults to `apply` (this is the emergency path); `plan` logs what would change.
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow.sdk import DAG, Param

from pyairtable_migration.config import ConfigError, MigrationConfig, ServiceNode, load_config
from pyairtable_migration.plan import OPERATORS, MigrationPlan, Step, format_plan

ROLLBACK_DAG_ID = "pyairtable_production_rollback"
ROLLBACK_PHASES = ("traffic", "services", "database", "redis")

DOC_MD = """
### PyAirtable: roll production back to staging

Undoes what the migration put in place, in reverse dependency order: **traffic** (every user back
on staging) → **services** (each production Service back to its previous color, frontend first)
→ **database** (the pooler(s) back to the source, kept current by reverse replication) →
**redis** (only if the target carries the switch marker: the source takes the target's keys, and
the target replicates the source again as before the switch).

Every step is a no-op when there is nothing to undo: safe after a partial migration, twice, or
after a clear. Mode **apply** (default) acts; **plan** logs what would change.
Configuration: `{config_path}`.
"""


def build_rollback_plan(config: MigrationConfig) -> MigrationPlan:
    plan = MigrationPlan()
    dns, db, redis = config.dns, config.database, config.redis
    production, blue_green = config.environments.production, config.blue_green
    traffic = plan.add(
        Step(
            "traffic.revert_weights",
            "production weight 0, staging 100 on every record in one batch; wait INSYNC",
            (f"records {', '.join(dns.records)}: weights",),
            operator=f"{OPERATORS}.traffic.TrafficRollbackOperator",
            arguments={
                "aws_conn_id": dns.aws_conn_id,
                "hosted_zone": dns.hosted_zone,
                "records": list(dns.records),
                "staging_set_identifier": config.environments.staging.set_identifier,
                "production_set_identifier": production.set_identifier,
            },
        )
    )
    for tier in config.tiers:
        plan.group_tooltips[f"services.{tier}"] = f"tier {tier}"
    order = [name for name in reversed(config.topological_order()) if name in config.deployable]
    ids: dict[str, str] = {}
    for name in order:
        node = config.services[name]
        assert isinstance(node, ServiceNode)
        ids[name] = plan.add(
            Step(
                f"services.{node.tier}.{name}",
                f"point service {name} back at its previous color (scaled up again if retired)",
                (f"namespace {production.namespace}: service {name} selector, {name}-blue/-green",),
                operator=f"{OPERATORS}.bluegreen.BlueGreenRollbackOperator",
                arguments={
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
                    "poll_seconds": blue_green.rollout_poll_seconds,
                },
            )
        )
    # A dependent rolls back before its dependencies (the reverse of the migration's edges).
    for name in order:
        for dependency in config.services[name].depends_on:
            if dependency in ids:
                plan.edges.add((ids[name], ids[dependency]))
    database = plan.add(
        Step(
            "database.repoint_poolers",
            "pause the pooler(s), wait until the source has the target's writes, sync sequences, "
            "repoint to the source, resume",
            (
                *(f"pooler {p.name}" for p in db.poolers),
                f"source {db.source_conn_id}: sequences, subscription {db.reverse_subscription} dropped",
            ),
            operator=f"{OPERATORS}.switchover.RollbackDatabaseOperator",
            arguments={
                "source_conn_id": db.source_conn_id,
                "target_conn_id": db.target_conn_id,
                "poolers": [
                    {"name": p.name, "admin_conn_id": p.admin_conn_id, "database": p.database}
                    for p in db.poolers
                ],
                "publication": db.publication,
                "subscription": db.subscription,
                "reverse_publication": db.reverse_publication,
                "reverse_subscription": db.reverse_subscription,
                "sequence_margin": db.sequence_margin,
                "timeout_seconds": db.switchover_timeout_seconds,
                "replica_identity_full": list(db.replica_identity_full),
            },
        )
    )
    redis_step = plan.add(
        Step(
            "redis.rollback",
            "if the target carries the switch marker: the source takes the target's keys "
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
            operator=f"{OPERATORS}.redis_sync.RollbackRedisOperator",
            arguments={
                "source_conn_id": redis.source_conn_id,
                "target_conn_id": redis.target_conn_id,
                "mode": redis.mode,
                "timeout_seconds": redis.sync_timeout_seconds,
            },
        )
    )
    services_roots, services_leaves = plan.phase_roots_and_leaves("services")
    plan.edges.update((traffic, root) for root in services_roots)
    plan.edges.update((leaf, database) for leaf in services_leaves)
    if not services_roots:
        plan.edges.add((traffic, database))
    plan.edges.add((database, redis_step))
    return plan


def build_rollback_dag(
    config: MigrationConfig, config_path: str | Path = "", dag_id: str = ROLLBACK_DAG_ID
) -> DAG:
    from pyairtable_migration.builder import DEFAULT_ARGS, build_airflow_graph

    dag = DAG(
        dag_id,
        schedule=None,
        max_active_runs=1,
        catchup=False,
        params={
            "mode": Param(
                "apply",
                type="string",
                enum=["plan", "apply"],
                title="Mode",
                description="apply: roll back what is in place (each step a no-op when there is nothing "
                "to undo). plan: log what would change, change nothing.",
            )
        },
        doc_md=DOC_MD.format(config_path=config_path),
        description="Undo the PyAirtable production migration: traffic, services, database, Redis",
        tags=["pyairtable", "migration", "rollback"],
        default_args=DEFAULT_ARGS,
    )
    build_airflow_graph(build_rollback_plan(config), dag)
    return dag


def main(argv: list[str]) -> int:
    try:
        config = load_config(Path(argv[0])) if argv else load_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(format_plan(build_rollback_plan(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
