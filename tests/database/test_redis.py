"""Redis `copy` mode (managed servers that refuse REPLICAOF): every key and its TTL copied,
validation naming what differs. (`replicaof` runs in test_migration's scenario.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from pyairtable_migration.config import MigrationConfig
from tests.database.pair import Pair
from tests.database.runner import operator_for, run

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def clean(pair: Pair) -> Iterator[None]:
    pair.reset()
    yield
    pair.reset()


def copy(config: MigrationConfig, task_id: str, **arguments: object) -> Any:
    return run(operator_for(config, task_id, mode="copy", **arguments), config)


@pytest.fixture
def own_keys(pair: Pair) -> Iterator[tuple[str, ...]]:
    """This test's keys, deleted afterwards on both sides: a 90 s key left behind would expire in
    the middle of a later test's before/after comparison of the shared pair."""
    keys = ("events:stream", "expiring:soon")
    yield keys
    for side in ("source", "target"):
        pair.redis(side).delete(*keys)


@pytest.mark.usefixtures("own_keys")
def test_copy_mode_keeps_every_key_type_and_ttl(pair: Pair, config: MigrationConfig) -> None:
    source, target = pair.redis("source"), pair.redis("target")
    source.xadd("events:stream", {"kind": "record.update"})
    source.set("expiring:soon", "x", px=90_000)
    keys = source.dbsize()
    assert copy(config, "preflight.check_redis")["passed"] is True
    result = copy(config, "database.sync_redis")
    assert result["copied"] == keys and result["vanished"] == 0 and result["with_ttl"] > 0
    assert target.dbsize() == keys
    assert target.type("events:stream") == b"stream"
    assert abs(target.pttl("expiring:soon") - source.pttl("expiring:soon")) < 5_000
    summary = copy(
        config, "database.validate_redis", ttl_tolerance_seconds=config.redis.ttl_tolerance_seconds
    )
    assert summary["keys"] == keys and summary["types"]["stream"] == 1
    # Run again: keys replaced, not duplicated; a last pass at the switchover likewise.
    assert copy(config, "database.sync_redis")["copied"] == keys
    # Through the endpoint the last pass runs inside the freeze: 50,000 keys outlast the default 5 s
    # on a loaded machine, and the move would give up (README, Known limits).
    assert copy(config, "switchover.switch_redis", freeze_seconds=120)["copied"] == keys
    assert target.dbsize() == keys + 1  # and the switch marker (which validation does not count)
    # A key lost on the target and a TTL gone are named.
    target.delete("events:stream")
    target.persist("expiring:soon")
    with pytest.raises(AirflowFailException) as failure:
        copy(config, "database.validate_redis", ttl_tolerance_seconds=config.redis.ttl_tolerance_seconds)
    message = str(failure.value)
    assert "stream keys: source 1, target 0" in message
    assert "expiring:soon" in message
