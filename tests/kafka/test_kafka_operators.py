"""The Kafka operators and the mirror lag trigger against real brokers, through Airflow connections."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pyairtable_migration.operators.kafka_mirror import (
    KafkaMirrorLagOperator,
    KafkaPreflightOperator,
    KafkaTopicsOperator,
    StartKafkaMirrorOperator,
    StopKafkaMirrorOperator,
)
from pyairtable_migration.triggers.kafka_mirror import KafkaMirrorLagTrigger
from tests.kafka.kafkalib import TOPIC, private_brokers

SOURCE, TARGET = "kafka_test_staging", "kafka_test_production"


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

            async def first_event() -> dict[str, Any]:
                async for event in trigger.run():
                    return dict(event.payload)
                raise AssertionError("no event")

            event = asyncio.run(first_event())
            assert event["status"] == "ok", event
            assert gate.execute_complete(apply(), event)["lag"] == 0
        finally:
            stopped = StopKafkaMirrorOperator(task_id="mirror_stop", **mirror).execute(apply())
        assert stopped == {"stopped": True}
