"""The end-to-end driver: a fresh lab under load, a (partial) migration, the on-demand rollback.

Each scenario gets a lab of its own on free ports (a migrated lab cannot be mistaken for a fresh
one, and the shared lab is never touched), with the load generator running from before the first
task until after the last rollback: HTTP through the weighted edge and commits through the pooler,
and logged-in users writing to their Redis sessions through the edge (each write an event on Kafka),
every acknowledged commit, session write and event in a ledger that is finally checked against the
source database, Redis and what the consumer group processed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lab.connections import connections_in_environment
from lab.edge import lab_edge
from lab.kafka_ledger import KafkaLedgerReport, check_kafka_ledger
from lab.kube_seed import kafka_ledger_dir
from lab.ledger import LedgerReport, check_ledger
from lab.loadgen import LoadGenerator, app_dsn
from lab.migration_config import CONFIG_ENV, write_lab_config
from lab.session_ledger import SessionLedgerReport, check_session_ledger
from lab.settings import LabSettings
from lab.supervisor import down, up
from pyairtable_migration.builder import build_migration_dag
from pyairtable_migration.config import MigrationConfig, load_config
from pyairtable_migration.hooks.database import MigrationPostgresHook
from pyairtable_migration.hooks.redis_hook import MigrationRedisHook
from pyairtable_migration.rollback import build_rollback_dag
from pyairtable_migration.status import collect
from tests.dagrun import clear_alone_and_run, registered, task_states

SCALE = 2000
HTTP_RATE = 30.0  # requests per second through the weighted edge
DB_RATE = 50.0  # commits per second through the pooler
USERS = 20  # logged-in users whose session writes hop between the environments as weights move
SESSION_RATE = 20.0  # session writes per second, all users together
BAKE_SECONDS = 3
SEEDED_TTL_SECONDS = 5  # the seeded records' TTL, which traffic.lower_ttl waits out
# The TTL traffic.finalize restores (300 s in the lab's config) bounds how soon a rollback after a
# full migration reaches clients: shortened too, so the edge can be watched going back to staging.
E2E_OVERRIDES: dict[tuple[str, ...], Any] = {("dns", "final_ttl_seconds"): SEEDED_TTL_SECONDS}
# The rollback DAG's Redis step: the real rollback, or in builds before it the note (ends skipped).
REDIS_ROLLBACK_TASKS = ("redis.rollback", "redis.note")
# Once a client's cached DNS answer has expired, its next request is resolved afresh; a request
# resolved just before that must have been counted within this long (loopback, a loaded machine).
IN_FLIGHT_MARGIN_SECONDS = 3.0
SETTLE_DEADLINE_SECONDS = 120.0
# How long the consumer group may take, once the load stopped, to process the last events produced.
EVENTS_CATCH_UP_SECONDS = 60.0


class Scenario:
    """One fresh lab with load running; runs the migration and rollback DAGs against it."""

    def __init__(
        self,
        name: str,
        config_path: Path,
        load: LoadGenerator,
        ledger: Path,
        session_ledger: Path,
        events_ledger: Path,
    ) -> None:
        self.name = name
        self.config_path = config_path
        self.config: MigrationConfig = load_config(config_path)
        self.load = load
        self.ledger = ledger
        self.session_ledger = session_ledger
        self.events_ledger = events_ledger
        self.figures: dict[str, Any] | None = None
        self.migration: Any = None  # the migration DAG last run, as registered

    def status(self) -> dict[str, Any]:
        """What the systems say now (pyairtable_migration.status), every part readable."""
        status = collect(self.config)
        unreadable = {name: part["error"] for name, part in status.items() if "error" in part}
        assert not unreadable, unreadable
        return status

    def migrate(self, last_tasks: Iterable[str] = (), include_upstream: bool = True) -> Any:
        """The migration DAG in apply mode, approvals off; only up to `last_tasks` when given (only
        those tasks, as a clear of them would run them again, without `include_upstream`)."""
        dag = build_migration_dag(self.config, config_path=self.config_path, dag_id=f"e2e_{self.name}")
        last = list(last_tasks)
        if last:
            assert set(last) <= set(dag.task_ids), last
            dag = dag.partial_subset(
                task_ids=last, include_upstream=include_upstream, include_downstream=False
            )
        self.migration = registered(dag)
        return self.migration.test(
            run_conf={"mode": "apply", "require_approvals": False, "bake_seconds": BAKE_SECONDS}
        )

    def clear_alone(self, run: Any, task_id: str) -> Any:
        """Clear `task_id` alone in the migration's `run`, as the UI's Clear does without downstream,
        and let the run go on (tests.dagrun.clear_alone_and_run); the run as it ended."""
        return clear_alone_and_run(self.migration, run, task_id)

    def rollback(self, **params: Any) -> Any:
        """The rollback DAG in apply mode; `params` (scope, services, from_phase) as its form takes them."""
        dag = build_rollback_dag(self.config, self.config_path, dag_id=f"e2e_{self.name}_rollback")
        return registered(dag).test(run_conf={"mode": "apply", **params})

    def traffic_on_staging(self) -> dict[str, int]:
        """Once the longest cached answer has expired, requests still flow and none reaches production.

        Returns the requests each environment served while watched.
        """
        ttl = max(v["ttl"] for sets in self.status()["dns"].values() for v in sets.values())
        time.sleep(ttl + IN_FLIGHT_MARGIN_SECONDS)
        first = dict(self.load.report()["http_by_environment"])
        deadline = time.monotonic() + SETTLE_DEADLINE_SECONDS
        while True:
            now = dict(self.load.report()["http_by_environment"])
            served = {env: now.get(env, 0) - first.get(env, 0) for env in now}
            if sum(served.values()) >= HTTP_RATE or time.monotonic() > deadline:
                return served
            time.sleep(0.5)

    def finish(self) -> tuple[dict[str, Any], LedgerReport, SessionLedgerReport, KafkaLedgerReport]:
        """Stop the load; look every acknowledged commit up on the SOURCE database, every
        acknowledged session write on the SOURCE Redis (where a rollback leaves the writers), and
        every event a broker acknowledged among those the consumer group processed (on whichever
        cluster: it is given the time to catch up on the last ones)."""
        self.stop_load()
        assert self.figures is not None
        source = MigrationPostgresHook(self.config.database.source_conn_id).connect()
        try:
            ledger = check_ledger(self.ledger, source)
        finally:
            source.close()
        with MigrationRedisHook(self.config.redis.source_conn_id).client() as redis_source:
            sessions = check_session_ledger(self.session_ledger, redis_source)
        groups = list(self.config.kafka.consumer_groups) if self.config.kafka else []
        events = check_kafka_ledger(self.events_ledger, EVENTS_CATCH_UP_SECONDS, groups)
        return self.figures, ledger, sessions, events

    def stop_load(self) -> None:
        if self.figures is None:
            self.figures = self.load.stop()


@contextlib.contextmanager
def scenario(name: str, target_major: int = 15) -> Iterator[Scenario]:
    """A fresh throwaway lab (short TTLs; production on PostgreSQL `target_major`), its connections
    and config in os.environ, load running; everything stopped, the environment restored and the
    lab purged afterwards."""
    settings = LabSettings.throwaway(
        "pyairtable-e2e-", dns_initial_ttl=SEEDED_TTL_SECONDS, target_major=target_major
    )
    try:
        up(settings, SCALE)
        config_path = write_lab_config(settings, E2E_OVERRIDES)
        with connections_in_environment(settings, **{CONFIG_ENV: str(config_path)}):
            ledger = settings.data_dir / "e2e-ledger.log"
            session_ledger = settings.data_dir / "e2e-sessions.log"
            config = load_config(config_path)
            load = LoadGenerator(
                dsn=app_dsn(settings),
                db_rate=DB_RATE,
                ledger_path=ledger,
                edge=lab_edge(settings),
                http_rate=HTTP_RATE,
                records=config.dns.records,
                services=list(config.deployable),
                users=USERS,
                session_rate=SESSION_RATE,
                session_ledger_path=session_ledger,
            )
            load.start()
            run = Scenario(name, config_path, load, ledger, session_ledger, kafka_ledger_dir(settings))
            try:
                yield run
            finally:
                run.stop_load()
    finally:
        down(settings, purge=True)


# --- reading a run -----------------------------------------------------------------------------------


def pointing(pooler: Mapping[str, Any]) -> dict[str, Any]:
    """A pooler's status without whom it serves (that moves with the load): where it points, paused."""
    return {key: pooler[key] for key in ("points_at", "paused")}


def summaries(run: Any) -> dict[str, Any]:
    """task_id -> the summary the task returned (its return_value XCom), for tasks that returned one."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(
            dag_id=run.dag_id, run_id=run.run_id, key="return_value", map_index=-1
        )
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


def assert_succeeded(run: Any) -> dict[str, str]:
    """The run succeeded; returns its task states."""
    states = task_states(run)
    failed = {task_id: state for task_id, state in states.items() if state not in ("success", "skipped")}
    assert run.state == "success" and not failed, (run.dag_id, run.state, failed)
    return states


def redis_rollback_task(states: Mapping[str, str]) -> str:
    """The rollback DAG's Redis step, whichever of its names this build has."""
    found = [task_id for task_id in REDIS_ROLLBACK_TASKS if task_id in states]
    assert len(found) == 1, sorted(states)
    return found[0]


# --- the state a rollback must leave ------------------------------------------------------------------


def assert_clean_staging(status: Mapping[str, Any], before: Mapping[str, Any], rollback: Any) -> None:
    """Everything on staging, as `status` (read after `rollback`) shows it.

    DNS: staging 100, production 0 on every record. Database: every pooler sends writers to the
    source, unpaused; no replication in either direction. Services: each production Service selects the color
    it had before the migration (`before`), or - a first deployment, the lab's case - the rollback
    found no previous color and changed nothing. Redis, when status reports it: the source is the
    primary and the switch marker is gone. Kafka: every consumer group's workers on staging alone,
    no mirror running.
    """
    for record, sets in status["dns"].items():
        assert {sid: v["weight"] for sid, v in sets.items()} == {"staging": 100, "production": 0}, record
    for name, pooler in status["database"]["poolers"].items():
        assert pointing(pooler) == {"points_at": "source", "paused": False}, name
    replication = status["database"]["replication"]
    assert {v["state"] for v in replication.values()} == {"absent"}, replication
    results = summaries(rollback)
    for name, service in status["services"].items():
        previous = before["services"][name]["color"]
        if service["color"] == previous:
            continue
        undone = next(v for task_id, v in results.items() if task_id.endswith(f".{name}"))
        assert previous is None and undone["color"] is None and undone["changed"] is False, (name, undone)
    if "redis" in status:
        assert_redis_on_source(status["redis"])
    assert_kafka_consumers_on(status["kafka"], "staging")


def assert_kafka_consumers_on(kafka: Mapping[str, Any], side: str) -> None:
    """Every consumer group's workers run on `side` alone, where the group has offsets; no mirror runs."""
    for group, sides in kafka["groups"].items():
        running = {name for name, g in sides.items() if g["replicas"]}
        assert running == {side} and sides[side]["has_offsets"], (group, sides)
    assert not [label for label, m in kafka["mirrors"].items() if m["running_pid"]], kafka["mirrors"]


def assert_redis_on_source(redis: Mapping[str, Any]) -> None:
    """The source Redis is the primary again, the write endpoint (when there is one) routes to it,
    and neither server carries the switch marker."""
    assert redis["source"]["role"] in ("primary", "master"), redis
    assert redis.get("endpoint", {"routes_to": "source"}) == {"routes_to": "source"}, redis
    assert redis["source"]["switched_at"] is None and redis["target"]["switched_at"] is None, redis


def assert_nothing_changed(rollback: Any) -> None:
    """A rollback over a clean staging state: every step read the state and changed nothing."""
    states = assert_succeeded(rollback)
    results = summaries(rollback)
    assert results["traffic.revert_weights"]["change_id"] is None, results["traffic.revert_weights"]
    changed = {
        task_id: value
        for task_id, value in results.items()
        if isinstance(value, Mapping) and value.get("changed")
    }
    assert not changed, changed
    assert results["database.repoint_poolers"]["changed"] is False
    redis = redis_rollback_task(states)
    assert states[redis] == "skipped" or results.get(redis, {}).get("changed") is False, results.get(redis)
