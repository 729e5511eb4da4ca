"""Two real Kafka-protocol brokers on free ports, and the platform's Kafka clients in miniature:
producers whose endpoint moves at the commit point, and a consumer group that processes every
event at least once. Both write the Kafka ledger (lab/kafka_ledger.py)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer

from lab.kafka_lab import AUTOMATION_GROUP, RECORD_EVENTS_TOPIC, KafkaBroker
from lab.kafka_ledger import KafkaLedger
from lab.settings import LabSettings
from lab.supervisor import down, start_component
from pyairtable_migration.kafka_mirror.client import (
    GROUP_TIMEOUTS,
    client_config,
    committed_offsets,
    end_offsets,
    partitions_of,
)
from pyairtable_migration.kafka_mirror.groups import mirror_progress
from pyairtable_migration.kafka_mirror.mirror import MirrorSpec
from tests.watchdog import helper_thread

TOPIC = RECORD_EVENTS_TOPIC
GROUP = AUTOMATION_GROUP
STAGING, PRODUCTION = "staging", "production"


@dataclass(frozen=True)
class Brokers:
    settings: LabSettings
    staging: str
    production: str

    def bootstrap(self, cluster: str) -> str:
        return self.staging if cluster == STAGING else self.production

    def spec(self, source: str, target: str, window: int = 1000) -> MirrorSpec:
        return MirrorSpec(
            source_bootstrap=self.bootstrap(source),
            target_bootstrap=self.bootstrap(target),
            source_label=source,
            target_label=target,
            topics=(TOPIC,),
            group=f"pyairtable-mirror-to-{target}",
            window=window,
        )


@contextlib.contextmanager
def private_brokers() -> Iterator[Brokers]:
    """Both brokers of a throwaway lab (staging's topics seeded); stopped and purged after."""
    settings = LabSettings.throwaway("pyairtable-kafka-lab-")
    try:
        for name in ("kafka-staging", "kafka-production"):
            start_component(name, settings)
        yield Brokers(
            settings,
            KafkaBroker("staging").bootstrap(settings),
            KafkaBroker("production").bootstrap(settings),
        )
    finally:
        down(settings, purge=True)


class EventProducer:
    """Produces numbered events at `rate`/s to the current endpoint; records each acknowledged one.

    `move_to(cluster)` is the commit point: new events go to the new endpoint; the old producer is
    flushed first, as a rolling restart would, so its in-flight events are acknowledged or failed.
    """

    def __init__(self, brokers: Brokers, ledger: KafkaLedger, rate: float, cluster: str = STAGING) -> None:
        self.brokers, self.ledger, self.rate = brokers, ledger, rate
        self.cluster = cluster
        self.sent = 0
        self.acknowledged = 0
        self.failed = 0
        self._stop = threading.Event()
        self._move: str | None = None
        self._moved = threading.Event()
        self._thread: threading.Thread | None = None

    def _producer(self) -> Producer:
        return Producer(
            client_config(
                self.brokers.bootstrap(self.cluster), **{"enable.idempotence": True, "linger.ms": 2}
            )
        )

    def _delivered(self, err: KafkaError | None, message: object) -> None:
        if err is not None:
            self.failed += 1
            return
        self.acknowledged += 1
        # The cluster it went to (the producer flushes before it moves, so this is still the one).
        place = f"{message.topic()}[{message.partition()}]@{message.offset()}"  # type: ignore[attr-defined]
        where = f"{self.brokers.bootstrap(self.cluster)} {place}"
        self.ledger.produced(message.value().decode(), where)  # type: ignore[attr-defined]

    def _run(self) -> None:
        producer = self._producer()
        started = time.monotonic()
        while not self._stop.is_set():
            if self._move is not None:
                assert producer.flush(30) == 0, "events unacknowledged at the move"
                self.cluster, self._move = self._move, None
                producer = self._producer()
                self._moved.set()
            due = int((time.monotonic() - started) * self.rate)
            while self.sent < due:
                producer.produce(
                    TOPIC,
                    key=str(self.sent % 17).encode(),
                    value=f"e-{self.sent}".encode(),
                    on_delivery=self._delivered,
                )
                self.sent += 1
            producer.poll(0.005)
        assert producer.flush(30) == 0, "events unacknowledged at the end"

    def __enter__(self) -> EventProducer:
        self._thread = helper_thread(self._run, "kafka-producer")
        return self

    def move_to(self, cluster: str) -> None:
        self._moved.clear()
        self._move = cluster
        assert self._moved.wait(30), "producer did not move"

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)


class GroupConsumer:
    """One member of the automation service's group on one cluster: processes, then commits."""

    def __init__(self, brokers: Brokers, ledger: KafkaLedger, cluster: str) -> None:
        self.brokers, self.ledger, self.cluster = brokers, ledger, cluster
        self.processed = 0
        self.first_processed_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        consumer = Consumer(
            client_config(
                self.brokers.bootstrap(self.cluster),
                **{
                    "group.id": GROUP,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    **GROUP_TIMEOUTS,
                },
            )
        )
        consumer.subscribe([TOPIC])
        try:
            while not self._stop.is_set():
                messages = consumer.consume(num_messages=500, timeout=0.1)
                done = False
                for message in messages:
                    if message.error() is None:
                        self.ledger.processed((message.value() or b"").decode(), self.cluster)
                        self.processed += 1
                        done = True
                if done:
                    if self.first_processed_at is None:
                        self.first_processed_at = time.monotonic()
                    consumer.commit(asynchronous=False)
        finally:
            consumer.close()  # leaves the group: it is empty once every member closed

    def __enter__(self) -> GroupConsumer:
        self._thread = helper_thread(self._run, f"kafka-consumer-{self.cluster}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def wait_for(condition: object, timeout: float, what: str, interval: float = 0.2) -> float:
    """Seconds until `condition()` is true; fails the test after `timeout`."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout:.0f} s"
        time.sleep(interval)
    return time.monotonic() - started


def group_lag(bootstrap: str) -> int:
    """Events of the topic the automation group has not committed yet on one cluster."""
    partitions = [(TOPIC, index) for index in range(partitions_of(bootstrap, [TOPIC])[TOPIC])]
    committed = committed_offsets(bootstrap, GROUP)
    ends = end_offsets(bootstrap, partitions, near=committed)
    return sum(ends[key] - committed.get(key, 0) for key in partitions)


def total_lag(brokers: Brokers, spec: MirrorSpec) -> int:
    return mirror_progress(spec.source_bootstrap, spec.group, spec.topics).total


def ledger_dir(tmp: Path) -> Path:
    return tmp / "kafka-ledger"
