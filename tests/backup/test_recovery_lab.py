"""Point-in-time recovery on the lab under load: writers commit through the pooler before and after
a moment T; production restored to T in a new cluster holds every write acknowledged before T,
none committed after T, and equals production as of T table by table (counts and row hashes).

Production tracks commit timestamps here (set by this module) so "production as of T" can be
computed on production itself: every row whose inserting transaction did not commit after T.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from psycopg2 import sql

from lab.ledger import check_ledger, read_ledger
from lab.loadgen import LoadGenerator
from lab.supervisor import restart_component
from pyairtable_migration.hooks.database import Table, statement
from pyairtable_migration.operators.backup import (
    CheckRecoveryTargetOperator,
    FullBackupOperator,
    PointInTimeRestoreOperator,
    RecoveryReportOperator,
)
from tests.backup.production import Production, run

TABLES = sql.SQL(
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1, 2"
)
# Production as of T: rows whose inserting transaction committed at or before T (rows loaded before
# commit timestamps were tracked have none: they are older than every backup).
AS_OF = sql.SQL(
    "SELECT count(*), coalesce(sum(hashtext(r::text)), 0) FROM {} AS r "
    "WHERE NOT coalesce(pg_xact_commit_timestamp(r.xmin) > %(t)s, false)"
)
WHOLE = sql.SQL("SELECT count(*), coalesce(sum(hashtext(r::text)), 0) FROM {} AS r")
COMMITTED_AFTER = sql.SQL("SELECT id FROM records AS r WHERE pg_xact_commit_timestamp(r.xmin) > %(t)s")


@pytest.fixture(scope="module")
def tracked(production: Production) -> Iterator[Production]:
    connection = production.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    finally:
        connection.close()
    restart_component("postgres-target", production.settings)
    run(FullBackupOperator, production.backup, run_id="recovery-base")
    yield production


def hashes(connection: Any, query: sql.SQL, target: datetime | None = None) -> dict[str, tuple[int, int]]:
    result = {}
    with connection.cursor() as cursor:
        cursor.execute(statement("validation_session"))  # identical text rendering on both sides
        cursor.execute(TABLES)
        for schema, table in cursor.fetchall():
            cursor.execute(query.format(sql.Identifier(schema, table)), {"t": target})
            count, digest = cursor.fetchone()
            result[str(Table(schema, table))] = (int(count), int(digest))
    return result


def recover(production: Production, target: datetime, run_id: str) -> dict[str, Any]:
    """The recovery DAG's three tasks, one after the other, in one run."""
    in_run = functools.partial(
        run, backup=production.backup, run_id=run_id, params={"target_time": target.isoformat()}
    )
    checked = in_run(CheckRecoveryTargetOperator)
    restored = in_run(
        PointInTimeRestoreOperator,
        xcoms={"check_target": checked},
        check_task_id="check_target",
        poll_seconds=0.5,
    )
    report = in_run(RecoveryReportOperator, xcoms={"restore": restored}, restore_task_id="restore")
    return {"checked": checked, "restored": restored, "report": report}


def test_recovery_to_t_under_load_holds_exactly_what_production_had_at_t(
    tracked: Production, tmp_path: Path
) -> None:
    production = tracked
    ledger = tmp_path / "ledger.log"
    generator = LoadGenerator(
        dsn=production.app_dsn(), db_rate=200, ledger_path=ledger, edge=None, http_rate=0
    )
    generator.start()
    try:
        time.sleep(3)
        acknowledged = read_ledger(ledger)  # each line follows its COMMIT: all committed before T
        target = datetime.now(UTC)
        time.sleep(3)
    finally:
        figures = generator.stop()
    assert figures["db_failures"] == 0, figures["db_errors"]
    after = set(read_ledger(ledger)) - set(acknowledged)
    assert len(acknowledged) > 200 and len(after) > 200

    outcome = recover(production, target, "recover-under-load")
    restored, report = outcome["restored"], outcome["report"]
    assert restored["port"] != production.settings.postgres_target_port
    assert Path(restored["data_path"]).parent == Path(production.backup.recovery_dir)
    assert not restored["in_recovery"]  # promoted: a primary of its own
    assert datetime.fromisoformat(restored["last_replayed_commit"]) <= target

    before_t = tmp_path / "before_t.log"
    before_t.write_text("".join(f"{i} {d}\n" for i, d in acknowledged.items()))
    copy = production.connect(port=restored["port"])
    source = production.connect()
    try:
        ledger_report = check_ledger(before_t, copy)
        assert ledger_report.lost == 0, ledger_report.summary()
        with source.cursor() as cursor:
            cursor.execute(COMMITTED_AFTER, {"t": target})
            committed_after = [row[0] for row in cursor.fetchall()]
        with copy.cursor() as cursor:
            cursor.execute("SELECT id FROM records WHERE id = ANY(%s)", (committed_after,))
            leaked = [row[0] for row in cursor.fetchall()]
        assert committed_after and not leaked, f"committed after T yet restored: {leaked[:10]}"
        with copy.cursor() as cursor:
            cursor.execute("SELECT id FROM records WHERE id = ANY(%s)", (sorted(after),))
            restored_after = {row[0] for row in cursor.fetchall()}
        # Acknowledged after T was read: either committed by T (restored) or after it (not restored).
        assert after <= restored_after | set(committed_after)
        as_of_t = hashes(source, AS_OF, target)
        assert hashes(copy, WHOLE) == as_of_t
        assert report["tables"] == {table: count for table, (count, _) in as_of_t.items()}
    finally:
        copy.close()
        source.close()

    # A retry of the same run finds its own cluster and waits on it; it never restores again.
    again = run(
        PointInTimeRestoreOperator,
        production.backup,
        run_id="recover-under-load",
        xcoms={"check_target": outcome["checked"]},
        check_task_id="check_target",
    )
    assert (again["port"], again["data_path"]) == (restored["port"], restored["data_path"])


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (lambda now: (now + timedelta(hours=1)).isoformat(), "is in the future; available: "),
        (lambda now: (now - timedelta(days=400)).isoformat(), "is before the first backup; available: "),
        (lambda now: now.replace(tzinfo=None).isoformat(), "has no time zone"),
        (lambda now: "yesterday", "is not an ISO 8601 timestamp"),
    ],
)
def test_a_target_outside_the_window_is_refused_naming_it(
    tracked: Production, when: Any, expected: str
) -> None:
    recoveries = sorted(Path(tracked.backup.recovery_dir).glob("*"))
    with pytest.raises(AirflowFailException) as refused:
        run(
            CheckRecoveryTargetOperator,
            tracked.backup,
            run_id="refused",
            params={"target_time": when(datetime.now(UTC))},
        )
    message = str(refused.value)
    assert "recovery refused, nothing changed" in message and expected in message
    if "available" in expected:
        assert "one second after backup" in message and "to now" in message
    assert sorted(Path(tracked.backup.recovery_dir).glob("*")) == recoveries


def test_a_missing_stanza_or_archiving_off_refuses_the_recovery(tracked: Production) -> None:
    params = {"target_time": datetime.now(UTC).isoformat()}
    missing = {**tracked.backup.model_dump(), "stanza": "gone"}
    with pytest.raises(AirflowFailException, match="stanza gone does not exist in the repository"):
        run(CheckRecoveryTargetOperator, missing, params=params)
    off = {**tracked.backup.model_dump(), "target_conn_id": "pyairtable_source_db"}
    with pytest.raises(AirflowFailException, match=r"archiving is off on production \(archive_mode=off\)"):
        run(CheckRecoveryTargetOperator, off, params=params)
