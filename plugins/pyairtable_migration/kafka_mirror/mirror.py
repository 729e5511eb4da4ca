"""The mirror: copies every event of the given topics from a source cluster to a target, partition
for partition, and commits a source offset (in its own consumer group on the source) only after
the target acknowledged the copy of every event before it.

So a mirror killed at any moment resumes from its committed offsets and loses nothing; what it
copies twice is bounded by what was acknowledged but not yet committed: at most `window` events
in flight plus one commit interval. Each copy carries its origin in headers (client.ORIGIN_HEADER),
and a copy whose origin is the target is skipped, so the way back never sends an event home twice.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from pyairtable_migration.kafka_mirror.client import (
    GROUP_TIMEOUTS,
    OFFSET_HEADER,
    ORIGIN_HEADER,
    KafkaMirrorError,
    Partition,
    client_config,
    origin_of,
    position,
)

DEFAULT_WINDOW = 5_000
DEFAULT_COMMIT_INTERVAL_SECONDS = 0.2


@dataclass(frozen=True)
class MirrorSpec:
    """Everything a mirror needs: clusters, their labels, topics and the mirror's group name."""

    source_bootstrap: str
    target_bootstrap: str
    source_label: str
    target_label: str
    topics: tuple[str, ...]
    group: str
    window: int = DEFAULT_WINDOW
    commit_interval_seconds: float = DEFAULT_COMMIT_INTERVAL_SECONDS

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "topics": list(self.topics)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MirrorSpec:
        return cls(**{**data, "topics": tuple(data["topics"])})


@dataclass
class MirrorStats:
    copied: int = 0
    skipped: int = 0
    committed: dict[Partition, int] = field(default_factory=dict)
    # The offset map as delivery reports gave it: the last (source offset, target offset) per partition.
    last_copy: dict[Partition, tuple[int, int]] = field(default_factory=dict)


class _Pending:
    """One partition's events in source order: committable up to the first one not yet acknowledged."""

    def __init__(self) -> None:
        self.entries: deque[list[Any]] = deque()  # [source offset, done]

    def add(self, offset: int, done: bool) -> list[Any]:
        entry = [offset, done]
        self.entries.append(entry)
        return entry

    def committable(self) -> int | None:
        """The offset to commit (one past the last acknowledged run), or None if nothing new."""
        position = None
        while self.entries and self.entries[0][1]:
            position = self.entries.popleft()[0] + 1
        return position


class Mirror:
    """One mirror worker. `run(stop)` copies until `stop` is set, then flushes and commits."""

    def __init__(self, spec: MirrorSpec, log: Callable[[str], None] = lambda _line: None) -> None:
        self.spec = spec
        self.log = log
        self.stats = MirrorStats()
        self._pending: dict[Partition, _Pending] = {}
        self._in_flight = 0
        self._failure: str | None = None
        self._lock = threading.Lock()

    def _consumer(self) -> Consumer:
        consumer = Consumer(
            client_config(
                self.spec.source_bootstrap,
                **{
                    "group.id": self.spec.group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 20,
                    **GROUP_TIMEOUTS,
                },
            )
        )
        consumer.subscribe(list(self.spec.topics), on_revoke=self._on_revoke)
        return consumer

    def _producer(self) -> Producer:
        return Producer(
            client_config(
                self.spec.target_bootstrap,
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "queue.buffering.max.messages": max(self.spec.window * 2, 1000),
                },
            )
        )

    def run(self, stop: threading.Event) -> MirrorStats:
        """Copy until `stop` is set; raises KafkaMirrorError if a copy cannot be delivered."""
        self._producer_client = self._producer()
        self._consumer_client = self._consumer()
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                if self._in_flight >= self.spec.window:
                    self._producer_client.poll(0.05)
                else:
                    for message in self._consumer_client.consume(num_messages=500, timeout=0.05):
                        self._copy(message)
                    self._producer_client.poll(0)
                self._raise_failure()
                if time.monotonic() - last_commit >= self.spec.commit_interval_seconds:
                    self._commit()
                    last_commit = time.monotonic()
            self._drain_and_commit()
        finally:
            self._consumer_client.close()
        return self.stats

    def _copy(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF or error.retriable():
                return
            raise KafkaMirrorError(f"reading {message.topic()} on the source: {error.str()}")
        topic, partition, offset = position(message)
        key: Partition = (topic, partition)
        pending = self._pending.setdefault(key, _Pending())
        origin = origin_of(message.headers())
        if origin is not None and origin[0] == self.spec.target_label:
            pending.add(offset, True)  # it came from the target: it is there already
            self.stats.skipped += 1
            return
        entry = pending.add(offset, False)
        headers: list[tuple[str, str | bytes | None]] = [
            (name, value)
            for name, value in dict(message.headers() or ()).items()
            if name not in (ORIGIN_HEADER, OFFSET_HEADER)
        ]
        headers += [(ORIGIN_HEADER, self.spec.source_label.encode()), (OFFSET_HEADER, str(offset).encode())]

        def delivered(err: KafkaError | None, copy: Message) -> None:
            with self._lock:
                self._in_flight -= 1
                if err is not None:
                    self._failure = f"copy of {key[0]}[{key[1]}]@{offset} not acknowledged: {err.str()}"
                    return
                entry[1] = True
                self.stats.copied += 1
                self.stats.last_copy[key] = (offset, position(copy)[2])

        while True:
            try:
                self._producer_client.produce(
                    key[0],
                    value=message.value(),
                    key=message.key(),
                    partition=key[1],
                    headers=headers,
                    timestamp=max(0, message.timestamp()[1]),
                    on_delivery=delivered,
                )
                break
            except BufferError:
                self._producer_client.poll(0.05)
        with self._lock:
            self._in_flight += 1

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise KafkaMirrorError(self._failure)

    def _commit(self) -> None:
        """Commit each partition up to its acknowledged prefix (synchronously: this is the promise)."""
        offsets = []
        with self._lock:
            for (topic, partition), pending in self._pending.items():
                position = pending.committable()
                if position is not None:
                    offsets.append(TopicPartition(topic, partition, position))
        if offsets:
            self._consumer_client.commit(offsets=offsets, asynchronous=False)
            for item in offsets:
                self.stats.committed[(item.topic, item.partition)] = item.offset

    def _drain_and_commit(self, timeout: float = 30.0) -> None:
        remaining = self._producer_client.flush(timeout)
        self._raise_failure()
        if remaining:
            raise KafkaMirrorError(f"{remaining} copies still unacknowledged after {timeout:.0f} s")
        self._commit()

    def _on_revoke(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        """Before giving partitions up: deliver what is in flight and commit it, then forget them.

        After a failed copy nothing more is committed: the next owner starts from the last commit."""
        if self._failure is None:
            self._drain_and_commit()
        for item in partitions:
            self._pending.pop((item.topic, item.partition), None)
