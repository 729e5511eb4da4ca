"""The parallel initial copy under the forward slot's exported snapshot (postgres/snapshot_copy.py),
on real servers: under write load, split by key and by CTID, then streaming from the slot with no
write lost; killed half-way and run again, only the missing ranges copied and none twice; bad
input refused by name before the target changes."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from airflow.sdk.exceptions import AirflowFailException

from lab.loadgen import LoadGenerator
from pyairtable_migration.config import MigrationConfig
from pyairtable_migration.detached import Detached
from pyairtable_migration.hooks.database import MigrationError, MigrationPostgresHook, parse_tables
from pyairtable_migration.plan import build_plan
from pyairtable_migration.postgres.copy_runner import copy_process
from pyairtable_migration.postgres.indexes import IndexBuilder
from pyairtable_migration.postgres.replication import catch_up, publish
from pyairtable_migration.postgres.schema_copy import copy_schema
from pyairtable_migration.postgres.snapshot_copy import (
    WORKER_APPLICATION,
    CopyProgress,
    ExportedSnapshot,
    completed_copy,
    copy_snapshot,
    create_subscription_on_slot,
    exported_snapshot,
    read_progress,
)
from pyairtable_migration.postgres.validator import Validator
from pyairtable_migration.status import database_status
from tests.database.pair import DATABASE, Pair
from tests.database.runner import run_fast

pytestmark = pytest.mark.lab

LOG = logging.getLogger("tests.snapshot_copy")
# Small enough that records (250,000 rows, ~50 MB) is cut into dozens of key ranges and audit_log
# (no primary key) into a few CTID ranges.
SPLIT_BYTES = 1 << 20
RANGES = "SELECT table_name, method, count(*) FROM pyairtable_snapshot_copy.copy_range GROUP BY 1, 2"
SESSIONS_NAMED = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
# Every primary, unique and foreign key of the lab's tables with what travels with it: definition,
# comment, its index's replica identity and CLUSTER marks.
KEYS = """
SELECT con.conrelid::regclass::text, con.conname, pg_get_constraintdef(con.oid),
       obj_description(con.oid, 'pg_constraint'), coalesce(i.indisreplident, false),
       coalesce(i.indisclustered, false)
FROM pg_constraint AS con
JOIN pg_class AS c ON c.oid = con.conrelid
LEFT JOIN pg_index AS i ON i.indexrelid = con.conindid AND con.contype <> 'f'
WHERE con.contype IN ('p', 'u', 'f') AND c.relnamespace = 'public'::regnamespace
ORDER BY 1, 2
"""


@pytest.fixture(autouse=True, scope="module")
def clean(pair: Pair) -> Iterator[None]:
    pair.reset()
    yield
    pair.reset()


def hooks(config: MigrationConfig) -> tuple[MigrationPostgresHook, MigrationPostgresHook]:
    return (
        MigrationPostgresHook(config.database.source_conn_id),
        MigrationPostgresHook(config.database.target_conn_id),
    )


def prepare(pair: Pair, config: MigrationConfig) -> tuple[MigrationPostgresHook, MigrationPostgresHook]:
    """A reset pair with the schema on the target (indexes deferred, and keys as for the parallel
    copy, every table's weighed: none too small to count) and the publication on the source."""
    pair.reset()
    source, target = hooks(config)
    identity_full = parse_tables(config.database.replica_identity_full)
    copy_schema(
        source,
        target,
        replica_identity_full=identity_full,
        pg_bin_dir=config.database.pg_bin_dir,
        log=LOG,
        defer_keys_from_bytes=0,
    )
    publish(source, config.database.publication, identity_full, LOG)
    return source, target


def no_writers() -> None:
    """The pair's pooler sends writers to the source throughout these tests."""


# How every copy here runs, unless a test says otherwise.
COPY: dict[str, Any] = {
    "workers": 2,
    "split_bytes": SPLIT_BYTES,
    "refuse_if_writers_on_target": no_writers,
    "log": LOG,
}


def validate(source: MigrationPostgresHook, target: MigrationPostgresHook, config: MigrationConfig) -> Any:
    subscription = config.database.subscription
    return Validator(
        source,
        target,
        chunk_rows=config.database.validation_chunk_rows,
        catch_up=lambda: catch_up(source, target, subscription, 60),
        log=LOG,
    ).run()


def ranges_by_table(pair: Pair) -> dict[tuple[str, str], int]:
    return {(table, method): count for table, method, count in pair.query("target", RANGES)}


@pytest.mark.timeout(600)
def test_parallel_copy_under_load_then_streaming_from_the_slot_loses_nothing(
    pair: Pair, config: MigrationConfig, tmp_path: Path
) -> None:
    source, target = prepare(pair, config)
    slot = subscription = config.database.subscription
    ledger = tmp_path / "ledger.log"
    load = LoadGenerator(dsn=pair.app_dsn(), db_rate=300, ledger_path=ledger, edge=None, http_rate=0)
    reports: list[CopyProgress] = []
    source_sessions: list[int] = []  # the copy's, on the source, at each report

    def note_progress(progress: CopyProgress) -> None:
        reports.append(progress)
        source_sessions.append(pair.query("source", SESSIONS_NAMED, (WORKER_APPLICATION,))[0][0])

    # The subscription on the copy's slot: created once, verified when run again.
    subscribe = functools.partial(
        create_subscription_on_slot,
        source,
        target,
        publication=config.database.publication,
        subscription=subscription,
        slot=slot,
        log=LOG,
    )
    load.start()
    try:
        time.sleep(1)
        with exported_snapshot(
            source, target, slot=slot, publication=config.database.publication, log=LOG
        ) as snapshot:
            copied = copy_snapshot(
                source, target, snapshot, **COPY, on_progress=note_progress, progress_seconds=0.2
            )
        # Done and not yet followed: a copy step run again has nothing to do.
        assert completed_copy(source, target, slot) == read_progress(target)
        # Copied without records' key and the foreign key referencing it (its table is the
        # smaller); `tables` kept its key and records its foreign key to it (records, to be checked
        # had it been deferred, is the bigger).
        before = {key[1] for key in pair.query("target", KEYS)}
        assert {"records_pkey", "Record Comments_record_id_fkey"}.isdisjoint(before), before
        assert {"tables_pkey", "records_table_id_fkey"} <= before, before
        built = IndexBuilder(source, target, parallelism=2, log=LOG).run()
        created = subscribe()
        time.sleep(2)  # writes keep arriving through the subscription
    finally:
        figures = load.stop()
    catch_up(source, target, subscription, 60)
    # Split both ways: records by its integer key, audit_log (no primary key) by CTID pages.
    split = ranges_by_table(pair)
    assert split[("records", "key")] > 10, split
    assert split[("audit_log", "ctid")] > 1, split
    assert copied.finished and copied.ranges == copied.ranges_copied == sum(split.values())
    assert copied.rows >= pair.records and copied.bytes > 0 and copied.rows_per_second > 0
    # The callback at a steady cadence, ending with the final figures; the recorded progress agrees.
    assert len(reports) >= 2 and reports[-1] is copied and reports[-1].eta_seconds == 0
    assert all(report.tables and report.elapsed_seconds >= 0 for report in reports)
    assert any(0 < r.ranges_copied < r.ranges and r.eta_seconds is not None for r in reports), reports
    # One source session per worker, its reader's: what preflight counts.
    assert max(source_sessions) == COPY["workers"], source_sessions
    recorded = read_progress(target)
    assert recorded is not None and recorded.finished and recorded.rows == copied.rows
    assert {t.table: t.rows for t in recorded.tables} == {t.table: t.rows for t in copied.tables}
    assert len(built["built"]) == 9 and not built["concurrently"]
    # Statistics first, for the foreign keys' checks: every table the copy filled.
    assert {"public.records", "public.audit_log", 'public."Record Comments"'} <= set(built["analyzed"])
    # Every key the copy went without, built after it as the source has it: comment and mark too.
    keys = pair.query("source", KEYS)
    assert "public.records_pkey" in built["keys"], built
    assert 'public."Record Comments_record_id_fkey"' in built["foreign_keys"], built
    assert ("records", "records_pkey", "PRIMARY KEY (id)", "one row per record", False, True) in keys
    assert pair.query("target", KEYS) == keys
    assert created == {
        "subscription": subscription,
        "action": "created",
        "slot": slot,
        "start_lsn": snapshot.consistent_point,
    }
    report = validate(source, target, config)
    assert report.passed, report.summary()
    assert report.rows > pair.records
    assert figures["db_failures"] == 0 and figures["db_commits"] > 0, figures["db_errors"]
    ledger_report = pair.ledger_report("target", ledger)
    assert ledger_report.checked == figures["db_commits"] and ledger_report.lost == 0, ledger_report.summary()
    # Run again, both steps verify instead of copying or subscribing twice.
    assert subscribe()["action"] == "verified"


def copy_in_child(source_conn_id: str, target_conn_id: str, snapshot: ExportedSnapshot) -> None:
    """The copy in a process of its own, for the parent to SIGKILL."""
    copy_snapshot(
        MigrationPostgresHook(source_conn_id),
        MigrationPostgresHook(target_conn_id),
        snapshot,
        **{**COPY, "log": logging.getLogger("tests.snapshot_copy.child")},
    )


def killed_once_three_ranges_are_copied(pair: Pair, target: Callable[..., object], *args: Any) -> None:
    """`target(*args)` (a copy, or the task that runs one) in a process of its own, SIGKILLed once the
    target records three ranges copied."""
    child = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child.start()
    deadline = time.monotonic() + 120
    while len(copied_so_far(pair)) < 3:
        assert child.is_alive(), f"it ended (exit code {child.exitcode}) before it was killed"
        assert time.monotonic() < deadline, "the copy never got going"
        time.sleep(0.01)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL


def copied_so_far(pair: Pair) -> list[tuple[Any, ...]]:
    try:
        return pair.query(
            "target",
            "SELECT table_name, range_number, copied_rows FROM pyairtable_snapshot_copy.copy_range "
            "WHERE copied_at IS NOT NULL ORDER BY 1, 2",
        )
    except psycopg2.errors.UndefinedTable:
        return []


def assert_no_range_half_copied(pair: Pair, copied: list[tuple[Any, ...]]) -> None:
    """No range half-copied: records holds exactly the rows the progress table says (`copied`, from
    copied_so_far) went in."""
    assert (
        pair.query(
            "target",
            "SELECT (SELECT count(*) FROM records), (SELECT coalesce(sum(copied_rows), 0) FROM "
            "pyairtable_snapshot_copy.copy_range WHERE table_name = 'records' AND copied_at IS NOT NULL)",
        )[0]
        == (sum(rows for table, _, rows in copied if table == "records"),) * 2
    )


@pytest.mark.timeout(600)
def test_a_copy_killed_half_way_copies_only_the_missing_ranges_when_run_again(
    pair: Pair, config: MigrationConfig
) -> None:
    source, target = prepare(pair, config)
    slot = config.database.subscription
    with exported_snapshot(
        source, target, slot=slot, publication=config.database.publication, log=LOG
    ) as snapshot:
        killed_once_three_ranges_are_copied(
            pair, copy_in_child, config.database.source_conn_id, config.database.target_conn_id, snapshot
        )
        time.sleep(0.5)  # the killed copy's sessions notice their client is gone and roll back
        before = copied_so_far(pair)
        total = sum(ranges_by_table(pair).values())
        assert 3 <= len(before) < total, (len(before), total)
        assert_no_range_half_copied(pair, before)
        again = copy_snapshot(source, target, snapshot, **COPY)
    assert again.finished and again.attempt == 2 and again.ranges_copied == total
    # The keys built after the copy: a row copied twice would fail its primary key's build.
    IndexBuilder(source, target, parallelism=2, log=LOG).run()
    assert pair.query("target", KEYS) == pair.query("source", KEYS)
    attempts = pair.query(
        "target",
        "SELECT table_name, range_number, copied_in_attempt FROM pyairtable_snapshot_copy.copy_range",
    )
    assert len(attempts) == total  # each range once (the table's key), copied once
    first = {(table, number) for table, number, attempt in attempts if attempt == 1}
    assert first == {(table, number) for table, number, _ in before}
    assert all(attempt == 2 for table, number, attempt in attempts if (table, number) not in first)
    # No row twice, none missing: the target equals the source (nothing wrote meanwhile).
    report = Validator(source, target, chunk_rows=config.database.validation_chunk_rows, log=LOG).run()
    assert report.passed, report.summary()
    assert pair.query("target", "SELECT count(*) FROM audit_log") == pair.query(
        "source", "SELECT count(*) FROM audit_log"
    )


# One copy worker's reader (psql) on the source, its session ended by the server.
CUT_OFF_A_READER = """
SELECT pg_terminate_backend(pid) FROM (
    SELECT pid FROM pg_stat_activity
    WHERE application_name = %s AND query LIKE '%%COPY (%%' ORDER BY pid LIMIT 1
) AS reader
"""


@pytest.mark.timeout(600)
def test_a_reader_cut_off_on_the_source_fails_its_range_by_name_and_a_rerun_copies_the_rest(
    pair: Pair, config: MigrationConfig
) -> None:
    """A worker reads every range it copies through one psql: its session ending mid-copy fails the
    copy naming the range and the server's words, commits nothing of that range, and the copy run
    again does what is left."""
    source, target = prepare(pair, config)
    cut_off: list[bool] = []

    def cut_off_a_reader_once_three_ranges_are_copied() -> None:
        deadline = time.monotonic() + 120
        while not cut_off and time.monotonic() < deadline:
            if len(copied_so_far(pair)) >= 3:
                with pair.superuser("source", DATABASE) as connection, connection.cursor() as cursor:
                    cursor.execute(CUT_OFF_A_READER, (WORKER_APPLICATION,))
                    cut_off.extend(ended for (ended,) in cursor.fetchall())
            time.sleep(0.005)

    with exported_snapshot(
        source, target, slot=config.database.subscription, publication=config.database.publication, log=LOG
    ) as snapshot:
        cutter = threading.Thread(target=cut_off_a_reader_once_three_ranges_are_copied, daemon=True)
        cutter.start()
        with pytest.raises(MigrationError) as failed:
            copy_snapshot(source, target, snapshot, **COPY)
        cutter.join(10)
        assert cut_off == [True]
        assert re.search(
            r"copying public\.\S+ (range \d+|\(whole table\)).* failed: psql on the source: FATAL: +"
            r"terminating connection due to administrator command",
            str(failed.value),
        ), failed.value
        before = copied_so_far(pair)
        assert_no_range_half_copied(pair, before)
        again = copy_snapshot(source, target, snapshot, **COPY)
    assert again.finished and again.attempt == 2
    assert len(before) < again.ranges == again.ranges_copied
    IndexBuilder(source, target, parallelism=2, log=LOG).run()
    report = Validator(source, target, chunk_rows=config.database.validation_chunk_rows, log=LOG).run()
    assert report.passed, report.summary()


def parallel_config(config: MigrationConfig, state_dir: Path) -> MigrationConfig:
    """`initial_copy: parallel` as these tests run it: two workers, small ranges, its process's
    state under the test's own directory."""
    return config.model_copy(
        update={
            "database": config.database.model_copy(
                update={
                    "initial_copy": "parallel",
                    "copy_workers": 2,
                    "copy_split_bytes": SPLIT_BYTES,
                    "copy_progress_seconds": 0.5,
                    "copy_state_dir": str(state_dir),
                }
            )
        }
    )


@pytest.mark.timeout(600)
def test_a_copy_task_killed_half_way_finds_its_copy_running_when_cleared(
    pair: Pair, config: MigrationConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task SIGKILLed (a lost worker) while its copy runs: the copy is a process of its own and
    goes on; the task run again (a clear) finds it, waits for it, and returns what it copied: every
    range copied once, in the first attempt, none started over."""
    prepare(pair, config)
    parallel = parallel_config(config, tmp_path / "copy")
    copier = copy_process(tmp_path / "copy")
    killed_once_three_ranges_are_copied(pair, run_fast, parallel, "database.copy_snapshot")
    running = copier.running_pid()
    assert running is not None, f"the copy died with its task: {copier.log_tail()}"
    # Held still until the task run again has looked for it, so it cannot finish unseen meanwhile.
    os.kill(running, signal.SIGSTOP)
    looked = threading.Event()
    start = Detached.start

    def start_and_tell(self: Detached, spec: dict[str, Any], extra_env: Any = None) -> tuple[int, bool]:
        found = start(self, spec, extra_env)
        looked.set()
        os.kill(running, signal.SIGCONT)
        return found

    monkeypatch.setattr(Detached, "start", start_and_tell)
    try:
        again = run_fast(parallel, "database.copy_snapshot")
    finally:
        os.kill(running, signal.SIGCONT)
    assert looked.is_set()
    total = sum(ranges_by_table(pair).values())
    assert again["action"] == "copied" and again["process"] == "found running", again
    assert again["finished"] and again["ranges_copied"] == total, again
    assert pair.query(
        "target", "SELECT DISTINCT copied_in_attempt FROM pyairtable_snapshot_copy.copy_range"
    ) == [(1,)]
    assert copier.running_pid() is None and copier.result() is not None
    source, target = hooks(config)
    report = Validator(source, target, chunk_rows=config.database.validation_chunk_rows, log=LOG).run()
    assert report.passed, report.summary()


@pytest.mark.timeout(300)
def test_a_stalled_copy_fails_its_task_by_name_and_a_clear_waits_for_it_again(
    pair: Pair, config: MigrationConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy process stopped still (SIGSTOP: a hung session would look the same): its task fails
    once no range finished for copy_stall_seconds, naming the process and what to do, and leaves it
    running; resumed and the task cleared, the copy is found running and finishes."""
    prepare(pair, config)
    parallel = parallel_config(config, tmp_path / "copy")
    copier = copy_process(tmp_path / "copy")
    start = Detached.start

    def start_and_stall(self: Detached, spec: dict[str, Any], extra_env: Any = None) -> tuple[int, bool]:
        pid, started = start(self, spec, extra_env)
        os.kill(pid, signal.SIGSTOP)
        return pid, started

    monkeypatch.setattr(Detached, "start", start_and_stall)
    with pytest.raises(AirflowFailException, match=r"finished no range for \d+ s") as failed:
        run_fast(parallel, "database.copy_snapshot", copy_stall_seconds=2)
    stalled = copier.running_pid()
    assert stalled is not None and f"kill {stalled}" in str(failed.value), str(failed.value)
    monkeypatch.undo()
    os.kill(stalled, signal.SIGCONT)
    again = run_fast(parallel, "database.copy_snapshot")
    assert again["action"] == "copied" and again["process"] == "found running" and again["finished"], again


@pytest.mark.timeout(300)
def test_a_copy_under_a_new_snapshot_empties_the_target_and_starts_over(
    pair: Pair, config: MigrationConfig
) -> None:
    source, target = prepare(pair, config)
    slot, publication = config.database.subscription, config.database.publication
    with exported_snapshot(source, target, slot=slot, publication=publication, log=LOG) as first:
        copy_snapshot(source, target, first, **COPY)
    # The session holding the first snapshot has ended (its slot stays); the source changes meanwhile.
    pair.execute("source", "DELETE FROM audit_log WHERE ctid IN (SELECT ctid FROM audit_log LIMIT 10)")
    pair.execute("source", "UPDATE records SET data = data || '{\"after\": 1}' WHERE id = 42")
    with exported_snapshot(source, target, slot=slot, publication=publication, log=LOG) as second:
        assert second.name != first.name and second.consistent_point != first.consistent_point
        again = copy_snapshot(source, target, second, **COPY)
    assert again.attempt == 1 and again.finished and again.ranges_copied == again.ranges
    assert pair.query(
        "target", "SELECT DISTINCT copied_in_attempt FROM pyairtable_snapshot_copy.copy_range"
    ) == [(1,)]
    assert pair.query("target", "SELECT snapshot FROM pyairtable_snapshot_copy.copy_run") == [(second.name,)]
    assert pair.slots("source") == [slot]
    # Nothing from the first copy is left twice: the target is the source as the second snapshot saw it.
    report = Validator(source, target, chunk_rows=config.database.validation_chunk_rows, log=LOG).run()
    assert report.passed, report.summary()


@pytest.mark.timeout(300)
def test_bad_input_is_refused_by_name_before_the_target_changes(pair: Pair, config: MigrationConfig) -> None:
    source, target = prepare(pair, config)
    slot = config.database.subscription
    publication = config.database.publication
    with (
        pytest.raises(MigrationError, match="publication no_such_publication does not exist on the source"),
        exported_snapshot(source, target, slot=slot, publication="no_such_publication", log=LOG),
    ):
        pass
    assert pair.slots("source") == []
    pair.execute("target", 'DROP TABLE "Record Comments"')
    pair.execute("target", "ALTER TABLE audit_log DROP COLUMN detail")
    pair.execute(
        "target", "INSERT INTO users (id, email, display_name) OVERRIDING SYSTEM VALUE VALUES (1, 'a', 'b')"
    )

    def writers_on_target() -> None:
        raise MigrationError("writers are on the target")

    arguments: dict[str, Any] = {"workers": 2, "split_bytes": SPLIT_BYTES, "log": LOG}
    with exported_snapshot(source, target, slot=slot, publication=publication, log=LOG) as snapshot:
        with pytest.raises(MigrationError, match="writers are on the target"):
            copy_snapshot(
                source, target, snapshot, refuse_if_writers_on_target=writers_on_target, **arguments
            )
        with pytest.raises(MigrationError) as mismatch:
            copy_snapshot(source, target, snapshot, refuse_if_writers_on_target=no_writers, **arguments)
        with pytest.raises(MigrationError, match="workers must be at least 1"):
            copy_snapshot(
                source,
                target,
                snapshot,
                refuse_if_writers_on_target=no_writers,
                **{**arguments, "workers": 0},
            )
    message = str(mismatch.value)
    assert 'table public."Record Comments" does not exist on the target' in message, message
    assert "table public.audit_log on the target lacks column(s) detail" in message, message
    # Refused before anything changed: the target's row is still there, no range was planned.
    assert pair.query("target", "SELECT email FROM users") == [("a",)]
    assert read_progress(target) is None and completed_copy(source, target, slot) is None
    with pytest.raises(MigrationError, match=f"no parallel copy under slot {slot}'s snapshot on the target"):
        create_subscription_on_slot(
            source, target, publication=publication, subscription=slot, slot=slot, log=LOG
        )
    # The session that exported the snapshot has ended: the copy cannot go on under it.
    with pytest.raises(
        MigrationError, match=f"snapshot {snapshot.name} of slot {slot} can no longer be imported"
    ):
        copy_snapshot(source, target, snapshot, refuse_if_writers_on_target=no_writers, **arguments)


PARALLEL_STEPS = [
    "preflight.check_database",
    "database.copy_schema",
    "database.create_publication",
    "database.copy_snapshot",
    "database.build_deferred_indexes",
    "database.create_subscription",
    "database.wait_initial_sync",
    "database.lag_gate",
    "database.validate_data",
]


@pytest.mark.timeout(600)
def test_the_database_phase_with_initial_copy_parallel_runs_then_runs_again(
    pair: Pair, config: MigrationConfig, tmp_path: Path
) -> None:
    """`database.initial_copy: parallel` as the DAG builds it: its steps in the plan's order, each
    task run as Airflow runs it, under load; every task run again changes nothing; the target equal
    to the source, every acknowledged write there."""
    pair.reset()
    parallel = parallel_config(config, tmp_path / "copy")
    planned = [t for t in build_plan(parallel).steps if t in PARALLEL_STEPS]
    assert planned == PARALLEL_STEPS
    ledger = tmp_path / "ledger.log"
    load = LoadGenerator(dsn=pair.app_dsn(), db_rate=300, ledger_path=ledger, edge=None, http_rate=0)
    # A deferred key that is its table's replica identity by name (UPDATEs and DELETEs replicate by it).
    pair.execute("source", "ALTER TABLE records REPLICA IDENTITY USING INDEX records_pkey")
    load.start()
    try:
        results = {task_id: run_fast(parallel, task_id) for task_id in PARALLEL_STEPS}
        again = {task_id: run_fast(parallel, task_id) for task_id in PARALLEL_STEPS}
        source_keys = pair.query("source", KEYS)
    finally:
        figures = load.stop()
        pair.execute("source", "ALTER TABLE records REPLICA IDENTITY DEFAULT")
    assert results["database.copy_schema"]["deferred_keys"]
    built = results["database.build_deferred_indexes"]
    assert built["keys"] and built["foreign_keys"] and not built["concurrently"]
    assert again["database.build_deferred_indexes"]["keys"] == []
    assert pair.query("target", KEYS) == source_keys
    assert ("records", "records_pkey", "PRIMARY KEY (id)", "one row per record", True, True) in source_keys
    copied = results["database.copy_snapshot"]
    assert copied["action"] == "copied" and copied["finished"] and copied["rows"] >= pair.records
    assert again["database.copy_snapshot"]["action"] == "verified"
    assert results["database.create_subscription"]["action"] == "created"
    assert again["database.create_subscription"]["action"] == "verified"
    shown = database_status(parallel)["parallel_copy"]  # what `make status` prints
    assert shown.startswith(f"{copied['ranges']}/{copied['ranges']} ranges of ") and shown.endswith(
        "ETA done"
    )
    source, target = hooks(parallel)
    catch_up(source, target, parallel.database.subscription, 60)
    report = validate(source, target, parallel)
    assert report.passed, report.summary()
    assert figures["db_failures"] == 0 and figures["db_commits"] > 0, figures["db_errors"]
    ledger_report = pair.ledger_report("target", ledger)
    assert ledger_report.checked == figures["db_commits"] and ledger_report.lost == 0, ledger_report.summary()
