"""The Kafka ledger: every event a broker acknowledged to a producer, and every event a consumer
processed, kept outside Kafka, beside the PostgreSQL write ledger (lab/ledger.py).

An event is lost when it was acknowledged and never processed on either cluster; processed more
than once is a duplicate (at-least-once delivery allows those, and the check counts them).
Lines are `event_id [where]` in `<dir>/produced.log` (where: the broker, topic, partition and offset
the delivery report gave, the cluster, and when the event was sent and acknowledged, so a lost event
says where it went) and `event_id cluster` in `<dir>/processed.log`.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lab.ledger import AppendOnlyLines
from pyairtable_migration.kafka_mirror.client import (
    KafkaMirrorError,
    committed_offsets,
    end_offsets,
    group_state,
    scan,
)


class KafkaLedger:
    """Append-only; a produce line is written only from the delivery report of an acknowledged event."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._produced = AppendOnlyLines(directory / "produced.log")
        self._processed = AppendOnlyLines(directory / "processed.log")

    def produced(self, event_id: str, where: str = "") -> None:
        self._produced.append(f"{event_id} {where}".rstrip())

    def processed(self, event_id: str, cluster: str) -> None:
        self._processed.append(f"{event_id} {cluster}")

    def close(self) -> None:
        self._produced.close()
        self._processed.close()


@dataclass
class KafkaLedgerReport:
    produced: int = 0
    processed: int = 0
    lost: list[str] = field(default_factory=list)
    # Where each lost event was acknowledged (broker, topic[partition]@offset, time), when recorded.
    lost_where: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    by_cluster: dict[str, int] = field(default_factory=dict)
    # Places (broker, topic[partition]@offset) acknowledged for more than one event: a broker that
    # handed one offset out twice kept only one of them, the other lost by the broker, not the mirror.
    shared_places: dict[str, list[str]] = field(default_factory=dict)
    # What the broker holds now at each lost event's place (read while the brokers still run): the
    # event itself (it was there, and no consumer read it) or another (the broker lost it).
    found_there: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lost = [
            f"{event} ({self.lost_where.get(event) or '?'}; there now: {self.found_there.get(event, '?')})"
            for event in self.lost[:10]
        ]
        shared = (
            f", places acknowledged twice {dict(list(self.shared_places.items())[:5])}"
            if self.shared_places
            else ""
        )
        return (
            f"{self.produced} acknowledged events: {len(self.lost)} lost {lost}, "
            f"{self.processed} processed ({self.duplicates} duplicates), by cluster {self.by_cluster}{shared}"
        )


def check_kafka_ledger(
    directory: Path, catch_up_seconds: float = 0, groups: Iterable[str] = ()
) -> KafkaLedgerReport:
    """Every acknowledged event processed at least once; torn last lines are ignored. With
    `catch_up_seconds`, the consumers are given that long to process the last events first. Each
    lost event's place is read back from its broker (the first ten), with where each of `groups`
    stands there (past the event: the group skipped it; before it: its consumers never got there)."""
    deadline = time.monotonic() + catch_up_seconds
    while (report := _read_kafka_ledger(directory)).lost and time.monotonic() < deadline:
        time.sleep(1)
    for event in report.lost[:10]:
        report.found_there[event] = _held_at(report.lost_where.get(event, ""), list(groups))
    return report


def _held_at(where: str, groups: list[str]) -> str:
    """What the broker holds at `where` ("host:port topic[partition]@offset ..."), said briefly,
    and each group's committed offset and state there."""
    place = re.fullmatch(r"(\S+) (\S+)\[(\d+)\]@(\d+)", " ".join(where.split()[:2]))
    if place is None:
        return "place not recorded"
    bootstrap, topic, number, at = place.groups()
    partition, offset = (topic, int(number)), int(at)
    try:
        stands = [
            f"group {group} committed {committed_offsets(bootstrap, group).get(partition, 'nothing')} "
            f"there ({group_state(bootstrap, group)})"
            for group in groups
        ]
        if offset >= end_offsets(bootstrap, [partition])[partition]:
            return "; ".join(["nothing (past the partition's end)", *stands])
        records = list(scan(bootstrap, topic, partition[1], offset, timeout=10, end=offset + 1))
    except KafkaMirrorError as exc:
        return f"unreadable: {exc}"
    if not records:
        return "; ".join(["nothing (removed by retention)", *stands])
    record = records[0]
    value = (record.value or b"").decode(errors="replace")
    return "; ".join([f"{value} (origin {record.origin})" if record.origin else value, *stands])


def _read_kafka_ledger(directory: Path) -> KafkaLedgerReport:
    produced: dict[str, str] = {}
    for line in (directory / "produced.log").read_text().splitlines():
        if line:
            event, _, where = line.partition(" ")
            produced[event] = where
    processed: Counter[str] = Counter()
    clusters: Counter[str] = Counter()
    for line in (directory / "processed.log").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            processed[parts[0]] += 1
            clusters[parts[1]] += 1
    places: dict[str, list[str]] = {}
    for event, where in produced.items():
        place = " ".join(where.split()[:2])  # the broker and topic[partition]@offset, not the time
        if place:
            places.setdefault(place, []).append(event)
    return KafkaLedgerReport(
        shared_places={place: events for place, events in places.items() if len(events) > 1},
        produced=len(produced),
        processed=sum(processed.values()),
        lost=[event for event in produced if event not in processed],
        lost_where={event: where for event, where in produced.items() if event not in processed},
        duplicates=sum(count - 1 for count in processed.values()),
        by_cluster=dict(clusters),
    )
