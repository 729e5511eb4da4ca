"""Kafka on a private pair of brokers: the mirror's throughput staging -> production, and how long a
consumer group stops processing while it moves (stop on staging, translate, set on production,
first event processed there).

Goals: mirror >= 5,000 events/s on this 2-core machine; group pause <= 10 s (the broker answers
a first JoinGroup after half the 6 s session timeout); 0 events lost.

    python -m benchmarks.bench_kafka
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from benchmarks.table import Figure, at_least, at_most, format_table, note

PHASE = "kafka"
EVENTS = 50_000


def figures() -> list[Figure]:
    from confluent_kafka import Message, Producer

    from lab.kafka_ledger import KafkaLedger, check_kafka_ledger
    from pyairtable_migration.kafka_mirror.client import client_config
    from pyairtable_migration.kafka_mirror.groups import move_group
    from pyairtable_migration.kafka_mirror.mirror import Mirror
    from pyairtable_migration.kafka_mirror.topics import ensure_topics
    from tests.kafka.kafkalib import (
        GROUP,
        PRODUCTION,
        STAGING,
        TOPIC,
        GroupConsumer,
        group_lag,
        private_brokers,
        total_lag,
        wait_for,
    )

    ledger_dir = Path(tempfile.mkdtemp(prefix="pyairtable-bench-kafka-"))
    ledger = KafkaLedger(ledger_dir)

    def acknowledged(err: object, message: Message) -> None:
        if err is None:
            ledger.produced((message.value() or b"").decode())

    with private_brokers() as brokers:
        producer = Producer(client_config(brokers.staging, **{"enable.idempotence": True, "linger.ms": 5}))
        for index in range(EVENTS):
            while True:
                try:
                    producer.produce(
                        TOPIC,
                        key=str(index % 17).encode(),
                        value=f"e-{index}".encode(),
                        on_delivery=acknowledged,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(60) == 0
        ensure_topics(brokers.staging, brokers.production, [TOPIC], STAGING)
        spec = brokers.spec(STAGING, PRODUCTION, window=5000)
        stop = threading.Event()
        mirror = threading.Thread(target=lambda: Mirror(spec).run(stop), name="bench-mirror", daemon=True)
        started = time.perf_counter()
        mirror.start()
        wait_for(lambda: total_lag(brokers, spec) == 0, 300, "mirror drained", interval=0.1)
        mirror_seconds = time.perf_counter() - started
        stop.set()
        mirror.join(60)
        note(f"  mirror: {EVENTS:,} events in {mirror_seconds:.1f} s (includes joining its group)")

        with GroupConsumer(brokers, ledger, STAGING) as consumer:
            wait_for(lambda: consumer.processed >= EVENTS // 2, 120, "the group halfway on staging")
            paused_at = time.perf_counter()
        move_group(brokers.staging, brokers.production, STAGING, PRODUCTION, GROUP, [TOPIC], 30)
        moved_at = time.perf_counter()
        with GroupConsumer(brokers, ledger, PRODUCTION) as moved:
            wait_for(lambda: moved.first_processed_at is not None, 60, "the group on production")
            pause = time.perf_counter() - paused_at
            wait_for(lambda: group_lag(brokers.production) == 0, 120, "the group caught up on production")
        note(
            f"  group pause {pause:.2f} s, of which translating and setting offsets "
            f"{moved_at - paused_at:.2f} s"
        )
    ledger.close()
    report = check_kafka_ledger(ledger_dir)
    note(f"  {report.summary()}")
    return [
        at_least(PHASE, f"mirror throughput, {EVENTS:,} events", EVENTS / mirror_seconds, "events/s", 5000),
        at_most(PHASE, "consumer group cutover pause", pause, "s", 10),
        at_most(PHASE, "acknowledged events lost", len(report.lost), "", 0),
        Figure(PHASE, "events processed twice after the move", report.duplicates, ""),
    ]


def main() -> None:
    print(format_table(figures()))


if __name__ == "__main__":
    main()
