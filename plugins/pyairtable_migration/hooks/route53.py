"""Route53 weighted records: read them, set weights and TTLs in one change batch, wait for INSYNC.

The amazon provider has no Route53 hook. This one owns the client (through AwsBaseHook, so an
ordinary `aws` connection, `endpoint_url` included, works) and the retry policy; operators only
say which weights and TTLs they want.

Writes are compare-and-set: the records are read, the wanted values compared (`plan_changes` in
dns/weights.py), and only records that differ go into ONE change batch (Route53 applies a batch
atomically), as UPSERTs. UPSERT and not DELETE+CREATE: a DELETE+CREATE pair would protect against a
concurrent writer, but moto (the lab's Route53) deletes a weighted set by its SetIdentifier across
every name, and a reader racing the pair can see a name with no record at all. Runs are serialized
(max_active_runs=1), so the read-compare-write window is ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.config import Config
from botocore.exceptions import ClientError

from pyairtable_migration.dns.weights import (
    ChangeNotInSync,
    ChangeResult,
    RecordChange,
    Records,
    RecordsNotFound,
    WeightedRecord,
    missing_records,
    plan_changes,
)

# Route53 answers these when a change is still being applied or the account's 5 req/s is spent.
RETRYABLE_CODES = frozenset(
    {"PriorRequestNotComplete", "Throttling", "ThrottlingException", "TooManyRequestsException"}
)
T = TypeVar("T")


class Route53WeightsHook(AwsBaseHook):
    """Weighted record sets of one hosted zone, through the `route53` client.

    :param max_attempts: attempts per API call for PriorRequestNotComplete and throttling answers
    :param backoff_seconds: first retry delay; doubles on each attempt (capped at 20 s)
    """

    def __init__(
        self, *args: Any, max_attempts: int = 8, backoff_seconds: float = 0.5, **kwargs: Any
    ) -> None:
        kwargs["client_type"] = "route53"
        super().__init__(*args, **kwargs)
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds

    def _get_config(self, config: Config | None = None) -> Config:
        """The connection's botocore config, with one retry policy: this hook's (see `call`).

        botocore's own retries on top would multiply the attempts and hide what happened.
        """
        return super()._get_config(config).merge(Config(retries={"total_max_attempts": 1}))

    def call(self, operation: Callable[..., T], **kwargs: Any) -> T:
        """Call the API, retrying PriorRequestNotComplete and throttling with exponential backoff."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return operation(**kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in RETRYABLE_CODES or attempt == self.max_attempts:
                    raise
                delay = min(20.0, self.backoff_seconds * 2 ** (attempt - 1))
                self.log.warning(
                    "Route53 answered %s; attempt %d of %d again in %.1f s",
                    code,
                    attempt + 1,
                    self.max_attempts,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    # --- reading ---------------------------------------------------------------------------------

    def find_hosted_zone_id(self, zone_name: str) -> str | None:
        """The id (without /hostedzone/) of the zone with exactly this name, or None."""
        answer = self.call(self.conn.list_hosted_zones_by_name, DNSName=zone_name, MaxItems="100")
        for zone in answer["HostedZones"]:
            if zone["Name"] == zone_name:
                return str(zone["Id"]).rsplit("/", 1)[-1]
        return None

    def hosted_zone_id(self, zone_name: str) -> str:
        zone_id = self.find_hosted_zone_id(zone_name)
        if zone_id is None:
            raise RecordsNotFound(f"hosted zone {zone_name} not found")
        return zone_id

    def weighted_records(self, zone_id: str, names: Iterable[str]) -> dict[str, dict[str, WeightedRecord]]:
        """name -> set identifier -> record, for each requested name (a missing name maps to {})."""
        wanted = set(names)
        found: dict[str, dict[str, WeightedRecord]] = {name: {} for name in wanted}
        kwargs: dict[str, Any] = {"HostedZoneId": zone_id}
        while True:
            page = self.call(self.conn.list_resource_record_sets, **kwargs)
            for record in page["ResourceRecordSets"]:
                if record["Name"] in wanted and "SetIdentifier" in record and "Weight" in record:
                    found[record["Name"]][record["SetIdentifier"]] = WeightedRecord(
                        name=record["Name"],
                        set_identifier=record["SetIdentifier"],
                        weight=int(record["Weight"]),
                        ttl=int(record["TTL"]) if "TTL" in record else None,
                        raw=record,
                    )
            if not page.get("IsTruncated"):
                return found
            kwargs = {
                "HostedZoneId": zone_id,
                "StartRecordName": page["NextRecordName"],
                "StartRecordType": page["NextRecordType"],
            }
            if "NextRecordIdentifier" in page:
                kwargs["StartRecordIdentifier"] = page["NextRecordIdentifier"]

    def require_records(
        self, zone_id: str, names: Iterable[str], set_identifiers: Iterable[str]
    ) -> dict[str, dict[str, WeightedRecord]]:
        """The weighted records, or RecordsNotFound naming every absent name / set identifier."""
        records = self.weighted_records(zone_id, names)
        missing = missing_records(records, set_identifiers)
        if missing:
            raise RecordsNotFound("; ".join(missing))
        return records

    # --- writing ---------------------------------------------------------------------------------

    def apply(self, zone_id: str, changes: list[RecordChange], comment: str) -> ChangeResult:
        """UPSERT every changed record set in ONE change batch; no call when nothing differs."""
        if not changes:
            return ChangeResult(None, [])
        batch = []
        for change in changes:
            record_set = {**change.record.raw, "Weight": change.weight}
            if change.ttl is not None:
                record_set["TTL"] = change.ttl
            batch.append({"Action": "UPSERT", "ResourceRecordSet": record_set})
        answer = self.call(
            self.conn.change_resource_record_sets,
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": comment[:256], "Changes": batch},
        )
        return ChangeResult(str(answer["ChangeInfo"]["Id"]).rsplit("/", 1)[-1], changes)

    def set_weights(
        self, zone_id: str, records: Records, weights: Mapping[str, int], comment: str
    ) -> ChangeResult:
        """Compare-and-set the weights (by set identifier) of every record in one batch."""
        return self.apply(zone_id, plan_changes(records, weights=weights), comment)

    def set_ttl(
        self, zone_id: str, records: Records, ttl: int, comment: str, only_lower: bool = False
    ) -> ChangeResult:
        """Compare-and-set the TTL of every record in one batch."""
        return self.apply(zone_id, plan_changes(records, ttl=ttl, only_lower_ttl=only_lower), comment)

    # --- waiting ---------------------------------------------------------------------------------

    def change_status(self, change_id: str) -> str:
        """PENDING or INSYNC."""
        return str(self.call(self.conn.get_change, Id=change_id)["ChangeInfo"]["Status"])

    def wait_insync(self, change_id: str, timeout_seconds: float = 600.0, poll_seconds: float = 1.0) -> float:
        """Block until the change is INSYNC (polling with backoff up to 10 s); the seconds waited.

        Operators defer to Route53ChangeTrigger instead; this is for scripts and tests.
        """
        started = time.monotonic()
        delay = poll_seconds
        while self.change_status(change_id) != "INSYNC":
            if time.monotonic() - started > timeout_seconds:
                raise ChangeNotInSync(f"change {change_id} not INSYNC after {timeout_seconds:.0f} s")
            time.sleep(delay)
            delay = min(10.0, delay * 2)
        return time.monotonic() - started
