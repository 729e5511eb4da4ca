"""Route53WeightsHook against a real moto server; throttling answers through botocore's Stubber."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from pyairtable_migration.dns.weights import RecordsNotFound, console_url, plan_changes, weights_of
from pyairtable_migration.hooks.route53 import Route53WeightsHook
from tests.traffic.conftest import AWS_CONN, PRODUCTION, RECORDS, STAGING, ZONE, Zone, all_at

IDENTIFIERS = (STAGING, PRODUCTION)


def hook() -> Route53WeightsHook:
    return Route53WeightsHook(aws_conn_id=AWS_CONN, backoff_seconds=0.01)


def test_reads_every_weighted_set_by_set_identifier(zone: Zone) -> None:
    route53 = hook()
    zone_id = route53.hosted_zone_id(ZONE)
    assert zone_id == zone.zone_id
    records = route53.require_records(zone_id, RECORDS, IDENTIFIERS)
    assert weights_of(records) == all_at(0)
    assert {r.ttl for by_id in records.values() for r in by_id.values()} == {300}


def test_sets_both_weights_of_every_record_in_one_batch_then_changes_nothing(zone: Zone) -> None:
    route53 = hook()
    records = route53.require_records(zone.zone_id, RECORDS, IDENTIFIERS)
    result = route53.set_weights(zone.zone_id, records, {PRODUCTION: 25, STAGING: 75}, "test")
    assert result.change_id
    assert len(zone.change_calls) == 1
    batch = zone.change_calls[0]["ChangeBatch"]["Changes"]
    assert len(batch) == 6 and {c["Action"] for c in batch} == {"UPSERT"}
    assert zone.weights() == all_at(25)
    assert route53.wait_insync(result.change_id, timeout_seconds=5) >= 0

    again = route53.set_weights(
        zone.zone_id,
        route53.require_records(zone.zone_id, RECORDS, IDENTIFIERS),
        {PRODUCTION: 25, STAGING: 75},
        "t",
    )
    assert again.change_id is None and again.changes == []
    assert len(zone.change_calls) == 1, "equal weights must not send a change"


def test_only_differing_records_are_written_and_others_left_alone(zone: Zone) -> None:
    other = f"other.{ZONE}"
    zone.set(40, 300, names=[other])  # same set identifiers, a name the cutover does not own
    zone.set(10, 300, names=RECORDS[:1])
    route53 = hook()
    records = route53.require_records(zone.zone_id, RECORDS, IDENTIFIERS)
    result = route53.set_weights(zone.zone_id, records, {PRODUCTION: 10, STAGING: 90}, "t")
    assert sorted(c.record.name for c in result.changes) == sorted(RECORDS[1:] * 2)
    assert zone.weights() == {**all_at(10), **all_at(40, [other])}


def test_ttl_change_can_be_lower_only(zone: Zone) -> None:
    zone.set(0, 30, names=RECORDS[:1])
    route53 = hook()
    records = route53.require_records(zone.zone_id, RECORDS, IDENTIFIERS)
    changes = plan_changes(records, ttl=60, only_lower_ttl=True)
    assert sorted({c.record.name for c in changes}) == sorted(RECORDS[1:])
    route53.set_ttl(zone.zone_id, records, 60, "t", only_lower=True)
    ttls = {name: {ttl for _, ttl in by_id.values()} for name, by_id in zone.read().items()}
    assert ttls == {RECORDS[0]: {30}, RECORDS[1]: {60}, RECORDS[2]: {60}}


def test_a_missing_zone_and_missing_records_are_named(zone: Zone) -> None:
    route53 = hook()
    with pytest.raises(RecordsNotFound, match=r"hosted zone nowhere\.example\.com\. not found"):
        route53.hosted_zone_id("nowhere.example.com.")
    unknown = f"apii.{ZONE}"
    with pytest.raises(RecordsNotFound) as caught:
        route53.require_records(zone.zone_id, [*RECORDS, unknown], (STAGING, PRODUCTION, "canary"))
    message = str(caught.value)
    assert f"record {unknown} has no weighted record set" in message
    assert all(f"record {name} has no weighted set 'canary'" in message for name in RECORDS)


def throttled(code: str) -> dict[str, object]:
    return {"service_error_code": code, "service_message": "slow down", "http_status_code": 400}


def test_throttling_and_prior_request_not_complete_are_retried_with_backoff(
    zone: Zone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stubber ONLY for the throttling answers, which moto cannot produce."""
    route53 = hook()
    sleeps: list[float] = []
    monkeypatch.setattr("pyairtable_migration.hooks.route53.time.sleep", sleeps.append)
    with Stubber(route53.conn) as stub:
        stub.add_client_error("get_change", **throttled("Throttling"))
        stub.add_client_error("get_change", **throttled("PriorRequestNotComplete"))
        stub.add_response(
            "get_change", {"ChangeInfo": {"Id": "C1", "Status": "INSYNC", "SubmittedAt": "2026-01-01"}}
        )
        assert route53.change_status("C1") == "INSYNC"
        stub.assert_no_pending_responses()
    assert sleeps == [0.01, 0.02], "exponential backoff between attempts"


def test_retries_end_and_other_errors_are_not_retried(zone: Zone, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stubber ONLY for the throttling answers, which moto cannot produce."""
    route53 = Route53WeightsHook(aws_conn_id=AWS_CONN, max_attempts=3, backoff_seconds=0.01)
    monkeypatch.setattr("pyairtable_migration.hooks.route53.time.sleep", lambda _: None)
    with Stubber(route53.conn) as stub:
        for _ in range(3):
            stub.add_client_error("get_change", **throttled("Throttling"))
        with pytest.raises(ClientError, match="Throttling"):
            route53.change_status("C1")
        stub.add_client_error("get_change", **throttled("NoSuchChange"))
        with pytest.raises(ClientError, match="NoSuchChange"):
            route53.change_status("C1")
        stub.assert_no_pending_responses()


def test_console_url_names_the_zone() -> None:
    assert console_url("Z123") == (
        "https://us-east-1.console.aws.amazon.com/route53/v2/hostedzones#ListRecordSets/Z123"
    )
