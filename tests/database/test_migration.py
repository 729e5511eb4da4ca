"""The whole database phase, the switchover and the rollback, on real servers, under write load.

One scenario, in order (each test builds on the state the previous one left):
  1. the database phase (preflight .. validation, Redis) with the load generator committing
     >= 500 transactions/s through PgBouncer;
  2. every task cleared and run again: nothing fails, nothing is duplicated;
  3. validation names one changed, one missing and one extra row among 250,000, plus a changed
     row of the quoted "Record Comments", and passes once they are repaired (writes in flight are
     not reported);
  4. a row pre-inserted on the target makes the lag gate fail with table, LSN and remedy;
  5. a switchover that cannot pause in time aborts cleanly, writers continue on the source;
  6. the switchover under load: no failed transaction, every acknowledged write on the target,
     no duplicate key after the flip; run again, it changes nothing;
  7. the rollback under load: every write made on the target is on the source.
The module starts and ends with the pair reset (source primary, target empty, no replication).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from lab.credentials import APP_ROLE
from lab.loadgen import LoadGenerator
from pyairtable_migration.config import MigrationConfig
from tests.database.pair import Pair
from tests.database.runner import POSTGRES_STEPS, operator_for, rollback_operator, run, run_fast, wait_until

pytestmark = pytest.mark.lab

DB_RATE = 500
PHASE = [
    "preflight.check_database",
    "preflight.check_redis",
    *POSTGRES_STEPS,
    "database.sync_redis",
    "database.validate_redis",
]


class Load:
    def __init__(self, pair: Pair, ledger: Path) -> None:
        self.ledger = ledger
        self.generator = LoadGenerator(
            dsn=pair.app_dsn(), db_rate=DB_RATE, ledger_path=ledger, edge=None, http_rate=0
        )
        self.stopped: dict[str, Any] | None = None

    def report(self) -> dict[str, Any]:
        return self.stopped or self.generator.report()

    def stop(self) -> dict[str, Any]:
        if self.stopped is None:
            self.stopped = self.generator.stop()
        return self.stopped


@pytest.fixture(scope="module")
def load(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Load]:
    pair.reset()
    running = Load(pair, tmp_path_factory.mktemp("ledger") / "ledger.log")
    running.generator.start()
    try:
        yield running
    finally:
        running.stop()
        pair.reset()


def assert_no_failed_transaction(load: Load) -> None:
    report = load.report()
    assert report["db_failures"] == 0, report["db_errors"]


def test_database_phase_replicates_everything_under_load(
    pair: Pair, config: MigrationConfig, load: Load, capfd: pytest.CaptureFixture[str]
) -> None:
    started = load.report()["db_commits"]
    results = {task_id: run_fast(config, task_id) for task_id in PHASE}
    # No password in any log line or XCom summary (CREATE SUBSCRIPTION's conninfo holds one).
    output = capfd.readouterr()
    assert "Target: created subscription" in output.out + output.err
    for secret in pair.passwords.values():
        assert secret not in output.out + output.err
        assert secret not in repr(results)
    assert results["database.copy_schema"]["copied"] is True
    assert len(results["database.copy_schema"]["deferred_indexes"]) == 9
    assert results["database.create_publication"]["action"] == "created"
    assert results["database.create_publication"]["replica_identity_changes"] == [
        "public.audit_log: REPLICA IDENTITY FULL"
    ]
    assert results["database.create_subscription"]["action"] == "created"
    assert results["database.wait_initial_sync"]["tables"] == 11  # 10 of PyAirtable's + the marker table
    assert len(results["database.build_deferred_indexes"]["built"]) == 9
    assert results["database.lag_gate"]["passed"] is True
    assert results["database.lag_gate"]["lag_seconds"] > 0  # a marker's trip, measured after the gate
    validation = results["database.validate_data"]
    assert validation["passed"] is True and validation["rows"] >= pair.records
    assert results["database.validate_redis"]["keys"] > 0
    # The load kept committing through PgBouncer at the configured rate, and nothing failed.
    commits = load.report()["db_commits"] - started
    assert commits > 0
    assert_no_failed_transaction(load)
    assert pair.query("target", "SELECT relreplident FROM pg_class WHERE relname = 'audit_log'") == [("f",)]


def test_every_task_runs_again_without_error_or_duplicate(
    pair: Pair, config: MigrationConfig, load: Load
) -> None:
    again = {task_id: run_fast(config, task_id) for task_id in PHASE}
    assert again["database.copy_schema"]["copied"] is False
    assert again["database.create_publication"]["action"] == "verified"
    assert again["database.create_publication"]["replica_identity_changes"] == []
    assert again["database.create_subscription"]["action"] == "verified"
    assert again["database.wait_initial_sync"]["seconds"] == 0.0
    assert again["database.build_deferred_indexes"]["built"] == []
    assert again["database.build_deferred_indexes"]["already_present"] == 9
    assert again["database.validate_data"]["passed"] is True
    assert pair.publications("source") == ["pyairtable_migration"]
    assert pair.slots("source") == ["pyairtable_migration"]
    assert pair.subscriptions("target") == ["pyairtable_migration"]
    assert pair.publications("target") == [] and pair.slots("target") == []
    assert_no_failed_transaction(load)


def test_validation_names_changed_missing_and_extra_rows(
    pair: Pair, config: MigrationConfig, load: Load
) -> None:
    changed, missing, extra = 123_457, 65_432, 5_000_000
    saved = pair.query(
        "source",
        "SELECT id, table_id, data::text, created_at, updated_at FROM records WHERE id = %s",
        (missing,),
    )
    pair.execute(
        "target", "UPDATE records SET data = data || '{\"tampered\": true}' WHERE id = %s", (changed,)
    )
    pair.execute("target", "DELETE FROM records WHERE id = %s", (missing,))
    pair.execute("target", "INSERT INTO records (id, table_id, data) VALUES (%s, 1, '{}')", (extra,))
    pair.execute("target", "UPDATE \"Record Comments\" SET body = body || '!' WHERE id = 77")
    with pytest.raises(AirflowFailException) as failure:
        run_fast(config, "database.validate_data")
    message = str(failure.value)
    assert "4 difference(s) persist" in message, message
    assert (
        f"public.records id in [100001, 200001): source 100000 rows, target 100000 rows; changed id {changed}"
        in message
    )
    assert (
        "public.records id in [1, 100001): source 100000 rows, target 99999 rows; missing on "
        f"target id {missing}" in message
    )
    assert (
        f"public.records id in [4900001, 5000001): source 0 rows, target 1 rows; extra on target id {extra}"
        in message
    )
    assert 'public."Record Comments" id in [1, 100001)' in message and "changed id 77" in message
    # Repair the target from the source; with writes still in flight, validation then passes.
    row = pair.query("source", "SELECT data::text FROM records WHERE id = %s", (changed,))[0]
    pair.execute("target", "UPDATE records SET data = %s::jsonb WHERE id = %s", (row[0], changed))
    pair.execute(
        "target",
        "INSERT INTO records (id, table_id, data, created_at, updated_at) VALUES (%s, %s, %s::jsonb, %s, %s)",
        saved[0],
    )
    pair.execute("target", "DELETE FROM records WHERE id = %s", (extra,))
    body = pair.query("source", 'SELECT body FROM "Record Comments" WHERE id = 77')[0][0]
    pair.execute("target", 'UPDATE "Record Comments" SET body = %s WHERE id = 77', (body,))
    assert run_fast(config, "database.validate_data")["passed"] is True


def test_quoted_identifiers_with_capitals_and_spaces_replicate(
    pair: Pair, config: MigrationConfig, load: Load
) -> None:
    app = psycopg2.connect(pair.app_dsn())
    try:
        with app, app.cursor() as cursor:
            cursor.execute(
                'INSERT INTO "Record Comments" (record_id, author_id, body) VALUES (1, 1, %s) RETURNING id',
                ("quoted names replicate",),
            )
            comment_id = cursor.fetchone()[0]
    finally:
        app.close()
    query = 'SELECT body FROM "Record Comments" WHERE id = %s'
    wait_until(
        lambda: pair.query("target", query, (comment_id,)) == [("quoted names replicate",)], what="comment"
    )
    states = pair.query(
        "target",
        "SELECT srrelid::regclass::text, srsubstate FROM pg_subscription_rel WHERE srrelid = '\"Record "
        "Comments\"'::regclass",
    )
    assert states == [('"Record Comments"', "r")]
    assert run_fast(config, "database.validate_data", tables=['public."Record Comments"'])["tables"] == 1


def test_conflicting_row_fails_the_lag_gate_with_table_lsn_and_remedy(
    pair: Pair, config: MigrationConfig, load: Load
) -> None:
    conflict = 4_000_000
    pair.execute(
        "target", 'INSERT INTO records (id, table_id, data) VALUES (%s, 1, \'{"on": "target"}\')', (conflict,)
    )
    pair.execute(
        "source", 'INSERT INTO records (id, table_id, data) VALUES (%s, 1, \'{"on": "source"}\')', (conflict,)
    )
    with pytest.raises(AirflowFailException) as failure:
        run_fast(config, "database.lag_gate")
    message = str(failure.value)
    assert "subscription pyairtable_migration on the target" in message and "is disabled" in message
    assert f"INSERT INTO public.records (id={conflict})" in message
    assert (
        f"The subscriber already holds the row(s) being inserted: public.records (id={conflict})" in message
    )
    lsn = re.search(r"finish LSN ([0-9A-F]+/[0-9A-F]+)", message)
    assert lsn, message
    assert f"ALTER SUBSCRIPTION pyairtable_migration SKIP (lsn = '{lsn.group(1)}')" in message
    assert "ALTER SUBSCRIPTION pyairtable_migration ENABLE" in message
    # The LSN is the one PostgreSQL itself reports for the failed transaction.
    server_log = (pair.settings.data_dir / "logs" / "postgres-target.log").read_text()
    assert f"finished at {lsn.group(1)}" in server_log
    # The lossless remedy: remove the conflicting row on the target, enable; replication catches up.
    pair.execute("target", "DELETE FROM records WHERE id = %s", (conflict,))
    pair.execute("target", "ALTER SUBSCRIPTION pyairtable_migration ENABLE")
    assert run_fast(config, "database.lag_gate")["passed"] is True
    assert pair.query("target", "SELECT data->>'on' FROM records WHERE id = %s", (conflict,)) == [("source",)]
    assert run_fast(config, "database.validate_data")["passed"] is True
    assert_no_failed_transaction(load)


def test_a_switchover_that_cannot_pause_in_time_aborts_cleanly(
    pair: Pair, config: MigrationConfig, load: Load
) -> None:
    """A transaction held open through the pooler keeps PAUSE from completing: past the timeout
    the switchover withdraws, and writers continue on the untouched source."""
    holder = psycopg2.connect(pair.app_dsn())
    holder.autocommit = False
    with holder.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM tables")
    try:
        started = time.monotonic()
        with pytest.raises(AirflowFailException, match="switchover aborted cleanly") as failure:
            run_fast(config, "switchover.switch_database", timeout_seconds=2)
        # The held transaction never ends: returning at all means the timeout withdrew the switch.
        assert time.monotonic() - started < 60
    finally:
        holder.rollback()
        holder.close()
    assert "Writers continue on the source, untouched" in str(failure.value)
    assert pair.pooler_port() == pair.settings.postgres_source_port
    console = pair.admin_console()
    with console.cursor() as cursor:
        cursor.execute("SHOW DATABASES")
        paused = {row[0]: row[-2] for row in cursor.fetchall()}
    console.close()
    assert paused["pyairtable"] == 0
    assert pair.query("target", "SELECT subenabled FROM pg_subscription") == [(True,)]
    assert pair.slots("target") == [] and pair.subscriptions("source") == []
    before = load.report()["db_commits"]
    wait_until(lambda: load.report()["db_commits"] > before + 100, what="commits after the abort")
    assert_no_failed_transaction(load)


def test_a_pooler_that_cannot_log_in_to_the_target_has_the_switchover_undone(
    pair: Pair, config: MigrationConfig, load: Load
) -> None:
    """PgBouncer repointed at a target that refuses its login keeps every writer waiting (it tries
    again only server_login_retry later) while RESUME has returned: the switchover sees no writer
    served, pauses again and undoes the switch; writers continue on the untouched source."""

    def set_password(password: str) -> None:
        with pair.superuser("target") as connection, connection.cursor() as cursor:
            cursor.execute(f"ALTER ROLE {APP_ROLE} PASSWORD %s", (password,))
        connection.close()

    set_password("not-the-one-the-pooler-has")
    try:
        with pytest.raises(AirflowFailException, match="no writer was served by the target") as failure:
            run_fast(config, "switchover.switch_database")
    finally:
        set_password(pair.passwords[APP_ROLE])
    message = str(failure.value)
    assert re.search(r"pooler pgbouncer: [1-9]\d* client\(s\) waiting, no server connection", message)
    assert "server_login_retry (15 s)" in message and "Writers continue on the source, untouched" in message
    assert pair.pooler_port() == pair.settings.postgres_source_port
    assert pair.query("target", "SELECT subenabled FROM pg_subscription") == [(True,)]
    assert pair.slots("target") == [] and pair.subscriptions("source") == []
    # PgBouncer serves its waiting writers again once its login retry is due, from the source.
    before = load.report()["db_commits"]
    wait_until(lambda: load.report()["db_commits"] > before + 100, timeout=60, what="commits after the undo")
    assert_no_failed_transaction(load)


def test_a_column_added_on_the_source_after_the_copy_stops_the_switchover(
    pair: Pair, config: MigrationConfig, load: Load
) -> None:
    """Logical replication carries no DDL: the drift is named, table and column, before any pause."""
    pair.execute("source", 'ALTER TABLE workspaces ADD COLUMN "Billing Plan" text')
    try:
        with pytest.raises(AirflowFailException, match="schema drift") as failure:
            run_fast(config, "switchover.switch_database")
    finally:
        pair.execute("source", 'ALTER TABLE workspaces DROP COLUMN "Billing Plan"')
    assert (
        'column public.workspaces."Billing Plan" (text) exists on the source only: ALTER TABLE '
        'public.workspaces ADD COLUMN "Billing Plan" text on the target'
    ) in str(failure.value)
    assert "nothing was switched" in str(failure.value)
    assert pair.pooler_port() == pair.settings.postgres_source_port
    assert pair.slots("target") == [] and pair.subscriptions("source") == []
    assert_no_failed_transaction(load)


def test_switchover_under_load_loses_nothing(pair: Pair, config: MigrationConfig, load: Load) -> None:
    with pytest.raises(AirflowSkipException, match="require_approvals=false"):
        run_fast(config, "switchover.approve")
    assert run(operator_for(config, "switchover.approve"), config, mode="plan") == {"mode": "plan"}
    load.generator.reset_longest_gap()
    before = load.report()["db_commits"]
    switch_started = time.time()
    summary = run_fast(config, "switchover.switch_database")
    switched = load.report()["db_commits"]
    assert summary["changed"] is True and summary["writers_on"] == "target"
    assert 0 < summary["write_stall_ms"] < 5_000
    # Every sequence on the target is past the source's (an undone attempt may have moved some before).
    assert summary["sequences_moved"] >= 1
    sequences = "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences"
    on_source, on_target = dict(pair.query("source", sequences)), dict(pair.query("target", sequences))
    assert len(on_source) >= 9 and on_source.keys() == on_target.keys()
    behind = {
        name: (value, on_target[name])
        for name, value in on_source.items()
        if on_target[name] is None or (value or 0) > on_target[name]
    }
    assert not behind, behind
    assert pair.pooler_port() == pair.settings.postgres_target_port
    # How long writers waited is a figure for `make bench` (tests assert no timing): the switch bounds
    # it itself (its freeze's timeout, then its check that the target serves them). The first commit
    # after the switch ends the gap it caused: printed, with where it ended.
    wait_until(lambda: load.report()["db_commits"] > switched, what="a commit after the flip")
    across = load.report()
    stall_ms, stall_ended = across["longest_commit_gap_ms"], across["longest_commit_gap_ended_at"]
    # Writers keep committing, now on the target: no duplicate key (sequences moved ahead), no error.
    wait_until(lambda: load.report()["db_commits"] > before + 3 * DB_RATE, what="commits after the flip")
    assert_no_failed_transaction(load)
    print(
        f"switchover: {summary}; writers' longest commit gap across it {stall_ms:.0f} ms, ending "
        f"{stall_ended - switch_started:+.1f} s from the switch's start"
    )
    # Every acknowledged write so far is on the target.
    report = pair.ledger_report("target", load.ledger)
    assert report.checked > 0 and report.lost == 0, report.summary()
    # Reverse replication is running; forward replication is gone (with its slot).
    assert pair.subscriptions("source") == ["pyairtable_rollback"]
    assert pair.subscriptions("target") == []
    assert pair.slots("source") == [] and pair.slots("target") == ["pyairtable_rollback"]
    # Redis is promoted; both then run again and change nothing.
    assert run_fast(config, "switchover.switch_redis")["changed"] is True
    assert pair.redis("target").info("replication")["role"] == "master"
    assert run_fast(config, "switchover.switch_database") == {"changed": False, "writers_on": "target"}
    assert run_fast(config, "switchover.switch_redis")["changed"] is False


def test_rollback_under_load_keeps_every_write_made_on_the_target(
    pair: Pair, config: MigrationConfig, load: Load
) -> None:
    made_on_target_before = load.report()["db_commits"]
    wait_until(
        lambda: load.report()["db_commits"] > made_on_target_before + DB_RATE, what="writes on the target"
    )
    summary = run(rollback_operator(config), config)
    assert summary["changed"] is True and summary["writers_on"] == "source"
    assert pair.pooler_port() == pair.settings.postgres_source_port
    after = load.report()["db_commits"]
    wait_until(lambda: load.report()["db_commits"] > after + DB_RATE, what="commits after the rollback")
    figures = load.stop()
    assert figures["db_failures"] == 0, figures["db_errors"]
    # Every acknowledged write (before, during and after the target's turn) is on the source.
    report = pair.ledger_report("source", load.ledger)
    assert report.checked == figures["db_commits"] and report.lost == 0, report.summary()
    assert pair.subscriptions("source") == [] and pair.slots("target") == []
    assert run(rollback_operator(config), config) == {"changed": False, "writers_on": "source"}
