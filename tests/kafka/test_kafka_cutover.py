"""Kafka moves under load and back: 0 acknowledged events lost, duplicates counted and bounded,
every consumer group resumes where it left off, against two real Kafka-protocol brokers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.kafka_ledger import KafkaLedger, check_kafka_ledger
from pyairtable_migration.kafka_mirror import process
from pyairtable_migration.kafka_mirror.client import KafkaMirrorError, committed_offsets
from pyairtable_migration.kafka_mirror.groups import move_group
from pyairtable_migration.kafka_mirror.preflight import check
from pyairtable_migration.kafka_mirror.topics import create_topics, describe_topics, ensure_topics
from tests.kafka.kafkalib import (
    GROUP,
    PRODUCTION,
    STAGING,
    TOPIC,
    Brokers,
    EventProducer,
    GroupConsumer,
    group_lag,
    private_brokers,
    total_lag,
    wait_for,
)

RATE = 400  # events/s, steady
LAG_GATE = 200  # events the mirror may be behind before the group moves


def move_consumers(
    brokers: Brokers,
    ledger: KafkaLedger,
    consumer: GroupConsumer,
    source: str,
    target: str,
    uncopied: dict[tuple[str, int], int] | None = None,
) -> tuple[GroupConsumer, list]:
    """Stop the group on `source`, set its translated offsets on `target`, start it there."""
    consumer.stop()
    translations = move_group(
        brokers.bootstrap(source), brokers.bootstrap(target), source, target, GROUP, [TOPIC], 30, uncopied
    )
    moved = GroupConsumer(brokers, ledger, target).__enter__()
    return moved, translations


def move_producers_and_drain(
    brokers: Brokers, producer: EventProducer, state_dir: Path, source: str, target: str
) -> float:
    """The commit point: producers to `target`, then the mirror drains what `source` took before."""
    producer.move_to(target)
    spec = brokers.spec(source, target)
    drained = wait_for(lambda: total_lag(brokers, spec) == 0, 60, f"mirror {source} -> {target} drained")
    assert process.stop(state_dir)
    return drained


@pytest.mark.timeout(480)
def test_topics_and_groups_move_under_load_and_back(tmp_path: Path) -> None:
    ledger = KafkaLedger(tmp_path / "ledger")
    forward_dir, back_dir = tmp_path / "mirror-forward", tmp_path / "mirror-back"
    with private_brokers() as brokers, EventProducer(brokers, ledger, RATE) as producer:
        consumer = GroupConsumer(brokers, ledger, STAGING).__enter__()
        try:
            wait_for(lambda: consumer.processed > 200, 30, "the group processing on staging")
            preflight = check(brokers.staging, brokers.production, [TOPIC], STAGING)
            assert preflight.problems == []
            created, _ = ensure_topics(brokers.staging, brokers.production, [TOPIC], STAGING)
            assert created == [TOPIC]
            assert describe_topics(brokers.production, [TOPIC]) == describe_topics(brokers.staging, [TOPIC])
            process.start(brokers.spec(STAGING, PRODUCTION), forward_dir)
            wait_for(
                lambda: total_lag(brokers, brokers.spec(STAGING, PRODUCTION)) <= LAG_GATE, 60, "lag gate"
            )

            paused_at = time.monotonic()
            consumer, translations = move_consumers(brokers, ledger, consumer, STAGING, PRODUCTION)
            wait_for(
                lambda: consumer.first_processed_at is not None, 30, "the group processing on production"
            )
            pause = (consumer.first_processed_at or 0) - paused_at
            assert all(item.source_offset >= 0 and item.target_offset >= 0 for item in translations)
            move_producers_and_drain(brokers, producer, forward_dir, STAGING, PRODUCTION)
            time.sleep(2)
            forward = check_kafka_ledger(tmp_path / "ledger")
            print(f"forward: group paused {pause:.2f} s; {forward.summary()}")

            # The way back as the rollback DAG takes it: the users (the producers) back on staging first,
            # production's own events mirrored to staging, then the group; staging's new events were
            # never copied (the forward mirror stopped), so the group resumes no later than the first.
            producer.move_to(STAGING)
            time.sleep(1)  # staging takes events nobody has seen
            process.start(brokers.spec(PRODUCTION, STAGING), back_dir)
            wait_for(
                lambda: total_lag(brokers, brokers.spec(PRODUCTION, STAGING)) <= LAG_GATE, 60, "lag gate back"
            )
            uncopied = committed_offsets(brokers.staging, brokers.spec(STAGING, PRODUCTION).group)
            consumer, back = move_consumers(brokers, ledger, consumer, PRODUCTION, STAGING, uncopied)
            spec = brokers.spec(PRODUCTION, STAGING)
            wait_for(lambda: total_lag(brokers, spec) == 0, 60, "reverse mirror drained")
            assert process.stop(back_dir)
            time.sleep(1)
        finally:
            producer.__exit__(None, None, None)
            # A bound for progress, not a timing: on a loaded machine Tansu answers a JoinGroup slowly.
            wait_for(lambda: group_lag(brokers.bootstrap(consumer.cluster)) == 0, 180, "the group caught up")
            consumer.stop()
            process.stop(forward_dir)
            process.stop(back_dir)
    ledger.close()
    report = check_kafka_ledger(tmp_path / "ledger")
    print(f"after the way back: {report.summary()}; {[t.to_dict() for t in back]}")
    assert report.produced >= RATE * 5
    assert report.shared_places == {} and report.lost == [], report.summary()
    # Duplicates only where the group re-reads a copy of what it had processed: bounded by
    # the lag gate (what the mirror may not have copied yet when the group moved), per move.
    assert report.duplicates <= 2 * LAG_GATE + sum(item.redelivered for item in [*translations, *back])
    assert report.by_cluster.get(PRODUCTION, 0) > 0 and report.by_cluster.get(STAGING, 0) > 0


@pytest.mark.timeout(120)
def test_preflight_names_an_incompatible_production_topic() -> None:
    with private_brokers() as brokers:
        create_topics(brokers.production, {TOPIC: (1, {})})
        result = check(brokers.staging, brokers.production, [TOPIC, "missing.topic"], STAGING)
        assert any("missing.topic" in problem for problem in result.problems)
        assert any(TOPIC in problem and "1 partitions" in problem for problem in result.problems)
        with pytest.raises(KafkaMirrorError, match=TOPIC):
            ensure_topics(brokers.staging, brokers.production, [TOPIC], STAGING)
