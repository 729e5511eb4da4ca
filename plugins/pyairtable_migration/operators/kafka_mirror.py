"""Kafka's steps: preflight, topics on the target, the mirror (start, lag gate or drain, stop) and
the consumer groups' move. The same operators run the way back with source and target swapped.

Each reads state first and changes only what differs; the domain logic is in kafka_mirror/.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Context

from pyairtable_migration.kafka_mirror import process
from pyairtable_migration.kafka_mirror.client import KafkaMirrorError
from pyairtable_migration.kafka_mirror.connection import bootstrap_of
from pyairtable_migration.kafka_mirror.groups import move_group
from pyairtable_migration.kafka_mirror.mirror import MirrorSpec
from pyairtable_migration.kafka_mirror.preflight import check
from pyairtable_migration.kafka_mirror.topics import ensure_topics
from pyairtable_migration.operators.base import MigrationOperator, bulleted, fail
from pyairtable_migration.triggers.kafka_mirror import KafkaMirrorLagTrigger


class KafkaOperator(MigrationOperator):
    """Base: two clusters by connection id, labelled (the labels mark where a copy came from).

    :param source_conn_id / target_conn_id: connections whose host:port (or extra
        `bootstrap_servers`) reach the source and target clusters
    :param source_label / target_label: the clusters' names in the copies' headers
    :param topics: the topics that move
    """

    template_fields: Sequence[str] = ("source_conn_id", "target_conn_id", "topics")
    ui_color = "#f3e1c6"

    def __init__(
        self,
        *,
        source_conn_id: str,
        target_conn_id: str,
        topics: Sequence[str],
        source_label: str = "staging",
        target_label: str = "production",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_conn_id = source_conn_id
        self.target_conn_id = target_conn_id
        self.topics = list(topics)
        self.source_label = source_label
        self.target_label = target_label

    def bootstraps(self) -> tuple[str, str]:
        return bootstrap_of(self.source_conn_id), bootstrap_of(self.target_conn_id)


class KafkaPreflightOperator(KafkaOperator):
    """Both clusters answer, the topics exist on the source, the target has none that cannot take
    their copy; fails once with every problem. Changes nothing, so it runs in plan mode too."""

    def execute(self, context: Context) -> dict[str, Any]:
        result = check(*self.bootstraps(), self.topics, self.source_label)
        if result.problems:
            raise fail(bulleted(f"{self.task_id}: Kafka is not ready to move", result.problems))
        self.log.info("Kafka preflight passed: %s", result.facts)
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

    def __init__(self, *, mirror_group: str, state_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mirror_group = mirror_group
        self.state_dir = state_dir


class StartKafkaMirrorOperator(KafkaMirrorOperator):
    """Starts the mirror unless it runs; a started mirror resumes from its committed offsets.

    :param window: events in flight at most (also the bound on copies made twice after a crash)
    """

    def __init__(self, *, window: int = 5000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window = window

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
    """The lag gate (max_lag > 0, before the groups move) or the drain (max_lag 0, after the
    producers moved): waits on the triggerer, with a timeout."""

    template_fields: Sequence[str] = (*KafkaMirrorOperator.template_fields, "max_lag")

    def __init__(
        self,
        *,
        max_lag: int,
        consecutive_samples: int = 3,
        sample_seconds: float = 1.0,
        timeout_seconds: float = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_lag = max_lag
        self.consecutive_samples = consecutive_samples
        self.sample_seconds = sample_seconds
        self.timeout_seconds = timeout_seconds

    def execute(self, context: Context) -> None:
        if self.planned(context, f"wait until the mirror lags <= {self.max_lag} events"):
            return
        self.defer_to(
            KafkaMirrorLagTrigger(
                source_conn_id=self.source_conn_id,
                mirror_group=self.mirror_group,
                topics=self.topics,
                max_lag=int(self.max_lag),
                consecutive_samples=self.consecutive_samples,
                sample_seconds=self.sample_seconds,
                timeout_seconds=self.timeout_seconds,
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


class MoveKafkaConsumerGroupsOperator(KafkaOperator):
    """Moves each consumer group once its members stopped on the source: committed offsets
    translated through the copies' origin headers, set on the target while the group is empty there.

    :param groups: consumer groups to move
    :param wait_seconds: how long a group may take to empty on the source (its consumers stopping)
    """

    template_fields: Sequence[str] = (*KafkaOperator.template_fields, "groups")

    def __init__(self, *, groups: Sequence[str], wait_seconds: float = 120.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups = list(groups)
        self.wait_seconds = wait_seconds

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context, f"move consumer groups {self.groups} to {self.target_label} at translated offsets"
        ):
            return {"mode": "plan"}
        source, target = self.bootstraps()
        moved: dict[str, Any] = {}
        for group in self.groups:
            try:
                translations = move_group(
                    source,
                    target,
                    self.source_label,
                    self.target_label,
                    group,
                    self.topics,
                    self.wait_seconds,
                )
            except KafkaMirrorError as exc:
                raise fail(f"{self.task_id}: {exc}") from None
            for item in translations:
                self.log.info(
                    "%s %s[%d]: %s offset %d -> %s offset %d (%d to be read again)",
                    group, item.topic, item.partition, self.source_label, item.source_offset,
                    self.target_label, item.target_offset, item.redelivered,
                )  # fmt: skip
            moved[group] = {
                "partitions": len(translations),
                "redelivered": sum(item.redelivered for item in translations),
            }
        return moved
