"""Topics on production made like staging's: the same partitions (a partition's copy keeps its
number, so keys stay where their order is kept) and the same configs, and the refusal of a
production topic that cannot take the copy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

from pyairtable_migration.kafka_mirror.client import (
    REQUEST_TIMEOUT_SECONDS,
    KafkaMirrorError,
    admin,
    partitions_of,
    scan,
)

# Configs that describe a broker's own placement, not the topic's contract: never copied.
NOT_COPIED = frozenset(
    {
        "min.insync.replicas",
        "leader.replication.throttled.replicas",
        "follower.replication.throttled.replicas",
    }
)
# Configs whose difference makes a production topic unable to stand in for staging's.
MUST_MATCH = ("cleanup.policy",)
INTERNAL_PREFIX = "__"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str]


def user_topics(bootstrap: str) -> list[str]:
    """Every topic but the broker's internal ones (`__consumer_offsets`, ...)."""
    metadata = admin(bootstrap).list_topics(timeout=REQUEST_TIMEOUT_SECONDS)
    return sorted(name for name in metadata.topics if not name.startswith(INTERNAL_PREFIX))


def describe_topics(bootstrap: str, topics: Iterable[str]) -> dict[str, TopicSpec]:
    """Partitions and explicitly set configs of each topic that exists."""
    counts = partitions_of(bootstrap, topics)
    client = admin(bootstrap)
    specs = {}
    for name, partitions in counts.items():
        resource = ConfigResource(ResourceType.TOPIC, name)
        try:
            entries = client.describe_configs([resource])[resource].result(timeout=REQUEST_TIMEOUT_SECONDS)
        except KafkaException as exc:
            raise KafkaMirrorError(f"describing topic {name!r}: {exc}") from None
        configs = {
            key: str(entry.value)
            for key, entry in entries.items()
            if entry.value is not None
            and not entry.is_sensitive
            and not entry.is_read_only
            and key not in NOT_COPIED
        }
        specs[name] = TopicSpec(name, partitions, configs)
    return specs


def create_topics(bootstrap: str, wanted: Mapping[str, tuple[int, dict[str, str]]]) -> list[str]:
    """Create each missing topic; returns the names created (existing ones are left alone)."""
    existing = partitions_of(bootstrap, wanted)
    missing = [
        NewTopic(name, partitions, 1, config=configs)
        for name, (partitions, configs) in wanted.items()
        if name not in existing
    ]
    if not missing:
        return []
    created = []
    for name, future in (
        admin(bootstrap).create_topics(missing, request_timeout=REQUEST_TIMEOUT_SECONDS).items()
    ):
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent run made it
                raise KafkaMirrorError(f"creating topic {name!r}: {exc}") from None
            continue
        created.append(name)
    return created


def incompatibilities(
    source: Mapping[str, TopicSpec], target: Mapping[str, TopicSpec], target_bootstrap: str, origin: str
) -> list[str]:
    """Why an existing production topic cannot receive staging's copy, one line per topic.

    Partition counts must be equal (no broker here can add partitions, and a different count would
    move keys); configs in MUST_MATCH equal; and the topic must hold nothing but copies from
    `origin` (a topic holding production's own events would mix two histories).
    """
    problems = []
    for name, spec in sorted(source.items()):
        other = target.get(name)
        if other is None:
            continue
        if other.partitions != spec.partitions:
            problems.append(
                f"production topic {name!r} has {other.partitions} partitions, staging's {spec.partitions}: "
                "delete it or rename it"
            )
        for key in MUST_MATCH:
            if key in spec.configs and other.configs.get(key, spec.configs[key]) != spec.configs[key]:
                problems.append(
                    f"production topic {name!r} has {key}={other.configs.get(key)}, "
                    f"staging's {spec.configs[key]}"
                )
        for partition in range(min(other.partitions, spec.partitions)):
            first = next(
                iter(scan(target_bootstrap, name, partition, 0, timeout=REQUEST_TIMEOUT_SECONDS)), None
            )
            if first is not None and (first.origin is None or first.origin[0] != origin):
                problems.append(
                    f"production topic {name!r} partition {partition} holds events not mirrored from "
                    f"{origin} (offset {first.offset}): the copy would mix two histories"
                )
                break
    return problems


def ensure_topics(
    source_bootstrap: str, target_bootstrap: str, topics: Iterable[str], origin: str
) -> tuple[list[str], list[str]]:
    """(created, already there) on the target, after refusing incompatible ones with their names."""
    names = list(topics)
    source = describe_topics(source_bootstrap, names)
    missing = sorted(set(names) - set(source))
    if missing:
        raise KafkaMirrorError(f"topics missing on the source: {', '.join(missing)}")
    target = describe_topics(target_bootstrap, names)
    problems = incompatibilities(source, target, target_bootstrap, origin)
    if problems:
        raise KafkaMirrorError("; ".join(problems))
    created = create_topics(
        target_bootstrap,
        {name: (spec.partitions, spec.configs) for name, spec in source.items() if name not in target},
    )
    return created, sorted(set(names) - set(created))
