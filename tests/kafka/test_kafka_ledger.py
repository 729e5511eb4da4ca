"""The Kafka ledger's account of a lost event, against a real broker: where it was acknowledged, and
what the broker holds there now (the event itself: no consumer read it; another: the broker lost it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer

from lab.kafka_ledger import KafkaLedger, check_kafka_ledger
from pyairtable_migration.kafka_mirror.client import client_config
from tests.kafka.kafkalib import TOPIC, private_brokers


@pytest.mark.timeout(120)
def test_a_lost_event_is_reported_with_what_its_broker_holds_at_its_place(tmp_path: Path) -> None:
    with private_brokers() as brokers:
        producer = Producer(client_config(brokers.staging))
        offsets: list[int | None] = []
        producer.produce(
            TOPIC, value=b"held", partition=0, on_delivery=lambda _err, sent: offsets.append(sent.offset())
        )
        assert producer.flush(30) == 0 and offsets and offsets[0] is not None
        ledger = KafkaLedger(tmp_path)
        ledger.produced("held", f"{brokers.staging} {TOPIC}[0]@{offsets[0]} 10:00:00.000")
        ledger.produced("overwritten", f"{brokers.staging} {TOPIC}[0]@{offsets[0]} 10:00:00.001")
        ledger.produced("beyond", f"{brokers.staging} {TOPIC}[0]@{offsets[0] + 5} 10:00:00.002")
        ledger.produced("unplaced")
        ledger.processed("processed", "staging")
        ledger.close()
        report = check_kafka_ledger(tmp_path)
    assert sorted(report.lost) == ["beyond", "held", "overwritten", "unplaced"]
    assert report.shared_places == {f"{brokers.staging} {TOPIC}[0]@{offsets[0]}": ["held", "overwritten"]}
    assert report.found_there["held"] == report.found_there["overwritten"] == "held"
    assert report.found_there["beyond"] == "nothing (past the partition's end)"
    assert report.found_there["unplaced"] == "place not recorded"
    assert "there now: held" in report.summary()
