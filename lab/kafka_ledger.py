"""The Kafka ledger: every event a broker acknowledged to a producer, and every event a consumer
processed, kept outside Kafka, beside the PostgreSQL write ledger (lab/ledger.py).

An event is lost when it was acknowledged and never processed on either cluster; processed more
than once is a duplicate (at-least-once delivery allows those, and the check counts them).
Lines are `event_id` in `<dir>/produced.log` and `event_id cluster` in `<dir>/processed.log`.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class KafkaLedger:
    """Append-only; a produce line is written only from the delivery report of an acknowledged event."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._produced = (directory / "produced.log").open("a", buffering=1)
        self._processed = (directory / "processed.log").open("a", buffering=1)
        self._lock = threading.Lock()

    def produced(self, event_id: str) -> None:
        with self._lock:
            self._produced.write(f"{event_id}\n")

    def processed(self, event_id: str, cluster: str) -> None:
        with self._lock:
            self._processed.write(f"{event_id} {cluster}\n")

    def close(self) -> None:
        with self._lock:
            self._produced.close()
            self._processed.close()


@dataclass
class KafkaLedgerReport:
    produced: int = 0
    processed: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: int = 0
    by_cluster: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.produced} acknowledged events: {len(self.lost)} lost {self.lost[:10]}, "
            f"{self.processed} processed ({self.duplicates} duplicates), by cluster {self.by_cluster}"
        )


def check_kafka_ledger(directory: Path) -> KafkaLedgerReport:
    """Every acknowledged event processed at least once; torn last lines are ignored."""
    produced = [line for line in (directory / "produced.log").read_text().splitlines() if line]
    processed: Counter[str] = Counter()
    clusters: Counter[str] = Counter()
    for line in (directory / "processed.log").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            processed[parts[0]] += 1
            clusters[parts[1]] += 1
    return KafkaLedgerReport(
        produced=len(produced),
        processed=sum(processed.values()),
        lost=[event for event in produced if event not in processed],
        duplicates=sum(count - 1 for count in processed.values()),
        by_cluster=dict(clusters),
    )
