"""Kafka's steps: preflight, topics on the target, the mirror (start, lag gate or drain, stop) and
the consumer groups' move. The same operators run the way back with source and target swapped.

Each reads state first and changes only what differs; the domain logic is in kafka_mirror/.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from pyairtable_migration.kafka_mirror import process
from pyairtable_migration.kafka_mirror.client import KafkaMirrorError, Partition, committed_offsets
from pyairtable_migration.kafka_mirror.connection import bootstrap_of
from pyairtable_migration.kafka_mirror.consumers import (
    ConsumerDeployments,
    ConsumersMoved,
    missing_deployments,
    move_consumers,
)
from pyairtable_migration.kafka_mirror.groups import (
    CONSECUTIVE_SAMPLES,
    LagWatch,
    mirror_progress,
    move_group,
)
from pyairtable_migration.kafka_mirror.mirror import MirrorSpec
from pyairtable_migration.kafka_mirror.preflight import check
from pyairtable_migration.kafka_mirror.topics import ensure_topics
from pyairtable_migration.kubernetes.bluegreen import Members
from pyairtable_migration.operators.base import MigrationOperator, bulleted, fail
from pyairtable_migration.triggers.kafka_mirror import KafkaMirrorLagTrigger

if TYPE_CHECKING:
    from pyairtable_migration.hooks.bluegreen import BlueGreenHook


class KafkaOperator(MigrationOperator):
    """Base: two clusters by connection id, labelled (the labels mark where a copy came from).

    :param source_conn_id / target_conn_id: connections whose host:port (or extra
        `bootstrap_servers`) reach the source and target clusters
    :param source_label / target_label: the clusters' names in the copies' headers
    :param topics: the topics that move
    """

    template_fields: Sequence[str] = ("source_conn_id", "target_conn_id", "topics")
    ui_color = "#f3e1c6"

    source_conn_id: str
    target_conn_id: str
    topics: Sequence[str]
    source_label: str = "staging"
    target_label: str = "production"

    def bootstraps(self) -> tuple[str, str]:
        return bootstrap_of(self.source_conn_id), bootstrap_of(self.target_conn_id)


class KafkaConsumersOperator(KafkaOperator):
    """Base of the steps that read or scale the consumer groups' Deployments on both sides.

    :param consumers: consumer group -> the Deployment whose pods are its members (the same name in
        both namespaces)
    :param source_namespace / target_namespace: where the source's and the target's consumers run
    :param source_kubernetes_conn_id / target_kubernetes_conn_id: the `kubernetes` connections to them
    :param wait_seconds: how long a group may take to empty once its Deployment is scaled to 0
    """

    template_fields: Sequence[str] = (*KafkaOperator.template_fields, "consumers")

    consumers: Mapping[str, str]
    source_namespace: str
    target_namespace: str
    source_kubernetes_conn_id: str
    target_kubernetes_conn_id: str
    wait_seconds: float = 120.0

    def deployments(self) -> tuple[BlueGreenHook, BlueGreenHook]:
        from pyairtable_migration.hooks.bluegreen import BlueGreenHook

        return (
            BlueGreenHook(self.source_kubernetes_conn_id, self.source_namespace),
            BlueGreenHook(self.target_kubernetes_conn_id, self.target_namespace),
        )


class KafkaPreflightOperator(KafkaConsumersOperator):
    """Both clusters answer, the topics exist on the source, the target has none that cannot take
    their copy, and every consumer group's Deployment exists on both sides; fails once with every
    problem. Changes nothing; in plan mode it only says what it would read."""

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"check the topics {self.topics} on {self.source_conn_id} and {self.target_conn_id}, and the "
            f"consumer Deployments {sorted(set(self.consumers.values()))} in {self.source_namespace} "
            f"and {self.target_namespace}",
        ):
            return {"mode": "plan"}
        result = check(*self.bootstraps(), self.topics, self.source_label)
        problems = [*result.problems, *missing_deployments(self.consumers, self.deployments())]
        if problems:
            raise fail(bulleted(f"{self.task_id}: Kafka is not ready to move", problems))
        self.log.info("Kafka preflight passed: %s; consumer Deployments %s", result.facts, self.consumers)
        return result.facts


class KafkaTopicsOperator(KafkaOperator):
    """Creates on the target each topic it lacks, with the source's partitions and configs."""

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(context, f"create on {self.target_conn_id} the topics it lacks of {self.topics}"):
            return {"mode": "plan"}
        try:
            created, present = ensure_topics(*self.bootstraps(), self.topics, self.source_label)
        except KafkaMirrorError as exc:
            raise fail(f"{self.task_id}: {exc}") from None
        self.log.info("Topics created: %s; already there: %s", created or "none", present or "none")
        return {"created": created, "present": present}


class KafkaMirrorOperator(KafkaOperator):
    """Base of the mirror's steps: its consumer group on the source and where its process keeps state.

    :param mirror_group: the mirror's consumer group on the source (its committed offsets are its progress)
    :param state_dir: where the mirror process keeps its pid, spec and log
    """

    template_fields: Sequence[str] = (*KafkaOperator.template_fields, "mirror_group", "state_dir")

    mirror_group: str
    state_dir: str


class StartKafkaMirrorOperator(KafkaMirrorOperator):
    """Starts the mirror unless it runs; a started mirror resumes from its committed offsets.

    :param window: events in flight at most (also the bound on copies made twice after a crash)
    """

    window: int = 5000

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context, f"start the mirror {self.source_label} -> {self.target_label} of {self.topics}"
        ):
            return {"mode": "plan"}
        source, target = self.bootstraps()
        spec = MirrorSpec(
            source,
            target,
            self.source_label,
            self.target_label,
            tuple(self.topics),
            self.mirror_group,
            self.window,
        )
        try:
            pid, started = process.start(spec, Path(self.state_dir))
        except KafkaMirrorError as exc:
            raise fail(f"{self.task_id}: {exc}") from None
        self.log.info("Mirror %s (pid %d)", "started" if started else "already running", pid)
        return {"pid": pid, "started": started}


class KafkaMirrorLagOperator(KafkaMirrorOperator):
    """The lag gate (max_lag > 0, before the groups move) or the drain (max_lag 0 and
    `quiet_seconds`, after the producers moved): waits on the triggerer, with a timeout."""

    template_fields: Sequence[str] = (*KafkaMirrorOperator.template_fields, "max_lag")

    max_lag: int
    consecutive_samples: int = CONSECUTIVE_SAMPLES
    sample_seconds: float = 1.0
    timeout_seconds: float = 600.0
    quiet_seconds: float = 0.0

    def execute(self, context: Context) -> None:
        quiet = (
            f" and the source took no new event for {self.quiet_seconds:g} s" if self.quiet_seconds else ""
        )
        if self.planned(context, f"wait until the mirror lags <= {self.max_lag} events{quiet}"):
            return
        self.defer_to(
            KafkaMirrorLagTrigger(
                source_conn_id=self.source_conn_id,
                mirror_group=self.mirror_group,
                topics=list(self.topics),
                max_lag=int(self.max_lag),
                consecutive_samples=self.consecutive_samples,
                sample_seconds=self.sample_seconds,
                timeout_seconds=self.timeout_seconds,
                quiet_seconds=float(self.quiet_seconds),
            ),
            self.timeout_seconds,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.raise_on_failure(event, self.task_id)
        self.log.info("%s", event.get("message"))
        return {"lag": event.get("lag"), "seconds": event.get("seconds")}


class StopKafkaMirrorOperator(KafkaMirrorOperator):
    """Stops the mirror (it flushes and commits first); run after the drain. Nothing to stop is fine."""

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(context, f"stop the mirror {self.source_label} -> {self.target_label}"):
            return {"mode": "plan"}
        stopped = process.stop(Path(self.state_dir))
        self.log.info("Mirror %s", "stopped" if stopped else "was not running")
        return {"stopped": stopped}


class MoveKafkaConsumerGroupsOperator(KafkaConsumersOperator):
    """Moves each consumer group with its members (kafka_mirror/consumers.py): its Deployment scaled
    to 0 on the source side, its committed offsets translated through the copies' origin headers and
    set on the target once the group is empty, the Deployment scaled up on the target side.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"move consumer groups {sorted(self.consumers)} with their Deployments from "
            f"{self.source_namespace} to {self.target_namespace}, at translated offsets",
        ):
            return {"mode": "plan"}
        moved: dict[str, Any] = {}
        for group, deployment in sorted(self.consumers.items()):
            try:
                result = move_consumers_between(self, group, deployment, reverse=False)
            except KafkaMirrorError as exc:
                raise fail(f"{self.task_id}: {exc}") from None
            moved[group] = result.to_dict()
        return moved


class KafkaRollbackOperator(KafkaConsumersOperator):
    """The way back (run after every user is on staging again): if the groups run on the target,
    the target's events are mirrored back (the reverse mirror, to the lag gate), the groups move back
    with their members; then the forward mirror stops, the reverse mirror drains (lag 0: the target
    took nothing new for `quiet_seconds`: a client still holding an old DNS answer writes there
    meanwhile) and stops. Nothing to undo: each stage reads the state first and is a no-op; a drain
    that times out leaves the reverse mirror running, and a clear drains it again.

    :param forward_state_dir / reverse_state_dir: the two mirrors' process state
    :param mirror_group / reverse_mirror_group: the forward mirror's group on the source (where it
        stopped copying bounds where the groups resume: staging's producers kept writing after the
        groups left it), the reverse mirror's on the target
    """

    template_fields: Sequence[str] = (
        *KafkaConsumersOperator.template_fields,
        "forward_state_dir",
        "reverse_state_dir",
    )

    forward_state_dir: str
    reverse_state_dir: str
    mirror_group: str
    reverse_mirror_group: str
    window: int
    max_lag: int
    lag_timeout_seconds: float
    quiet_seconds: float = 0.0

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"move consumer groups {sorted(self.consumers)} back to {self.source_namespace} if they "
            f"run in {self.target_namespace} (the target's events mirrored back first), "
            "then stop both mirrors",
        ):
            return {"mode": "plan"}
        source, target = self.bootstraps()
        on_target = groups_on(self.deployments()[1], self.consumers)
        reverse = MirrorSpec(
            target,
            source,
            self.target_label,
            self.source_label,
            tuple(self.topics),
            self.reverse_mirror_group,
            self.window,
        )
        moved: dict[str, Any] = {}
        try:
            if on_target:
                pid, _ = process.start(reverse, Path(self.reverse_state_dir))
                self.log.info(
                    "Reverse mirror %s -> %s running (pid %d)", self.target_label, self.source_label, pid
                )
                self.wait_for(reverse, LagWatch(self.max_lag, 1), "the reverse mirror's lag gate")
                uncopied = committed_offsets(source, self.mirror_group)
                for group in on_target:
                    result = move_consumers_between(
                        self, group, self.consumers[group], reverse=True, uncopied=uncopied
                    )
                    moved[group] = result.to_dict()
            # No group reads production any more: the forward mirror's copies would only keep the
            # reverse mirror busy skipping them, so it stops first.
            stopped = {"forward": process.stop(Path(self.forward_state_dir))}
            if process.running_pid(Path(self.reverse_state_dir)) is not None:
                drain = LagWatch(0, CONSECUTIVE_SAMPLES, float(self.quiet_seconds))
                self.wait_for(reverse, drain, "the reverse mirror drained")
        except KafkaMirrorError as exc:
            raise fail(f"{self.task_id}: {exc}") from None
        stopped["reverse"] = process.stop(Path(self.reverse_state_dir))
        self.log.info("Consumer groups moved back: %s; mirrors stopped: %s", moved or "none", stopped)
        return {"moved": moved, "stopped": stopped}

    def wait_for(self, spec: MirrorSpec, watch: LagWatch, what: str) -> None:
        """Blocks (the rollback is the emergency path: no triggerer needed) up to the lag timeout."""
        started = time.monotonic()
        while True:
            progress = mirror_progress(spec.source_bootstrap, spec.group, spec.topics)
            now = time.monotonic()
            if watch.observe(progress, now):
                break
            if now - started > self.lag_timeout_seconds:
                waited = f"not after {self.lag_timeout_seconds:.0f} s"
                raise KafkaMirrorError(f"{what}: {waited}: {watch.verdict(now)}")
            time.sleep(1)
        self.log.info("%s after %.1f s: %s", what, now - started, watch.verdict(now))


def groups_on(side: ConsumerDeployments, consumers: Mapping[str, str]) -> list[str]:
    """The groups whose members run on `side` (their Deployment has replicas there)."""
    return [
        group
        for group, deployment in sorted(consumers.items())
        if (side.members(deployment) or Members(0)).replicas
    ]


def move_consumers_between(
    operator: KafkaConsumersOperator,
    group: str,
    deployment: str,
    reverse: bool,
    uncopied: Mapping[Partition, int] | None = None,
) -> ConsumersMoved:
    """One group with its members, source -> target (or back), logging each partition's translation."""
    source, target = operator.bootstraps()
    source_side, target_side = operator.deployments()
    labels = (operator.source_label, operator.target_label)
    if reverse:
        source, target, source_side, target_side = target, source, target_side, source_side
        labels = (labels[1], labels[0])
    result = move_consumers(
        group,
        deployment,
        source_side,
        target_side,
        lambda: move_group(source, target, *labels, group, operator.topics, operator.wait_seconds, uncopied),
    )
    for item in result.translations:
        operator.log.info(
            "%s %s[%d]: %s offset %d -> %s offset %d (%d to be read again)",
            group, item.topic, item.partition, labels[0], item.source_offset,
            labels[1], item.target_offset, item.redelivered,
        )  # fmt: skip
    operator.log.info("%s: %s, %d members (%s)", group, result.action, result.replicas, deployment)
    return result
