"""The Redis steps as the migration and rollback DAGs build them, run in-process on the pair, and
the pair's Redis put back as staging runs it between tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from airflow.sdk import DAG

from lab.processes import State
from lab.redis_lab import RedisServer
from pyairtable_migration.builder import create_airflow_task
from pyairtable_migration.config import MigrationConfig
from pyairtable_migration.rollback import build_rollback_plan
from tests.database.pair import Pair
from tests.database.runner import operator_for, run

PREFIX = "rollback-test:"


def restore(pair: Pair) -> None:
    """Staging's arrangement (Pair.reset_redis: no marker either), none of the tests' keys, the
    source's seed (re)present."""
    pair.reset_redis()
    source = pair.redis("source")
    leftovers = source.keys(f"{PREFIX}*")
    if leftovers:
        source.delete(*leftovers)
    RedisServer("source").seed(pair.settings, pair.records, State(pair.settings))  # only if emptied


def sync(config: MigrationConfig, mode: str = "replicaof") -> Any:
    return run(operator_for(config, "database.sync_redis", mode=mode), config)


def switch(config: MigrationConfig, mode: str = "replicaof") -> Any:
    return run(operator_for(config, "switchover.switch_redis", mode=mode), config)


def rollback(config: MigrationConfig, redis_mode: str = "replicaof", **run_params: Any) -> Any:
    """The rollback DAG's own redis.rollback task (its arguments from the config)."""
    step = build_rollback_plan(config).steps["redis.rollback"]
    step = replace(step, arguments={**step.arguments, "mode": redis_mode})
    task = create_airflow_task(step, DAG("test_redis_rollback", schedule=None), None)
    return run(task, config, **run_params)
