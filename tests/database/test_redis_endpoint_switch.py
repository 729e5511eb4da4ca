"""The Redis switch and rollback through the one write endpoint (the pair's HAProxy), with a writer
writing through it the whole time: every acknowledged write is on the server the writers end on,
the old primary follows the new one, and a failure inside the freeze leaves the writers on the
source with nothing lost."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ReadOnlyError
from redis.retry import Retry

from lab.supervisor import start_component
from pyairtable_migration.config import MigrationConfig
from pyairtable_migration.hooks.database import MigrationError
from pyairtable_migration.hooks.redis_hook import mark_switched, replication_state, switch_marker
from pyairtable_migration.redis.stages import wait_caught_up
from pyairtable_migration.redis.switch import Server, move_writers
from pyairtable_migration.status import redis_status
from tests.database.pair import Pair
from tests.database.redis_steps import PREFIX, restore, rollback, switch, sync

pytestmark = pytest.mark.lab


class Writer:
    """A client of the endpoint as the platform's services are: it retries a command cut by the
    move (or answered READONLY by the old primary) on a new connection, and records each
    acknowledged write and the longest wait for one."""

    def __init__(self, pair: Pair) -> None:
        self.client = redis.Redis(
            host=pair.settings.host,
            port=pair.settings.redis_endpoint_port,
            socket_timeout=5,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), 200),
            retry_on_error=[ReadOnlyError],
        )
        self.acknowledged: list[int] = []
        self.failures: list[str] = []
        self.longest_wait_ms = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        while len(self.acknowledged) < 50:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            started = time.monotonic()
            try:
                self.client.set(f"{PREFIX}{number}", number)
            except redis.RedisError as exc:
                self.failures.append(f"{number}: {exc}")
                continue
            self.longest_wait_ms = max(self.longest_wait_ms, (time.monotonic() - started) * 1000)
            self.acknowledged.append(number)
            time.sleep(0.001)

    def missing_on(self, server: redis.Redis) -> list[int]:
        with server.pipeline(transaction=False) as pipe:
            for number in self.acknowledged:
                pipe.exists(f"{PREFIX}{number}")
            present = pipe.execute()
        return [number for number, found in zip(self.acknowledged, present, strict=True) if not found]


@pytest.fixture(autouse=True)
def clean(pair: Pair) -> Iterator[None]:
    restore(pair)
    yield
    restore(pair)


def routed(pair: Pair) -> str:
    address = pair.redis_endpoint().routed_to()
    return {pair.settings.redis_source_port: "source", pair.settings.redis_target_port: "target"}[
        address[1] if address else 0
    ]


def test_the_switch_moves_every_writer_and_loses_no_acknowledged_write(
    pair: Pair, config: MigrationConfig
) -> None:
    source, target = pair.redis("source"), pair.redis("target")
    sync(config)
    with Writer(pair) as writer:
        result = switch(config)
        moved_at = len(writer.acknowledged)
        while len(writer.acknowledged) < moved_at + 50:
            time.sleep(0.01)
    assert result["changed"] is True and result["switched_at"] == switch_marker(target)
    assert 0 < result["stall_ms"] < 5000 and result["catch_up_ms"] <= result["stall_ms"]
    assert routed(pair) == "target"
    assert replication_state(target).role == "master"
    assert replication_state(source).replicates(pair.settings.host, pair.settings.redis_target_port)
    assert writer.failures == []
    assert writer.missing_on(target) == []
    # The old primary follows the new one: everything written after the move reaches it too.
    assert wait_caught_up(target, source, 30)[0]
    assert writer.missing_on(source) == []
    # A re-run reads the endpoint: nothing to change.
    again = switch(config)
    assert again["changed"] is False and again["switched_at"] == result["switched_at"]
    assert redis_status(config)["endpoint"] == {"routes_to": "target"}


def test_the_rollback_moves_the_writers_back_with_every_write(pair: Pair, config: MigrationConfig) -> None:
    source, target = pair.redis("source"), pair.redis("target")
    sync(config)
    with Writer(pair) as writer:
        switch(config)
        during = len(writer.acknowledged)
        while len(writer.acknowledged) < during + 50:
            time.sleep(0.01)
        result = rollback(config)
        back = len(writer.acknowledged)
        while len(writer.acknowledged) < back + 50:
            time.sleep(0.01)
    assert result["changed"] is True and 0 < result["stall_ms"] < 5000
    assert routed(pair) == "source"
    assert replication_state(source).role == "master"
    assert replication_state(target).replicates(pair.settings.host, pair.settings.redis_source_port)
    assert switch_marker(source) is None and switch_marker(target) is None
    assert writer.failures == [] and writer.missing_on(source) == []
    assert rollback(config)["changed"] is False
    # The staging arrangement is back: a later run switches again.
    assert switch(config)["changed"] is True and routed(pair) == "target"


@pytest.mark.parametrize("stopped_after", ["target promoted", "endpoint moved"])
def test_a_switch_stopped_midway_is_finished_or_started_over_by_a_rerun(
    pair: Pair, config: MigrationConfig, stopped_after: str
) -> None:
    """Killed after the promotion (endpoint still on the source: writers never reached the target,
    which is synchronised again) or after the commit point (the source not yet following)."""
    source, target = pair.redis("source"), pair.redis("target")
    sync(config)
    assert wait_caught_up(source, target, 30)[0]
    target.replicaof("no", "one")
    mark_switched(target)
    if stopped_after == "endpoint moved":
        pair.redis_endpoint().route_to((pair.settings.host, pair.settings.redis_target_port))
    else:
        source.set(f"{PREFIX}after-the-kill", "on the source")  # writers are still there
    result = switch(config)
    assert result["changed"] is True and routed(pair) == "target"
    assert replication_state(source).replicates(pair.settings.host, pair.settings.redis_target_port)
    if stopped_after == "target promoted":
        assert target.get(f"{PREFIX}after-the-kill") == b"on the source"


def test_the_target_killed_inside_the_freeze_leaves_the_writers_on_the_source(
    pair: Pair, config: MigrationConfig
) -> None:
    """The drill: the target dies after its promotion, before the endpoint moves. The move is
    undone, the source's pause lifted, no acknowledged write lost; restarted, sync and a clear of
    the switch finish the job."""
    source, target = pair.redis("source"), pair.redis("target")
    sync(config)
    target_pid = int(target.info("server")["process_id"])

    def killed(client: redis.Redis) -> None:
        mark_switched(client)
        os.kill(target_pid, signal.SIGKILL)

    settings = pair.settings
    old = Server("source", source, (settings.host, settings.redis_source_port))
    new = Server(
        "target",
        redis.Redis(host=settings.host, port=settings.redis_target_port, socket_timeout=2),
        (settings.host, settings.redis_target_port),
    )
    with Writer(pair) as writer:
        with pytest.raises(MigrationError, match=r"failed before the commit point.*writers stay on source"):
            move_writers(old, new, pair.redis_endpoint(), 5.0, on_promoted=killed)
        after = len(writer.acknowledged)
        while len(writer.acknowledged) < after + 50:  # the pause is lifted: writes carry on at once
            time.sleep(0.01)
    assert routed(pair) == "source" and replication_state(source).role == "master"
    assert writer.failures == [] and writer.missing_on(source) == []
    start_component("redis-target", settings)  # empty again: the sync fills it
    sync(config)
    assert switch(config)["changed"] is True and routed(pair) == "target"
    assert writer.missing_on(pair.redis("target")) == []
