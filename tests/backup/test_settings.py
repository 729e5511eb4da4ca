"""The backup settings, the rendered pgbackrest.conf and the recovery window, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pyairtable_migration.pgbackrest.recovery import RecoveryRefused, check_target, recovery_target_text
from pyairtable_migration.pgbackrest.repository import BackupSet, StanzaInfo, render_config
from pyairtable_migration.pgbackrest.settings import (
    DEFAULT_CONFIG_PATH,
    BackupConfigError,
    load_backup_settings,
    parse_backup_settings,
)
from pyairtable_migration.recovery import RECOVERY_DAG_ID, build_recovery_dag

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def backup_set(label: str, stopped: datetime) -> BackupSet:
    return BackupSet(label, "full", stopped - timedelta(minutes=5), stopped, "0/2000028", "0/3000050", 1, 1)


INFO = StanzaInfo(
    "pyairtable",
    0,
    "ok",
    (backup_set("first", NOW - timedelta(days=2)), backup_set("second", NOW - timedelta(days=1))),
    "000000010000000000000001",
    "000000010000000000000009",
)


def test_the_project_file_is_valid_with_thirty_days_retention() -> None:
    settings = load_backup_settings(DEFAULT_CONFIG_PATH)
    assert settings.retention_full_days == 30 and settings.repository.type == "local"


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(BackupConfigError) as refused:
        parse_backup_settings(
            {
                "stanza": "bad stanza!",
                "retention_full_days": 0,
                "repository": {"type": "s3"},
                "scratch_dir": "relative/path",
                "unknown": 1,
            }
        )
    problems = refused.value.problems
    assert any(p.startswith("stanza:") for p in problems)
    assert any(p.startswith("retention_full_days:") for p in problems)
    assert any(p.startswith("scratch_dir:") for p in problems)
    assert "unknown: unknown field" in problems
    for field in ("s3_bucket", "s3_region", "s3_endpoint", "aws_conn_id"):
        assert any(p.startswith(f"repository.{field}:") for p in problems), field


def test_overlapping_paths_are_refused() -> None:
    with pytest.raises(BackupConfigError, match=r"scratch_dir .* and recovery_dir .* overlap"):
        parse_backup_settings({"scratch_dir": "/srv/restore", "recovery_dir": "/srv/restore/pitr"})


def test_an_s3_repository_renders_without_keys() -> None:
    settings = parse_backup_settings(
        {
            "repository": {
                "type": "s3",
                "path": "/pyairtable",
                "s3_bucket": "backups",
                "s3_region": "eu-west-1",
                "s3_endpoint": "s3.eu-west-1.amazonaws.com",
                "aws_conn_id": "pyairtable_backup_aws",
            }
        }
    )
    text = render_config(settings)
    assert "repo1-type=s3" in text and "repo1-s3-bucket=backups" in text
    assert "repo1-retention-full-type=time" in text and "repo1-retention-full=30" in text
    assert "s3-key=" not in text and "key-secret" not in text


def test_a_target_in_the_window_starts_from_the_newest_backup_before_it() -> None:
    target, backup = check_target("2026-12-02T14:00:00+01:00", INFO, NOW)
    assert target == datetime(2026, 12, 2, 13, 0, tzinfo=UTC) and backup.label == "second"
    assert check_target("2026-12-01T12:00:01Z", INFO, NOW)[1].label == "first"
    assert recovery_target_text(target) == "2026-12-02 13:00:00.000000+00"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-03T12:00:01Z", "is in the future; available: 2026-12-01T12:00:01+00:00"),
        ("2026-12-01T12:00:00Z", "is before the first backup; available: 2026-12-01T12:00:01+00:00"),
        ("2026-12-02 12:00:00", "has no time zone"),
        ("noon", "is not an ISO 8601 timestamp"),
    ],
)
def test_a_target_outside_the_window_is_refused_naming_the_window(text: str, expected: str) -> None:
    with pytest.raises(RecoveryRefused) as refused:
        check_target(text, INFO, NOW)
    assert expected in str(refused.value)


def test_no_backup_means_no_window() -> None:
    empty = StanzaInfo("pyairtable", 2, "no valid backups", (), None, None)
    with pytest.raises(RecoveryRefused, match="holds no backup"):
        check_target("2026-12-02T12:00:00Z", empty, NOW)


def test_the_recovery_dag_asks_for_the_target_time(tmp_path: Path) -> None:
    dag = build_recovery_dag(parse_backup_settings({}))
    assert dag.dag_id == RECOVERY_DAG_ID
    assert [t.task_id for t in dag.topological_sort()] == ["check_target", "restore", "report"]
    target = dag.params.get_param("target_time")
    assert target.schema["format"] == "date-time" and target.schema["title"] == "Target time"
