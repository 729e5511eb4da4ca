"""Consumer groups moved between clusters at translated offsets, and the mirror's lag.

A group is moved while it is empty on both sides: its members stopped on the source (so its
committed offsets are final), none started yet on the target (a broker only lets an empty group's
offsets be set). The translation reads the copies' origin headers (the offset map): the group
resumes on the target at the first record it has not processed, wherever that record lives.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from pyairtable_migration.kafka_mirror.client import (
    KafkaMirrorError,
    Partition,
    admin,
    committed_offsets,
    end_offsets,
    group_is_empty,
    group_state,
    partitions_of,
    scan,
)


@dataclass(frozen=True)
class Translation:
    """Where one partition's group resumes: `target_offset` on the target for `source_offset`."""

    topic: str
    partition: int
    source_offset: int
    target_offset: int
    # Records before target_offset on the target the group had not processed: always 0 (nothing
    # is skipped); records at or after it it had processed already come again (at-least-once).
    redelivered: int

    def to_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def translate_partition(
    source_bootstrap: str,
    target_bootstrap: str,
    source_label: str,
    target_label: str,
    topic: str,
    partition: int,
    committed: int,
    uncopied_from: int | None = None,
) -> Translation:
    """The target offset that skips nothing the group has not processed on the source.

    Every record at or past `committed` on the source is unprocessed. Its place on the target is
    its copy's offset (the first copy, if the mirror copied it twice), or, for a record that is
    itself a copy of a target record (the way back), that record's offset; a record not copied yet
    will land at or past the target's end, which is read before anything else. The group resumes
    at the smallest of these places; what it then reads again counts as `redelivered`.

    `uncopied_from` (the way back, when the target's own producers kept writing after the group
    left it): the first target record the forward mirror did not copy to the source. The group
    never saw it or anything native after it, so it resumes there at the latest.
    """
    target_end = end_offsets(target_bootstrap, [(topic, partition)])[(topic, partition)]
    # Read after the target's end: a source record written later lands there past target_end.
    source_end = end_offsets(source_bootstrap, [(topic, partition)])[(topic, partition)]
    copies: dict[int, int] = {}  # source offset -> its first copy's target offset
    target_records = []
    for record in scan(target_bootstrap, topic, partition, end=target_end):
        target_records.append(record)
        if record.origin is not None and record.origin[0] == source_label:
            copies.setdefault(record.origin[1], record.offset)
    resume = target_end
    processed_originals: set[int] = set()  # target offsets whose copy on the source was processed
    for record in scan(source_bootstrap, topic, partition, end=source_end):
        from_target = record.origin is not None and record.origin[0] == target_label
        if record.offset < committed:
            if from_target and record.origin is not None:
                processed_originals.add(record.origin[1])
            continue
        place = (
            record.origin[1]
            if from_target and record.origin is not None
            else copies.get(record.offset, target_end)
        )
        resume = min(resume, place)
    if uncopied_from is not None:
        resume = min(resume, uncopied_from)
    redelivered = sum(
        1
        for record in target_records
        if record.offset >= resume
        and (
            (record.origin is None and record.offset in processed_originals)
            or (
                record.origin is not None
                and record.origin[0] == source_label
                and record.origin[1] < committed
            )
        )
    )
    return Translation(topic, partition, committed, resume, redelivered)


def wait_until_empty(bootstrap: str, group: str, timeout_seconds: float, interval: float = 0.2) -> float:
    """Seconds waited until the group has no members; raises after the timeout."""
    started = time.monotonic()
    while not group_is_empty(bootstrap, group):
        if time.monotonic() - started > timeout_seconds:
            raise KafkaMirrorError(
                f"group {group!r} still has members after {timeout_seconds:.0f} s "
                f"(state {group_state(bootstrap, group)}): stop its consumers first"
            )
        time.sleep(interval)
    return time.monotonic() - started


def move_group(
    source_bootstrap: str,
    target_bootstrap: str,
    source_label: str,
    target_label: str,
    group: str,
    topics: Iterable[str],
    wait_seconds: float = 60.0,
    uncopied: Mapping[Partition, int] | None = None,
) -> list[Translation]:
    """Move one stopped group: translate its committed offsets and set them on the target.

    Safe to repeat: once the group runs on the target (members there), nothing is changed and
    the offsets it has are reported; a partition the group never committed counts as offset 0
    (it would have read from the beginning). `uncopied` (the way back): per partition, the first
    target record the forward mirror did not copy (its committed offsets on the target; none: 0).
    """
    names = list(topics)
    if not group_is_empty(target_bootstrap, group):
        return [
            Translation(topic, partition, -1, offset, 0)
            for (topic, partition), offset in sorted(committed_offsets(target_bootstrap, group).items())
        ]
    wait_until_empty(source_bootstrap, group, wait_seconds)
    committed = committed_offsets(source_bootstrap, group)
    counts = partitions_of(source_bootstrap, names)
    translations = [
        translate_partition(
            source_bootstrap,
            target_bootstrap,
            source_label,
            target_label,
            topic,
            partition,
            committed.get((topic, partition), 0),
            None if uncopied is None else uncopied.get((topic, partition), 0),
        )
        for topic in names
        for partition in range(counts.get(topic, 0))
    ]
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(item.topic, item.partition, item.target_offset) for item in translations]
    )
    try:
        admin(target_bootstrap).alter_consumer_group_offsets([request])[group].result()
    except KafkaException as exc:
        raise KafkaMirrorError(f"setting group {group!r}'s offsets on the target: {exc}") from None
    return translations


# Samples in a row the lag gate and the drain ask for, by default.
CONSECUTIVE_SAMPLES = 3


@dataclass(frozen=True)
class MirrorProgress:
    """One look at a mirror: per partition, the events on its source not yet copied and committed
    (`lag`), and the source's end (`ends`: they move while producers still write there)."""

    lag: dict[Partition, int]
    ends: dict[Partition, int]

    @property
    def total(self) -> int:
        return sum(self.lag.values())


def mirror_progress(source_bootstrap: str, mirror_group: str, topics: Iterable[str]) -> MirrorProgress:
    counts = partitions_of(source_bootstrap, topics)
    partitions = [(topic, partition) for topic, count in counts.items() for partition in range(count)]
    committed = committed_offsets(source_bootstrap, mirror_group)
    ends = end_offsets(source_bootstrap, partitions, near=committed)
    return MirrorProgress({key: max(0, ends[key] - committed.get(key, 0)) for key in partitions}, ends)


@dataclass
class LagWatch:
    """The lag gate and the drain, judged from samples the same way on the triggerer and in the
    rollback: passed once the lag stayed <= `max_lag` for `consecutive_samples` samples in a row and
    the source's ends have not moved for `quiet_seconds`.

    The drain asks for the quiet (the gate does not): lag 0 is only a moment, and a producer that
    still writes to the source (a client holding an old DNS answer, a request still in flight, a job
    of the old side's services) would write after the mirror stopped, an event nobody reads. The quiet
    is measured from the first sample: what came before it is not known.
    """

    max_lag: int
    consecutive_samples: int
    quiet_seconds: float = 0.0
    streak: int = 0
    last: MirrorProgress | None = None
    moved_at: float | None = None  # when the ends were last seen moving (the first sample counts)

    def observe(self, progress: MirrorProgress | None, now: float) -> bool:
        """Takes one sample (None: it failed, which breaks the streak); True once passed."""
        if progress is None:
            self.streak = 0
            return False
        if self.last is None or progress.ends != self.last.ends:
            self.moved_at = now
        self.last = progress
        self.streak = self.streak + 1 if progress.total <= self.max_lag else 0
        return self.streak >= self.consecutive_samples and self.quiet_for(now) >= self.quiet_seconds

    def quiet_for(self, now: float) -> float:
        return 0.0 if self.moved_at is None else now - self.moved_at

    def verdict(self, now: float) -> str:
        """What the samples show, for the log and for a timeout's message."""
        if self.last is None:
            return "no sample read"
        said = f"mirror lag {self.last.total} (limit {self.max_lag}), {self.streak} sample(s) in a row"
        if self.quiet_seconds:
            said += (
                f"; the source took no new event for {self.quiet_for(now):.1f} s "
                f"(needed {self.quiet_seconds:g} s: until then its producers may still write there)"
            )
        return said
