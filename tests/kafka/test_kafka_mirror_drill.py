"""Drill: the mirror process is killed (SIGKILL) mid-run under load; its start task cleared (run
again, through the Airflow connections), the mirror resumes from its committed offsets; every event
on staging has a copy on production, and the only events copied twice are those production had
acknowledged at the kill but the source had not yet committed."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from lab.kafka_ledger import KafkaLedger
from pyairtable_migration.kafka_mirror import process
from pyairtable_migration.kafka_mirror.client import committed_offsets, scan
from pyairtable_migration.kafka_mirror.topics import ensure_topics
from pyairtable_migration.operators.kafka_mirror import StartKafkaMirrorOperator
from tests.kafka.kafkalib import (
    PRODUCTION,
    STAGING,
    TOPIC,
    EventProducer,
    private_brokers,
    total_lag,
    wait_for,
)

RATE = 500
WINDOW = 500
PARTITIONS = 3  # of the seeded record-events topic


@pytest.mark.timeout(240)
def test_killed_mirror_resumes_from_committed_offsets_with_nothing_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = KafkaLedger(tmp_path / "ledger")
    state_dir = tmp_path / "mirror"
    with private_brokers() as brokers:
        spec = brokers.spec(STAGING, PRODUCTION, window=WINDOW)
        for cluster in (STAGING, PRODUCTION):
            host, port = brokers.bootstrap(cluster).split(":")
            connection = {"conn_type": "generic", "host": host, "port": int(port)}
            monkeypatch.setenv(f"AIRFLOW_CONN_DRILL_{cluster.upper()}", json.dumps(connection))
        start_task = StartKafkaMirrorOperator(
            task_id="kafka_start_mirror",
            source_conn_id=f"drill_{STAGING}",
            target_conn_id=f"drill_{PRODUCTION}",
            source_label=STAGING,
            target_label=PRODUCTION,
            topics=[TOPIC],
            mirror_group=spec.group,
            state_dir=str(state_dir),
            window=WINDOW,
        )
        ensure_topics(brokers.staging, brokers.production, [TOPIC], STAGING)
        try:
            with EventProducer(brokers, ledger, RATE):
                first = start_task.execute({"params": {"mode": "apply"}})
                pid = first["pid"]
                assert first["started"]
                wait_for(
                    lambda: sum(committed_offsets(brokers.staging, spec.group).values()) > 1000, 60, "copying"
                )
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda: process.running_pid(state_dir) is None, 10, "the mirror gone")
                at_kill = dict(committed_offsets(brokers.staging, spec.group))
                uncommitted_at_kill = copied_since(brokers.production, at_kill)
                time.sleep(2)  # staging keeps taking events while nothing copies them
                resumed = start_task.execute({"params": {"mode": "apply"}})  # what a clear runs
                assert resumed["started"] and resumed["pid"] != pid
                time.sleep(3)
            wait_for(lambda: total_lag(brokers, spec) == 0, 60, "the mirror drained")
        finally:
            process.stop(state_dir)
        copies: Counter[tuple[int, int]] = Counter()
        originals = 0
        for partition in range(PARTITIONS):
            originals += sum(1 for _ in scan(brokers.staging, TOPIC, partition))
            for record in scan(brokers.production, TOPIC, partition):
                assert record.origin is not None and record.origin[0] == STAGING
                copies[(partition, record.origin[1])] += 1
    missing = [
        (partition, offset)
        for partition in range(PARTITIONS)
        for offset in range(max((o for p, o in copies if p == partition), default=-1) + 1)
        if copies[(partition, offset)] == 0
    ]
    twice = {position: count for position, count in copies.items() if count > 1}
    duplicates = sum(count - 1 for count in twice.values())
    print(
        f"drill: {originals} events on staging, {len(copies)} copied, {duplicates} copied twice; "
        f"committed at the kill {at_kill}, copies beyond it then {len(uncommitted_at_kill)}"
    )
    assert len(copies) == originals
    assert missing == []
    # Resumed from the committed offsets: nothing committed was copied again, nothing twice more.
    assert set(twice) <= uncommitted_at_kill
    assert max(twice.values(), default=2) == 2
    ledger.close()


def copied_since(production: str, committed: dict[tuple[str, int], int]) -> set[tuple[int, int]]:
    """(partition, origin offset) of every copy on production past the source's committed offset."""
    return {
        (partition, record.origin[1])
        for partition in range(PARTITIONS)
        for record in scan(production, TOPIC, partition)
        if record.origin is not None and record.origin[1] >= committed.get((TOPIC, partition), 0)
    }
