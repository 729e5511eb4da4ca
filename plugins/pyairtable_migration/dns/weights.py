"""Route53 weighted records as data: a record set, its weights and TTLs, and which sets differ from
the wanted values (the compare of the hook's compare-and-set). No client, so operators plan and log
with these without loading boto3, and the planning is testable without Route53; the hook that reads
and writes them is hooks/route53.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WeightedRecord:
    """One weighted record set as Route53 returns it (the raw dict is kept to write it back)."""

    name: str
    set_identifier: str
    weight: int
    ttl: int | None  # None for an alias record, which has no TTL of its own
    raw: Mapping[str, Any]

    @property
    def key(self) -> str:
        return f"{self.name} [{self.set_identifier}]"


Records = Mapping[str, Mapping[str, WeightedRecord]]  # name -> set identifier -> record


@dataclass(frozen=True)
class RecordChange:
    """What one record set becomes: (weight, ttl) before and after."""

    record: WeightedRecord
    weight: int
    ttl: int | None

    def describe(self) -> str:
        parts = []
        if self.weight != self.record.weight:
            parts.append(f"weight {self.record.weight} -> {self.weight}")
        if self.ttl != self.record.ttl:
            parts.append(f"TTL {self.record.ttl} -> {self.ttl}")
        return f"{self.record.key}: {', '.join(parts)}"


@dataclass(frozen=True)
class ChangeResult:
    """The outcome of one compare-and-set: the change id (None when nothing differed)."""

    change_id: str | None
    changes: list[RecordChange] = field(default_factory=list)

    @property
    def described(self) -> list[str]:
        return [change.describe() for change in self.changes]


class RecordsNotFound(LookupError):
    """A hosted zone, record or set identifier the configuration names does not exist."""


class ChangeNotInSync(TimeoutError):
    """A change stayed PENDING past the timeout."""


def weights_of(records: Records) -> dict[str, dict[str, int]]:
    """name -> set identifier -> weight, for logs and XCom."""
    return {
        name: {identifier: record.weight for identifier, record in sorted(by_id.items())}
        for name, by_id in sorted(records.items())
    }


def ttls_of(records: Records) -> dict[str, dict[str, int | None]]:
    return {
        name: {identifier: record.ttl for identifier, record in sorted(by_id.items())}
        for name, by_id in sorted(records.items())
    }


def plan_changes(
    records: Records,
    weights: Mapping[str, int] | None = None,
    ttl: int | None = None,
    only_lower_ttl: bool = False,
) -> list[RecordChange]:
    """The record sets whose weight (by set identifier) or TTL differs from the wanted values.

    Alias records keep no TTL and are never given one. With `only_lower_ttl`, a TTL already
    below `ttl` is left alone.
    """
    changes = []
    for _, by_identifier in sorted(records.items()):
        for identifier, record in sorted(by_identifier.items()):
            wanted_weight = (weights or {}).get(identifier, record.weight)
            wanted_ttl = record.ttl
            if ttl is not None and record.ttl is not None:
                wanted_ttl = min(ttl, record.ttl) if only_lower_ttl else ttl
            if (wanted_weight, wanted_ttl) != (record.weight, record.ttl):
                changes.append(RecordChange(record, wanted_weight, wanted_ttl))
    return changes


def missing_records(records: Records, set_identifiers: Iterable[str]) -> list[str]:
    """Every configured (name, set identifier) Route53 does not have, named."""
    identifiers = list(set_identifiers)
    missing = []
    for name, by_identifier in sorted(records.items()):
        if not by_identifier:
            missing.append(f"record {name} has no weighted record set")
            continue
        found = ", ".join(sorted(by_identifier))
        missing.extend(
            f"record {name} has no weighted set {identifier!r} (found: {found})"
            for identifier in identifiers
            if identifier not in by_identifier
        )
    return missing


def sending_users_to(records: Records, set_identifier: str) -> list[str]:
    """Every record whose `set_identifier` set has a weight above 0 (users reach that environment
    through it), named with each of its sets' weights."""
    return [
        f"{name} ({', '.join(f'{i} {r.weight}' for i, r in sorted(by_id.items()))})"
        for name, by_id in sorted(records.items())
        if set_identifier in by_id and by_id[set_identifier].weight > 0
    ]


CONSOLE_ZONE_URL = "https://us-east-1.console.aws.amazon.com/route53/v2/hostedzones#ListRecordSets/{zone_id}"


def console_url(zone_id: str) -> str:
    """The hosted zone's record list in the AWS console (the operators' extra link)."""
    return CONSOLE_ZONE_URL.format(zone_id=zone_id)
