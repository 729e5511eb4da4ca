"""pgBackRest on the lab's production: archiving checked, a full backup taken once, the backup
verified by a restore off production and compared with it, while writers keep committing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from lab.loadgen import LoadGenerator
from pyairtable_migration.operators.backup import (
    CheckArchivingOperator,
    FullBackupOperator,
    VerifyBackupOperator,
)
from tests.backup.production import Production, run


def test_archiving_check_passes_on_production(production: Production) -> None:
    summary = run(CheckArchivingOperator, production.backup)
    assert summary["archive_mode"] == "on" and summary["stanza"] == "pyairtable"


def test_a_stanza_that_does_not_exist_is_refused_by_name(production: Production) -> None:
    backup = {**production.backup.model_dump(), "stanza": "no_such_stanza"}
    with pytest.raises(AirflowFailException) as refused:
        run(CheckArchivingOperator, backup)
    message = str(refused.value)
    assert "stanza no_such_stanza does not exist in the repository" in message
    assert "does not push to stanza no_such_stanza" in message  # production archives elsewhere


def test_archiving_off_is_refused_before_anything_changes(production: Production) -> None:
    # The lab's staging cluster does not archive: pointed at it, every backup step refuses.
    backup = {**production.backup.model_dump(), "target_conn_id": "pyairtable_source_db"}
    before = sorted(Path(production.backup.repository.path).rglob("*"))
    for operator in (CheckArchivingOperator, FullBackupOperator):
        with pytest.raises(AirflowFailException) as refused:
            run(operator, backup)
        assert "archiving is off on production (archive_mode=off)" in str(refused.value)
    assert sorted(Path(production.backup.repository.path).rglob("*")) == before


def test_full_backup_is_taken_once_per_run_and_verified_off_production_under_load(
    production: Production, tmp_path: Path
) -> None:
    first = run(FullBackupOperator, production.backup, run_id="backup-once")
    again = run(FullBackupOperator, production.backup, run_id="backup-once")
    assert first["taken"] and not again["taken"]
    assert again["backup"]["label"] == first["backup"]["label"]
    generator = LoadGenerator(
        dsn=production.app_dsn(), db_rate=200, ledger_path=tmp_path / "ledger.log", edge=None, http_rate=0
    )
    generator.start()
    try:
        time.sleep(2)  # rows the backup does not have: the copy replays them from the archive
        summary = run(VerifyBackupOperator, production.backup)
    finally:
        figures = generator.stop()
    assert figures["db_failures"] == 0 and figures["db_commits"] > 0
    assert summary["passed"], summary["differences"]
    assert summary["compare"]["tables"] >= 8 and summary["compare"]["rows"] > 0
    # The scratch cluster is gone (recovery tests keep their clusters beside it, under recovery_dir).
    assert not Path(production.backup.scratch_dir).exists()
