"""A consumer group moved with its members: the Deployment whose pods consume is scaled to 0 where
the group leaves, the group's offsets are moved (groups.move_group, which waits until it is empty),
and the same Deployment is scaled up where it arrives, to the replicas it had where it left.

The replicas are kept in an annotation on the Deployment the group left, so a step that failed
half-way and is cleared (or the way back) knows how many members to start; every stage reads the
state first, so running it again changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from pyairtable_migration.kafka_mirror.client import KafkaMirrorError
from pyairtable_migration.kafka_mirror.groups import Translation
from pyairtable_migration.kubernetes.bluegreen import Members

REPLICAS_ANNOTATION = "migration.pyairtable.io/consumer-replicas"


class ConsumerDeployments(Protocol):
    """One namespace's Deployments, as the group move reads and scales them."""

    namespace: str

    def members(self, deployment: str) -> Members | None:
        """The Deployment's replicas and annotations; None when it does not exist."""

    def set_members(self, deployment: str, replicas: int, annotations: Mapping[str, str | None]) -> None:
        """Set its replicas and annotations (None removes one)."""


@dataclass(frozen=True)
class ConsumersMoved:
    group: str
    deployment: str
    replicas: int
    translations: list[Translation]
    # What was done: "moved", or "already moved" (the group's members run where it arrives).
    action: str

    def to_dict(self) -> dict[str, object]:
        return {
            "deployment": self.deployment,
            "replicas": self.replicas,
            "action": self.action,
            "partitions": len(self.translations),
            "redelivered": sum(item.redelivered for item in self.translations),
        }


def missing_deployments(consumers: Mapping[str, str], sides: tuple[ConsumerDeployments, ...]) -> list[str]:
    """One problem per consumer Deployment that one side lacks, naming the group and the namespace."""
    return [
        f"consumer group {group}: Deployment {deployment} missing in namespace {side.namespace}"
        for group, deployment in sorted(consumers.items())
        for side in sides
        if side.members(deployment) is None
    ]


def move_consumers(
    group: str,
    deployment: str,
    leaving: ConsumerDeployments,
    arriving: ConsumerDeployments,
    move_offsets: Callable[[], list[Translation]],
) -> ConsumersMoved:
    """Stop the group's members where it leaves, move its offsets, start them where it arrives."""
    left, there = leaving.members(deployment), arriving.members(deployment)
    for side, members in ((leaving, left), (arriving, there)):
        if members is None:
            raise KafkaMirrorError(
                f"consumer group {group}: Deployment {deployment} missing in namespace {side.namespace}"
            )
    assert left is not None and there is not None
    if left.replicas == 0 and there.replicas > 0:
        return ConsumersMoved(group, deployment, there.replicas, move_offsets(), "already moved")
    replicas = left.replicas or int(left.annotations.get(REPLICAS_ANNOTATION, "0") or 0)
    if left.replicas:
        leaving.set_members(deployment, 0, {REPLICAS_ANNOTATION: str(left.replicas)})
    translations = move_offsets()  # waits until the members where it leaves are gone
    if replicas:
        arriving.set_members(deployment, replicas, {REPLICAS_ANNOTATION: None})
    return ConsumersMoved(group, deployment, replicas, translations, "moved")
