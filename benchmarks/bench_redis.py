"""The Redis switch under 1,000 session writes/s, on a lab of its own: the two Redis servers and
their write endpoint (HAProxy) on free ports.

The target is synchronised (database.sync_redis), then WRITERS threads write sessions through the
endpoint as the lab's pods do (lab/kube/sessions.py: HINCRBY `writes` + EXPIRE in one MULTI/EXEC,
riding through a cut connection or READONLY on fresh connections until a 5 s deadline) while the
switchover's switchover.switch_redis and then the rollback DAG's redis.rollback run in-process, as
the DAGs build them. Pacing is open-loop: a writer held up by a move sends the writes it owes at
once afterwards, as queued user requests would arrive, so the rate achieved is the rate offered
only if the endpoint keeps up.

Goals: each move's stall (CLIENT PAUSE WRITE until the endpoint routes to the other server, as
the task measures it) <= 250 ms, as PostgreSQL's write switchover; >= 1,000 session writes/s
acknowledged; 0 failed writes; 0 acknowledged writes lost. A loss shows two ways, both counted:
a writer owns its sessions, so an answered count not above the last one it acknowledged means
writes went missing (later writes would hide that from a check at the end); and at the end every
session's `writes` on the source, where the writers end, is at least its highest acknowledged count.
(A drop no later write overtook counts in both: 0 is exact, more is an upper bound.)

    PYTHONPATH=plugins:. .venv/bin/python -m benchmarks.bench_redis
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import redis
from airflow.sdk import DAG, BaseOperator

from benchmarks.table import Figure, at_least, at_most, format_table, note
from lab.kube.sessions import SessionSettings, SessionStore, StoreUnavailable
from lab.redis_endpoint import RedisEndpoint
from lab.session_ledger import SessionLedger, check_session_ledger
from pyairtable_migration.builder import create_airflow_task
from pyairtable_migration.config import MigrationConfig, load_config
from pyairtable_migration.hooks.redis_endpoint import RedisEndpointHook
from pyairtable_migration.redis.switch import routed_side
from pyairtable_migration.rollback import build_rollback_plan
from tests.database.runner import operator_for, run
from tests.own_lab import running_lab

PHASE = "redis"
RATE = 1000
WRITERS = 8
SESSIONS_PER_WRITER = 25
# Steady load before the switch, between the moves, and after the rollback.
STEADY_SECONDS = 4.0
# Bounds the tasks' waits (the DAG allows the catch-ups 30 min and more); here they take ms.
TASK_TIMEOUT_SECONDS = 30
STALL_GOAL_MS = 250
COMPONENTS = ("redis-source", "redis-target", "redis-endpoint")


@dataclass
class Window:
    """When a task ran (monotonic clock): the writes overlapping it are the ones its move could hold."""

    started: float
    ended: float


@dataclass
class SessionWriter:
    """One writer thread with its own client and sessions, at its share of the rate. Each
    acknowledged write goes to the ledger; a count not above the last acknowledged one is a loss."""

    store: SessionStore
    ledger: SessionLedger
    user: str
    counts: dict[str, int]
    interval: float
    writes: list[tuple[float, float]] = field(default_factory=list)  # (started, seconds) acknowledged
    failures: list[str] = field(default_factory=list)
    regressed: int = 0
    applied_twice: int = 0

    def run(self, first_slot: float, stop: threading.Event) -> None:
        tokens = list(self.counts)
        next_slot, turn = first_slot, 0
        while not stop.is_set():
            delay = next_slot - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            next_slot += self.interval
            token = tokens[turn % len(tokens)]
            turn += 1
            sent_at, started = time.time(), time.monotonic()
            try:
                count = self.store.record_write(token, self.user, self.store.deadline())
            except StoreUnavailable as exc:
                self.failures.append(str(exc))
                continue
            except redis.RedisError as exc:  # answered with an error: a failed write
                self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            self.writes.append((started, time.monotonic() - started))
            self.ledger.record(token, count, sent_at + self.store.settings.ttl_seconds)
            last = self.counts[token]
            if count <= last:
                self.regressed += last - count + 1
            elif count > last + 1:
                self.applied_twice += count - last - 1
            self.counts[token] = count  # from the server's count on: each drop is counted once


class SessionLoad:
    """WRITERS writer threads through the endpoint at RATE writes/s between them, each with its
    own client and SESSIONS_PER_WRITER sessions; stopped on the way out, whatever happened."""

    def __init__(self, url: str, ledger: SessionLedger) -> None:
        self.ledger = ledger
        self.writers: list[SessionWriter] = []
        for index in range(WRITERS):
            store = SessionStore(SessionSettings(url=url))
            user = f"bench-user-{index}"
            tokens = [store.login(user, store.deadline()) for _ in range(SESSIONS_PER_WRITER)]
            self.writers.append(SessionWriter(store, ledger, user, dict.fromkeys(tokens, 0), WRITERS / RATE))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = self.stopped = 0.0

    def __enter__(self) -> SessionLoad:
        self.started = time.monotonic()
        for index, writer in enumerate(self.writers):
            # Interleaved, the first slots at or before the start: a writer that keeps pace has sent
            # at least RATE writes/s by any moment the load stops.
            first_slot = self.started - index * writer.interval / WRITERS
            thread = threading.Thread(
                target=writer.run, args=(first_slot, self._stop), name=f"bench-session-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.stopped = time.monotonic()
        for thread in self._threads:
            thread.join(timeout=10)  # a write in flight ends by its 5 s deadline
        for writer in self.writers:
            writer.store.close()
        self.ledger.close()
        if exc[0] is None and any(thread.is_alive() for thread in self._threads):
            raise RuntimeError("a session writer outlived its write's deadline")

    @property
    def acknowledged(self) -> int:
        return sum(len(writer.writes) for writer in self.writers)

    @property
    def failures(self) -> list[str]:
        return [failure for writer in self.writers for failure in writer.failures]

    def longest_wait_ms(self, window: Window) -> float:
        """The longest acknowledged write that was under way at some point of `window`."""
        waits = [
            seconds
            for writer in self.writers
            for started, seconds in writer.writes
            if started <= window.ended and started + seconds >= window.started
        ]
        return max(waits, default=0.0) * 1000


def timed_task(task: BaseOperator, config: MigrationConfig) -> tuple[dict[str, Any], Window]:
    """The task run in-process as Airflow would (tests/database/runner.py), and when it ran. Its
    log goes to stdout, past logging.disable: the benchmark prints only its figures."""
    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = run(task, config, run_id="bench")
    return result, Window(started, time.monotonic())


def rollback_task(config: MigrationConfig) -> BaseOperator:
    """The rollback DAG's own redis.rollback task (as tests/database/redis_steps.py), its wait bounded."""
    step = build_rollback_plan(config).steps["redis.rollback"]
    step = replace(step, arguments={**step.arguments, "timeout_seconds": TASK_TIMEOUT_SECONDS})
    return create_airflow_task(step, DAG("bench_redis_rollback", schedule=None), None)


def moved(name: str, result: dict[str, Any], window: Window) -> None:
    if result.get("changed") is not True or "stall_ms" not in result:
        raise AssertionError(f"{name} moved no writers: {result}")
    note(
        f"  {name}: stall {result['stall_ms']} ms (catch-up {result['catch_up_ms']} ms) in a task of "
        f"{(window.ended - window.started) * 1000:.0f} ms"
    )


def figures() -> list[Figure]:
    logging.disable(logging.CRITICAL)  # the figures, not the tasks' logs
    config = load_config()
    bounded = {"timeout_seconds": TASK_TIMEOUT_SECONDS}
    began = time.perf_counter()
    with running_lab("pyairtable-bench-redis-", COMPONENTS) as settings:
        note(f"  Redis pair and endpoint up in {time.perf_counter() - began:.1f} s")
        timed_task(operator_for(config, "database.sync_redis", **bounded), config)
        endpoint = RedisEndpointHook(str(config.redis.endpoint_conn_id))
        servers = (settings.host, settings.redis_source_port), (settings.host, settings.redis_target_port)
        ledger_path = settings.data_dir / "sessions.log"  # purged with the lab
        with SessionLoad(RedisEndpoint().address(settings), SessionLedger(ledger_path)) as load:
            time.sleep(STEADY_SECONDS)
            steady = Window(load.started, time.monotonic())
            switch, at_switch = timed_task(operator_for(config, "switchover.switch_redis", **bounded), config)
            moved("switch", switch, at_switch)
            assert routed_side(endpoint, *servers) == "target"
            time.sleep(STEADY_SECONDS)
            back, at_rollback = timed_task(rollback_task(config), config)
            moved("rollback", back, at_rollback)
            assert routed_side(endpoint, *servers) == "source"
            time.sleep(STEADY_SECONDS)
        with redis.Redis(host=settings.host, port=settings.redis_source_port, socket_timeout=10) as source:
            report = check_session_ledger(ledger_path, source)
    seconds = load.stopped - load.started
    regressed = sum(writer.regressed for writer in load.writers)
    twice = sum(writer.applied_twice for writer in load.writers)
    note(f"  {load.acknowledged:,} session writes acknowledged in {seconds:.1f} s; {load.failures[:3]}")
    note(f"  on the source at the end: {report.summary()}; counts gone back during the run: {regressed}")
    note(f"  whole Redis benchmark {time.perf_counter() - began:.0f} s")
    under = f"{RATE:,} session writes/s"
    return [
        at_most(PHASE, f"writers' stall at the switch, {under}", switch["stall_ms"], "ms", STALL_GOAL_MS),
        at_most(PHASE, f"writers' stall at the rollback, {under}", back["stall_ms"], "ms", STALL_GOAL_MS),
        Figure(PHASE, "longest wait for one session write, steady load", load.longest_wait_ms(steady), "ms"),
        Figure(PHASE, "  during the switch task", load.longest_wait_ms(at_switch), "ms"),
        Figure(PHASE, "  during the rollback task", load.longest_wait_ms(at_rollback), "ms"),
        at_least(
            PHASE,
            f"session writes acknowledged ({under} offered)",
            load.acknowledged / seconds,
            "writes/s",
            RATE,
        ),
        at_most(PHASE, "failed session writes", len(load.failures), "", 0),
        at_most(PHASE, "acknowledged session writes lost", regressed + report.lost, "", 0),
        Figure(PHASE, "session writes applied twice (a retried EXEC had run)", twice, ""),
    ]


def main() -> None:
    print(format_table(figures()))


if __name__ == "__main__":
    main()
