"""Redis rollback on the pair's real redis-server processes: the switch marker, the rollback of a
switch (replicaof and copy), no-ops where nothing was switched, and a re-run after a kill at every
stage of the replicaof rollback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
from airflow.sdk.exceptions import AirflowFailException

from pyairtable_migration.config import MigrationConfig
from pyairtable_migration.hooks.redis_hook import (
    SWITCH_MARKER,
    compare_inventories,
    inventory,
    replication_state,
    switch_marker,
)
from pyairtable_migration.redis.stages import wait_caught_up
from pyairtable_migration.status import redis_status
from tests.database.pair import Pair
from tests.database.redis_steps import PREFIX, restore, rollback, switch, sync

pytestmark = pytest.mark.lab

TTL_TOLERANCE_MS = 5_000


@pytest.fixture
def config(config: MigrationConfig) -> MigrationConfig:
    """This module: each environment with a Redis of its own (no write endpoint), where the switch
    marker alone says where writers went (test_redis_endpoint_switch.py covers the endpoint)."""
    return config.model_copy(update={"redis": config.redis.model_copy(update={"endpoint_conn_id": None})})


@pytest.fixture(autouse=True)
def clean(pair: Pair) -> Iterator[None]:
    restore(pair)
    yield
    restore(pair)


def switched_with_writes(pair: Pair, config: MigrationConfig, mode: str = "replicaof") -> redis.Redis:
    """Sync and switch, then write on the (promoted) target as production would; the target."""
    source, target = pair.redis("source"), pair.redis("target")
    source.set(f"{PREFIX}changed", "staging")
    source.set(f"{PREFIX}deleted", "staging")
    sync(config, mode)
    assert switch(config, mode)["changed"] is True
    target.set(f"{PREFIX}changed", "production")
    target.set(f"{PREFIX}new", "production")
    target.hset(f"{PREFIX}profile", mapping={"plan": "enterprise", "seats": 12})
    target.set(f"{PREFIX}session", "token", ex=600)
    target.delete(f"{PREFIX}deleted")
    return target


def assert_rolled_back(pair: Pair, expected: Any) -> None:
    """The source a primary holding `expected` (the target's keys), the target its replica again,
    and no marker anywhere."""
    source, target = pair.redis("source"), pair.redis("target")
    assert replication_state(source).role == "master"
    host, port = pair.settings.host, pair.settings.redis_source_port
    assert replication_state(target).replicates(host, port)
    caught_up, _, _ = wait_caught_up(source, target, 30)
    assert caught_up
    assert switch_marker(source) is None and switch_marker(target) is None
    assert compare_inventories(expected, inventory(source), TTL_TOLERANCE_MS) == []
    assert source.get(f"{PREFIX}changed") == b"production"
    assert source.get(f"{PREFIX}new") == b"production"
    assert source.hgetall(f"{PREFIX}profile") == {b"plan": b"enterprise", b"seats": b"12"}
    assert 0 < source.ttl(f"{PREFIX}session") <= 600
    assert not source.exists(f"{PREFIX}deleted")


def test_switch_marks_the_target_and_a_rerun_keeps_the_mark(pair: Pair, config: MigrationConfig) -> None:
    target = pair.redis("target")
    sync(config)
    first = switch(config)
    assert first["changed"] is True
    assert datetime.fromisoformat(first["switched_at"]).tzinfo is not None
    assert switch_marker(target) == first["switched_at"]
    assert switch(config) == {"mode": "replicaof", "changed": False, "switched_at": first["switched_at"]}
    # the marker is bookkeeping, not data: validation does not count it
    assert inventory(target).total == inventory(pair.redis("source")).total
    status = redis_status(config)
    assert status["target"]["role"] == "primary" and status["target"]["switched_at"] == first["switched_at"]
    assert status["source"]["switched_at"] is None


@pytest.mark.parametrize("mode", ["replicaof", "copy"])
def test_sync_refuses_a_switched_target_and_keeps_its_writes(
    pair: Pair, config: MigrationConfig, mode: str
) -> None:
    """Cleared after the switch (or a second run of the migration), sync_redis would make
    production's primary a copy of staging again."""
    target = pair.redis("target")
    sync(config)
    switch(config)
    target.set(f"{PREFIX}written-after-the-switch", "kept")
    before = inventory(target)
    with pytest.raises(AirflowFailException, match=r"switched at .* nothing changed"):
        sync(config, mode=mode)
    assert replication_state(target).role == "master"
    assert target.get(f"{PREFIX}written-after-the-switch") == b"kept"
    assert compare_inventories(before, inventory(target), TTL_TOLERANCE_MS) == []


def test_switch_marks_a_target_promoted_without_a_mark(pair: Pair, config: MigrationConfig) -> None:
    """A run killed between REPLICAOF NO ONE and the marker: the re-run marks it."""
    target = pair.redis("target")
    sync(config)
    caught_up, _, _ = wait_caught_up(pair.redis("source"), target, 30)
    assert caught_up
    target.replicaof("no", "one")
    result = switch(config)
    assert result["changed"] is True and switch_marker(target) == result["switched_at"]


def test_switch_refuses_a_primary_not_promoted_from_the_source(pair: Pair, config: MigrationConfig) -> None:
    """A primary promoted out of some other replication (never synced): not marked, so a rollback
    can never copy it over the source."""
    target = pair.redis("target")
    target.replicaof(pair.settings.host, 1)  # nothing listens there: a replication of its own
    target.replicaof("no", "one")
    with pytest.raises(AirflowFailException, match="not promoted from the source"):
        switch(config)
    assert switch_marker(target) is None


def test_rollback_brings_every_write_on_the_target_back_to_the_source(
    pair: Pair, config: MigrationConfig
) -> None:
    target = switched_with_writes(pair, config)
    expected = inventory(target)
    # A stray write on staging after the switch: the target wins (and the source resyncs in full).
    pair.redis("source").set(f"{PREFIX}stray", "staging")
    source_keys = pair.redis("source").dbsize()
    assert rollback(config, mode="plan") == {"mode": "plan"}
    assert pair.redis("source").dbsize() == source_keys and switch_marker(target) is not None
    result = rollback(config)
    assert result["changed"] is True and result["offset"] > 0 and result["seconds"] >= 0
    assert_rolled_back(pair, expected)
    assert not pair.redis("source").exists(f"{PREFIX}stray")
    status = redis_status(config)
    assert status["source"] | {"offset": 0} == {
        "role": "primary",
        "replicates": None,
        "link_up": None,
        "offset": 0,
        "switched_at": None,
    }
    assert status["target"]["replicates"] == "source" and status["target"]["switched_at"] is None
    # Again: nothing to undo.
    assert rollback(config)["changed"] is False
    assert_rolled_back(pair, expected)
    # The staging arrangement is back, so a later migration run can switch again.
    assert switch(config)["changed"] is True and switch_marker(target) is not None


@pytest.mark.parametrize("stopped_after", ["source replicates target", "source promoted", "target repointed"])
def test_a_rollback_killed_midway_completes_when_run_again(
    pair: Pair, config: MigrationConfig, stopped_after: str
) -> None:
    """The stages done by hand up to the kill, then a plain re-run finishes the job."""
    source = pair.redis("source")
    target = switched_with_writes(pair, config)
    expected = inventory(target)
    source.replicaof(pair.settings.host, pair.settings.redis_target_port)
    if stopped_after != "source replicates target":
        caught_up, _, _ = wait_caught_up(target, source, 30)
        assert caught_up
        source.replicaof("no", "one")
        assert switch_marker(source) is not None  # it came with the target's keys
    if stopped_after == "target repointed":
        target.replicaof(pair.settings.host, pair.settings.redis_source_port)
    result = rollback(config)
    assert result["changed"] is True
    assert_rolled_back(pair, expected)
    assert rollback(config)["changed"] is False


# The marker is read before the mode matters; each mode still meets a never-switched pair.
@pytest.mark.parametrize(
    ("target_state", "mode"),
    [("empty primary", "replicaof"), ("primary with keys", "copy"), ("replica of the source", "replicaof")],
)
def test_rollback_of_a_never_switched_pair_changes_nothing(
    pair: Pair, config: MigrationConfig, mode: str, target_state: str
) -> None:
    source, target = pair.redis("source"), pair.redis("target")
    source.set(f"{PREFIX}staging", "kept")
    if target_state == "primary with keys":
        target.set(f"{PREFIX}stranger", "not to be copied")
    elif target_state == "replica of the source":
        sync(config)
    before = inventory(source)
    roles = (replication_state(source).role, replication_state(target).role)
    result = rollback(config, redis_mode=mode)
    assert result["changed"] is False and result["mode"] == mode
    assert (replication_state(source).role, replication_state(target).role) == roles
    assert compare_inventories(before, inventory(source), TTL_TOLERANCE_MS) == []
    assert source.get(f"{PREFIX}staging") == b"kept" and not source.exists(f"{PREFIX}stranger")


def test_rollback_refuses_a_marked_target_that_lost_its_keys(pair: Pair, config: MigrationConfig) -> None:
    source, target = pair.redis("source"), pair.redis("target")
    sync(config)
    switch(config)
    marker = switch_marker(target)
    target.flushall()  # lost its data (a restart without persistence, a FLUSHALL), kept the marker
    target.set(SWITCH_MARKER, str(marker))
    keys = source.dbsize()
    with pytest.raises(AirflowFailException, match="would empty the source"):
        rollback(config)
    assert source.dbsize() == keys and replication_state(source).role == "master"


def test_copy_mode_round_trip(pair: Pair, config: MigrationConfig) -> None:
    source = pair.redis("source")
    target = switched_with_writes(pair, config, mode="copy")
    assert switch_marker(target) is not None
    # A re-run of the switch must not put the source's older values back on the target.
    assert switch(config, mode="copy")["changed"] is False
    assert target.get(f"{PREFIX}changed") == b"production"
    before = inventory(target)
    result = rollback(config, redis_mode="copy")
    # Every key the target still holds was copied; keys that expired meanwhile (the seed's caches
    # live 10 minutes) may not have been.
    assert result["changed"] is True
    assert inventory(target).total <= result["copied"] <= before.total
    assert switch_marker(source) is None and switch_marker(target) is None
    assert source.get(f"{PREFIX}changed") == b"production"
    assert source.hgetall(f"{PREFIX}profile") == {b"plan": b"enterprise", b"seats": b"12"}
    assert 0 < source.ttl(f"{PREFIX}session") <= 600
    # Copy adds and replaces, never deletes: a key deleted on the target since stays on the source.
    target_keys, source_keys = set(target.keys()), set(source.keys())
    assert target_keys <= source_keys
    assert source_keys - target_keys == {f"{PREFIX}deleted".encode()}
    assert rollback(config, redis_mode="copy")["changed"] is False
