"""Kafka's preflight: both clusters answer, the topics exist on staging, production has none that
cannot take their copy (named), and ACLs where the broker reports them. Nothing is changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from pyairtable_migration.kafka_mirror.client import REQUEST_TIMEOUT_SECONDS, KafkaMirrorError, admin
from pyairtable_migration.kafka_mirror.topics import describe_topics, incompatibilities, user_topics


@dataclass
class KafkaPreflight:
    problems: list[str] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)


def acl_count(bootstrap: str) -> int | None:
    """How many ACL bindings the cluster has; None when the broker does not report ACLs."""
    # None matches any resource name, principal and host.
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    try:
        return len(
            admin(bootstrap).describe_acls(everything, request_timeout=REQUEST_TIMEOUT_SECONDS).result()
        )
    except KafkaException:
        return None


def check(
    source_bootstrap: str, target_bootstrap: str, topics: Sequence[str], source_label: str
) -> KafkaPreflight:
    """Every problem at once; `topics` empty means every user topic on the source."""
    result = KafkaPreflight()
    reachable = {}
    for side, bootstrap in (("staging", source_bootstrap), ("production", target_bootstrap)):
        try:
            reachable[side] = user_topics(bootstrap)
        except (KafkaException, KafkaMirrorError) as exc:
            result.problems.append(f"{side} Kafka at {bootstrap} does not answer: {exc}")
    if len(reachable) < 2:
        return result
    wanted = list(topics) or reachable["staging"]
    missing = sorted(set(wanted) - set(reachable["staging"]))
    if missing:
        result.problems.append(f"topics missing on staging: {', '.join(missing)}")
    source = describe_topics(source_bootstrap, wanted)
    target = describe_topics(target_bootstrap, wanted)
    result.problems += incompatibilities(source, target, target_bootstrap, source_label)
    result.facts = {
        "topics": {name: spec.partitions for name, spec in sorted(source.items())},
        "already_on_production": sorted(target),
        "acls": {
            side: acl_count(bootstrap)
            for side, bootstrap in (("staging", source_bootstrap), ("production", target_bootstrap))
        },
    }
    return result
