"""The Kafka operators and the mirror lag trigger against real brokers, through Airflow connections."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from pyairtable_migration.kafka_mirror.client import client_config, partitions_of, scan
from pyairtable_migration.operators.kafka_mirror import (
    KafkaMirrorLagOperator,
    KafkaPreflightOperator,
    KafkaTopicsOperator,
    StartKafkaMirrorOperator,
    StopKafkaMirrorOperator,
)
from pyairtable_migration.triggers.kafka_mirror import KafkaMirrorLagTrigger
from tests.kafka.kafkalib import TOPIC, private_brokers
from tests.watchdog import helper_thread

SOURCE, TARGET = "kafka_test_staging", "kafka_test_production"
# The drain's quiet, and how long a late producer keeps writing to the source once the drain started.
QUIET_SECONDS = 2.0
LATE_WRITES_SECONDS = 3.0


def apply() -> Any:
    return {"params": {"mode": "apply"}}


@pytest.mark.timeout(180)
def test_operators_move_topics_and_mirror_then_the_trigger_sees_no_lag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with private_brokers() as brokers:
        for conn_id, bootstrap in ((SOURCE, brokers.staging), (TARGET, brokers.production)):
            host, port = bootstrap.split(":")
            connection = {"conn_type": "generic", "host": host, "port": int(port)}
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        common: dict[str, Any] = {"source_conn_id": SOURCE, "target_conn_id": TARGET, "topics": [TOPIC]}
        mirror: dict[str, Any] = {**common, "mirror_group": "mirror-test", "state_dir": str(tmp_path / "m")}
        # No consumer group here (tests/e2e moves the lab's with their Deployments).
        no_consumers: dict[str, Any] = {
            "consumers": {},
            "source_namespace": "staging",
            "target_namespace": "production",
            "source_kubernetes_conn_id": "unused",
            "target_kubernetes_conn_id": "unused",
        }
        facts = KafkaPreflightOperator(task_id="kafka_preflight", **common, **no_consumers).execute(apply())
        assert facts["topics"] == {TOPIC: 3}
        assert KafkaTopicsOperator(task_id="kafka_topics", **common).execute(
            {"params": {"mode": "plan"}}
        ) == {"mode": "plan"}
        assert KafkaTopicsOperator(task_id="kafka_topics", **common).execute(apply())["created"] == [TOPIC]
        assert KafkaTopicsOperator(task_id="kafka_topics", **common).execute(apply())["created"] == []
        try:
            first = StartKafkaMirrorOperator(task_id="mirror_start", **mirror).execute(apply())
            again = StartKafkaMirrorOperator(task_id="mirror_start", **mirror).execute(apply())
            assert first["started"] and not again["started"] and again["pid"] == first["pid"]
            gate = KafkaMirrorLagOperator(task_id="mirror_lag", max_lag=0, sample_seconds=0.5, **mirror)
            trigger = KafkaMirrorLagTrigger(
                source_conn_id=SOURCE,
                mirror_group="mirror-test",
                topics=[TOPIC],
                max_lag=0,
                consecutive_samples=2,
                sample_seconds=0.5,
                timeout_seconds=60,
            )
            classpath, kwargs = trigger.serialize()
            assert classpath.endswith("KafkaMirrorLagTrigger") and kwargs["max_lag"] == 0

            event = first_event(trigger)
            assert event["status"] == "ok", event
            assert gate.execute_complete(apply(), event)["lag"] == 0

            # The drain while a late producer (a client with an old DNS answer) still writes to the
            # source: lag 0 comes and goes meanwhile; the drain passes only once the source took
            # nothing for the quiet seconds, so the mirror stopped then has copied every event.
            late = LateProducer(brokers.staging, LATE_WRITES_SECONDS)
            drain = KafkaMirrorLagTrigger(
                **{**trigger.serialize()[1], "consecutive_samples": 2, "quiet_seconds": QUIET_SECONDS}
            )
            started = time.monotonic()
            drained = first_event(drain)
            passed_at = started + drained["seconds"]
            late.thread.join(30)
            assert drained["status"] == "ok" and "no new event for" in drained["message"], drained
            assert late.acknowledged and passed_at >= late.last_acknowledged_at + QUIET_SECONDS, (
                drained,
                late.acknowledged,
                late.last_acknowledged_at - started,
            )
        finally:
            stopped = StopKafkaMirrorOperator(task_id="mirror_stop", **mirror).execute(apply())
        assert stopped == {"stopped": True}
        copied = {
            record.value.decode()
            for partition in range(partitions_of(brokers.production, [TOPIC])[TOPIC])
            for record in scan(brokers.production, TOPIC, partition)
            if record.value is not None
        }
        assert set(late.acknowledged) <= copied, sorted(set(late.acknowledged) - copied)


def first_event(trigger: KafkaMirrorLagTrigger) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(run())


class LateProducer:
    """Writes one event every 0.2 s to `bootstrap` for `seconds`; keeps what was acknowledged, when."""

    def __init__(self, bootstrap: str, seconds: float) -> None:
        self.acknowledged: list[str] = []
        self.last_acknowledged_at = 0.0
        self._producer = Producer(client_config(bootstrap, **{"enable.idempotence": True}))
        self._until = time.monotonic() + seconds
        self.thread = helper_thread(self._run, "late producer")

    def _run(self) -> None:
        number = 0
        while time.monotonic() < self._until:
            value = f"late-{number}"
            self._producer.produce(TOPIC, value=value.encode())
            assert self._producer.flush(10) == 0, f"{value} not acknowledged"
            self.acknowledged.append(value)
            self.last_acknowledged_at = time.monotonic()
            number += 1
            time.sleep(0.2)
