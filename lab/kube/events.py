"""A pod's Kafka side, as the platform's services use it: an event published on each acknowledged
user write (`KAFKA_EVENTS_TOPIC`), and consumer-group members (`KAFKA_CONSUMER_GROUP`, the
automation service's workers) that process events; both through the environment's cluster
(`KAFKA_BOOTSTRAP`, from the service Secret).

Both write the Kafka ledger (lab/kafka_ledger.py) under `KAFKA_LEDGER_DIR`: an event is written
there once the broker acknowledged it, before the user's write is answered, and again as processed,
with the cluster (the pod's namespace) it was processed on.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, Producer

from lab.kafka_ledger import KafkaLedger
from pyairtable_migration.kafka_mirror.client import GROUP_TIMEOUTS, client_config

PUBLISH_TIMEOUT_SECONDS = 5.0

_ledgers: dict[Path, KafkaLedger] = {}
_ledgers_lock = threading.Lock()


def shared_ledger(directory: Path) -> KafkaLedger:
    """One ledger per directory in this process: every pod's lines go through one lock."""
    with _ledgers_lock:
        if directory not in _ledgers:
            _ledgers[directory] = KafkaLedger(directory)
        return _ledgers[directory]


def _clock() -> str:
    return dt.datetime.now(dt.UTC).strftime("%H:%M:%S.%f")[:-3]


class EventsUnavailable(Exception):
    """The broker did not acknowledge the event in time."""


@dataclass(frozen=True)
class EventSettings:
    bootstrap: str
    cluster: str
    events_topic: str | None
    consumer_group: str | None
    consumed_topics: tuple[str, ...]
    ledger_dir: Path | None

    @classmethod
    def from_environment(cls, env: Mapping[str, str], cluster: str) -> EventSettings | None:
        """None without `KAFKA_BOOTSTRAP`: such a pod neither publishes nor consumes."""
        bootstrap = env.get("KAFKA_BOOTSTRAP")
        if not bootstrap:
            return None
        ledger = env.get("KAFKA_LEDGER_DIR")
        return cls(
            bootstrap=bootstrap,
            cluster=cluster,
            events_topic=env.get("KAFKA_EVENTS_TOPIC") or None,
            consumer_group=env.get("KAFKA_CONSUMER_GROUP") or None,
            consumed_topics=tuple(t for t in env.get("KAFKA_CONSUMED_TOPICS", "").split(",") if t),
            ledger_dir=Path(ledger) if ledger else None,
        )


class EventPublisher:
    """Publishes one event per call and returns once the broker acknowledged it (idempotent producer)."""

    def __init__(self, settings: EventSettings) -> None:
        assert settings.events_topic is not None
        self.topic = settings.events_topic
        self.ledger = shared_ledger(settings.ledger_dir) if settings.ledger_dir else None
        self.bootstrap = settings.bootstrap
        self.cluster = settings.cluster
        self._producer: Producer | None = None  # made at the first event: most pods publish none
        self._lock = threading.Lock()

    def _connected(self) -> Producer:
        if self._producer is None:
            # An event not acknowledged within the request's wait is never delivered later (the
            # default lets librdkafka retry for 5 minutes): a user told it failed must not find it
            # written, and a late write to a cluster the migration finished draining would be lost.
            timeout_ms = int(PUBLISH_TIMEOUT_SECONDS * 1000)
            self._producer = Producer(
                client_config(
                    self.bootstrap,
                    **{"enable.idempotence": True, "linger.ms": 1, "message.timeout.ms": timeout_ms},
                )
            )
        return self._producer

    def publish(self, key: str) -> str:
        """The event's id, once acknowledged; EventsUnavailable when it was not in time."""
        event_id = uuid.uuid4().hex
        delivered: list[KafkaError | None] = []
        sent = _clock()

        def report(err: KafkaError | None, message: Message) -> None:
            delivered.append(err)
            if err is None and self.ledger is not None:
                place = f"{message.topic()}[{message.partition()}]@{message.offset()}"
                where = f"{self.bootstrap} {place} {self.cluster} sent {sent} acknowledged {_clock()}"
                self.ledger.produced(event_id, where)

        with self._lock:  # one in flight per pod: the delivery report is this call's
            producer = self._connected()
            producer.produce(self.topic, key=key.encode(), value=event_id.encode(), on_delivery=report)
            producer.flush(PUBLISH_TIMEOUT_SECONDS)
        if delivered != [None]:
            raise EventsUnavailable(f"event not acknowledged: {delivered or 'no delivery report in time'}")
        return event_id

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(PUBLISH_TIMEOUT_SECONDS)


class GroupMember:
    """One member of a consumer group: processes each event (a ledger line), then commits."""

    def __init__(self, settings: EventSettings, name: str) -> None:
        assert settings.consumer_group is not None
        self.settings = settings
        self.ledger = shared_ledger(settings.ledger_dir) if settings.ledger_dir else None
        self.processed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"consumer {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        consumer = Consumer(
            client_config(
                self.settings.bootstrap,
                **{
                    "group.id": self.settings.consumer_group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    **GROUP_TIMEOUTS,
                },
            )
        )
        consumer.subscribe(list(self.settings.consumed_topics))
        try:
            while not self._stop.is_set():
                messages = consumer.consume(num_messages=500, timeout=0.2)
                taken = [message for message in messages if message.error() is None]
                for message in taken:
                    if self.ledger is not None:
                        self.ledger.processed((message.value() or b"").decode(), self.settings.cluster)
                    self.processed += 1
                if taken:
                    consumer.commit(asynchronous=False)
        finally:
            consumer.close()  # leaves the group: it is empty once every member closed

    def stop(self) -> None:
        """Leave the group (the member closes its consumer on its own thread: the caller, the
        rollout controller's loop, does not wait for it)."""
        self._stop.set()
