"""The consumer group's move with its Deployments, as data: who is scaled when, what a second run
does, and that a missing Deployment is named (the Kafka side is tests/kafka/test_kafka_cutover.py,
the whole move on the lab's brokers and emulator tests/e2e)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from pyairtable_migration.kafka_mirror.client import KafkaMirrorError
from pyairtable_migration.kafka_mirror.consumers import (
    REPLICAS_ANNOTATION,
    missing_deployments,
    move_consumers,
)
from pyairtable_migration.kafka_mirror.groups import Translation
from pyairtable_migration.kubernetes.bluegreen import Members

TRANSLATION = Translation("pyairtable.record-events", 0, 40, 52, 3)


class Namespace:
    """Deployments as the hook would read and scale them, with every scale recorded."""

    def __init__(self, namespace: str, deployments: dict[str, Members]) -> None:
        self.namespace = namespace
        self.deployments = deployments
        self.scaled: list[tuple[str, int]] = []

    def members(self, deployment: str) -> Members | None:
        return self.deployments.get(deployment)

    def set_members(self, deployment: str, replicas: int, annotations: Mapping[str, str | None]) -> None:
        merged = {**self.deployments[deployment].annotations, **annotations}
        kept = {key: value for key, value in merged.items() if value is not None}
        self.deployments[deployment] = Members(replicas, kept)
        self.scaled.append((deployment, replicas))


def test_members_stop_then_the_offsets_move_then_they_start_where_the_group_arrives() -> None:
    staging = Namespace("pyairtable-staging", {"automation-worker": Members(3)})
    production = Namespace("pyairtable-production", {"automation-worker": Members(0)})
    seen: list[tuple[int, int]] = []

    def move_offsets() -> list[Translation]:
        # The offsets move while no member runs on either side.
        seen.append(
            (
                staging.deployments["automation-worker"].replicas,
                production.deployments["automation-worker"].replicas,
            )
        )
        return [TRANSLATION]

    moved = move_consumers("automation-service", "automation-worker", staging, production, move_offsets)
    assert seen == [(0, 0)]
    assert (moved.action, moved.replicas) == ("moved", 3)
    assert staging.deployments["automation-worker"] == Members(0, {REPLICAS_ANNOTATION: "3"})
    assert production.deployments["automation-worker"] == Members(3, {})
    assert moved.to_dict()["redelivered"] == 3

    again = move_consumers("automation-service", "automation-worker", staging, production, move_offsets)
    assert again.action == "already moved" and staging.scaled == [("automation-worker", 0)]
    assert production.scaled == [("automation-worker", 3)]

    # The way back: the replicas the group had on staging, read from the annotation it left there.
    back = move_consumers("automation-service", "automation-worker", production, staging, move_offsets)
    assert (back.action, back.replicas) == ("moved", 3)
    assert staging.deployments["automation-worker"] == Members(3, {})


def test_a_move_stopped_after_the_scale_down_is_finished_by_a_second_run() -> None:
    staging = Namespace("pyairtable-staging", {"automation-worker": Members(2)})
    production = Namespace("pyairtable-production", {"automation-worker": Members(0)})

    def group_still_busy() -> list[Translation]:
        raise KafkaMirrorError("group 'automation-service' still has members after 120 s")

    with pytest.raises(KafkaMirrorError):
        move_consumers("automation-service", "automation-worker", staging, production, group_still_busy)
    assert staging.deployments["automation-worker"].replicas == 0  # stopped, not started elsewhere
    moved = move_consumers(
        "automation-service", "automation-worker", staging, production, lambda: [TRANSLATION]
    )
    assert (moved.action, production.deployments["automation-worker"].replicas) == ("moved", 2)


def test_a_missing_deployment_is_named_with_its_group_and_namespace() -> None:
    staging = Namespace("pyairtable-staging", {"automation-worker": Members(1)})
    production = Namespace("pyairtable-production", {})
    problems = missing_deployments({"automation-service": "automation-worker"}, (staging, production))
    assert problems == [
        "consumer group automation-service: Deployment automation-worker missing in namespace "
        "pyairtable-production"
    ]
    with pytest.raises(
        KafkaMirrorError, match="automation-worker missing in namespace pyairtable-production"
    ):
        move_consumers("automation-service", "automation-worker", staging, production, lambda: [])
    assert staging.scaled == []  # refused before anything was scaled
