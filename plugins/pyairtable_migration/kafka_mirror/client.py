"""The client settings every part of the engine shares, the headers a mirrored copy carries, and
the reads the broker answers reliably: the end of a partition from a fetch, committed offsets,
and a group's state."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

# A copy's origin: the label of the cluster it was mirrored from and its offset there (the
# partition is the same on both sides). These headers are the mirror's offset map.
ORIGIN_HEADER = "pyairtable.mirror.origin"
OFFSET_HEADER = "pyairtable.mirror.offset"
# Consumer settings for brokers that answer the first JoinGroup after half the session timeout.
GROUP_TIMEOUTS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
REQUEST_TIMEOUT_SECONDS = 10.0
# librdkafka's own messages (a broker that went away, a retry) go to logging, not to stderr.
LOG = logging.getLogger("pyairtable_migration.kafka_mirror")

Partition = tuple[str, int]


class KafkaMirrorError(Exception):
    """A problem the migration reports as it is (a retry may or may not help)."""


def client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """Settings for any client; `bootstrap` is `host:port[,host:port]`."""
    return {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000, "logger": LOG, **extra}


@functools.cache
def admin(bootstrap: str) -> AdminClient:
    """One admin client per cluster for the process: kept, so its pending requests outlive a call
    (a client collected while a request is in flight fails it), and connected once."""
    return AdminClient(client_config(bootstrap))


def reader(bootstrap: str, **extra: Any) -> Consumer:
    """A consumer outside any group (assign only), for reading ends and scanning copies."""
    return Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": "pyairtable-migration-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
                **extra,
            },
        )
    )


def origin_of(headers: Any) -> tuple[str, int] | None:
    """(cluster label, offset) of a mirrored copy; None for an event produced where it is."""
    found = dict(headers or ())
    label, offset = found.get(ORIGIN_HEADER), found.get(OFFSET_HEADER)
    if label is None or offset is None:
        return None
    return (label.decode() if isinstance(label, bytes) else str(label)), int(offset)


def position(message: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message (always set on one without error)."""
    return str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)


def partitions_of(bootstrap: str, topics: Iterable[str]) -> dict[str, int]:
    """topic -> partition count, for the topics that exist."""
    metadata = admin(bootstrap).list_topics(timeout=REQUEST_TIMEOUT_SECONDS)
    return {
        name: len(metadata.topics[name].partitions)
        for name in topics
        if name in metadata.topics and metadata.topics[name].error is None
    }


@dataclass(frozen=True)
class Record:
    offset: int
    origin: tuple[str, int] | None
    key: bytes | None
    value: bytes | None


def scan(
    bootstrap: str,
    topic: str,
    partition: int,
    start: int = 0,
    timeout: float = 60.0,
    end: int | None = None,
) -> Iterator[Record]:
    """Every record of one partition from `start` to `end` (an offset read before), or without one
    to its end as a fetch reports it: a partition producers still write may never report its end
    to a reader that keeps finding new records, so a scan of a live partition gives `end`."""
    if end is not None and start >= end:
        return
    consumer = reader(bootstrap)
    try:
        consumer.assign([TopicPartition(topic, partition, max(0, start))])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=5000, timeout=0.5):
                error = message.error()
                if error is None:
                    offset = position(message)[2]
                    if end is not None and offset >= end:
                        return
                    yield Record(offset, origin_of(message.headers()), message.key(), message.value())
                    if end is not None and offset + 1 >= end:
                        return
                elif error.code() == KafkaError._PARTITION_EOF:
                    # An end reported short of `end` (read before, so those records exist) is a
                    # broker's stale high watermark: reading on, never a record left out.
                    if end is None or position(message)[2] >= end:
                        return
                elif not error.retriable():
                    raise KafkaMirrorError(f"reading {topic}[{partition}]: {error.str()}")
        raise KafkaMirrorError(f"reading {topic}[{partition}] did not reach its end within {timeout:.0f} s")
    finally:
        consumer.close()


def end_offsets(
    bootstrap: str, partitions: Iterable[Partition], near: Mapping[Partition, int] | None = None
) -> dict[Partition, int]:
    """The next offset of each partition, read from a fetch: its end-of-partition event, or the
    high watermark a fetch that returned records reported (a partition producers keep writing
    may never report its end to a reader that keeps finding records).

    ListOffsets "latest" is not trusted (a broker may answer short of the end); it only picks
    where to start reading, and `near` (offsets known to exist, e.g. a committed position) does too.
    """
    wanted = list(partitions)
    if not wanted:
        return {}
    consumer = reader(bootstrap)
    try:
        starts = []
        for topic, partition in wanted:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=REQUEST_TIMEOUT_SECONDS, cached=False
            )
            start = max(low, high - 1, (near or {}).get((topic, partition), 0), 0)
            starts.append(TopicPartition(topic, partition, start))
        consumer.assign(starts)
        ends: dict[Partition, int] = {}
        deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
        while len(ends) < len(wanted):
            if time.monotonic() > deadline:
                missing = sorted(set(wanted) - set(ends))
                raise KafkaMirrorError(
                    f"no end of partition reported within {REQUEST_TIMEOUT_SECONDS:.0f} s: {missing}"
                )
            for message in consumer.consume(num_messages=5000, timeout=0.2):
                error = message.error()
                if error is None:
                    topic_name, partition_number, offset = position(message)
                    fetched = TopicPartition(topic_name, partition_number)
                    high = consumer.get_watermark_offsets(fetched, cached=True)[1]
                    ends.setdefault((topic_name, partition_number), max(high, offset + 1))
                elif error.code() == KafkaError._PARTITION_EOF:
                    topic_name, partition_number, end = position(message)
                    ends.setdefault((topic_name, partition_number), end)
                elif not error.retriable():
                    raise KafkaMirrorError(f"reading the end of {message.topic()}: {error.str()}")
        return ends
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str) -> dict[Partition, int]:
    """The group's committed offsets (partitions it never committed are absent)."""
    request = [ConsumerGroupTopicPartitions(group)]
    try:
        result = admin(bootstrap).list_consumer_group_offsets(request)[group].result()
    except KafkaException as exc:
        raise KafkaMirrorError(f"reading group {group!r}'s offsets: {exc}") from None
    return {
        (item.topic, item.partition): item.offset
        for item in result.topic_partitions or []
        if item.offset >= 0 and item.error is None
    }


def group_state(bootstrap: str, group: str) -> str:
    """The group's state name (EMPTY, STABLE, PREPARING_REBALANCE, ...); EMPTY for an unknown group."""
    try:
        described = admin(bootstrap).describe_consumer_groups([group])[group].result()
    except KafkaException as exc:
        raise KafkaMirrorError(f"describing group {group!r}: {exc}") from None
    return str(described.state.name)


def group_is_empty(bootstrap: str, group: str) -> bool:
    return group_state(bootstrap, group) in ("EMPTY", "DEAD", "UNKNOWN")
