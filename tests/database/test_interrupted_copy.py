"""Interrupted work: a task killed during the initial copy (with its copy worker and the leftovers of
a killed create_subscription), and a switchover whose worker died after its commit point. Running
the task again completes it, and nothing is lost."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.loadgen import LoadGenerator
from pyairtable_migration.config import MigrationConfig
from pyairtable_migration.postgres.switchover import WriteSwitch
from tests.database.pair import Pair
from tests.database.runner import rollback_operator, run, run_task

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True, scope="module")
def clean(pair: Pair) -> Iterator[None]:
    pair.reset()
    yield
    pair.reset()


def _wait_for_sync(config: MigrationConfig) -> None:
    run_task(config, "database.wait_initial_sync")


def copy_workers(pair: Pair) -> list[tuple[int, str]]:
    return [
        (pid, relation)
        for pid, relation in pair.query(
            "target", "SELECT pid, relid::regclass::text FROM pg_stat_subscription WHERE relid IS NOT NULL"
        )
        if pid is not None
    ]


def test_a_task_killed_during_the_initial_copy_completes_when_run_again(
    pair: Pair, config: MigrationConfig
) -> None:
    run_task(config, "database.copy_schema")
    run_task(config, "database.create_publication")
    # Leftovers of a create_subscription killed after the slot was made and some rows copied.
    pair.execute("source", "SELECT pg_create_logical_replication_slot('pyairtable_migration', 'pgoutput')")
    pair.execute(
        "target",
        "INSERT INTO users (id, email, display_name) OVERRIDING SYSTEM VALUE VALUES (1, "
        "'stale@example.com', 'x')",
    )
    created = run_task(config, "database.create_subscription")
    assert created["action"] == "created"
    # Catch the big table while it is being copied.
    deadline = time.monotonic() + 30
    while not any(relation == "records" for _, relation in copy_workers(pair)):
        assert time.monotonic() < deadline, "the copy of records never started"
        time.sleep(0.01)
    # The waiting task, killed (SIGKILL) while it waits ...
    waiting = multiprocessing.get_context("fork").Process(target=_wait_for_sync, args=(config,))
    waiting.start()
    time.sleep(0.5)
    assert waiting.is_alive()
    waiting.kill()
    waiting.join(5)
    assert waiting.exitcode == -9
    # ... and the worker copying records, killed mid-copy.
    killed = [pid for pid, relation in copy_workers(pair) if relation == "records"]
    assert killed, "records was already copied: the test needs a bigger table"
    pair.execute("target", "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (killed,))
    states = dict(pair.query("target", "SELECT srrelid::regclass::text, srsubstate FROM pg_subscription_rel"))
    assert states["records"] != "r"
    # Run again: the copy restarts and completes; nothing is missing or duplicated.
    done = run_task(config, "database.wait_initial_sync")
    assert done["tables"] == 11
    assert pair.query("target", "SELECT count(*) FROM records") == pair.query(
        "source", "SELECT count(*) FROM records"
    )
    assert pair.query("target", "SELECT email FROM users WHERE id = 1") == [("user1@example.com",)]
    assert run_task(config, "database.validate_data")["passed"] is True
    # And the subscription task, run again, verifies rather than duplicates.
    assert run_task(config, "database.create_subscription")["action"] == "verified"
    assert pair.slots("source") == ["pyairtable_migration"]


def test_a_switchover_interrupted_after_its_commit_point_is_completed_by_a_rerun(
    pair: Pair, config: MigrationConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The worker dies right after writers resumed on the target, before reverse replication was
    started: running the task again starts it from the slot made during the freeze, so a rollback
    still loses nothing written on the target meanwhile."""
    ledger = tmp_path / "ledger.log"
    load = LoadGenerator(dsn=pair.app_dsn(), db_rate=200, ledger_path=ledger, edge=None, http_rate=0)
    load.start()
    try:

        def worker_dies(self: WriteSwitch, observed: object) -> None:
            raise RuntimeError("worker died")

        with monkeypatch.context() as patched:
            patched.setattr(WriteSwitch, "_complete", worker_dies)
            with pytest.raises(RuntimeError, match="worker died"):
                run_task(config, "switchover.switch_database")
        assert pair.pooler_port() == pair.settings.postgres_target_port
        assert pair.slots("target") == ["pyairtable_rollback"] and pair.subscriptions("source") == []
        time.sleep(1)  # writers write on the target; only the slot keeps their changes for the source
        summary = run_task(config, "switchover.switch_database")
        assert summary["completed_earlier_attempt"] is True
        assert pair.subscriptions("source") == ["pyairtable_rollback"]
        assert pair.subscriptions("target") == [] and pair.slots("source") == []
        time.sleep(1)
        rollback = rollback_operator(config)
        assert run(rollback, config)["writers_on"] == "source"
        time.sleep(1)
    finally:
        figures = load.stop()
    assert figures["db_failures"] == 0, figures["db_errors"]
    report = pair.ledger_report("source", ledger)
    assert report.checked == figures["db_commits"] and report.lost == 0, report.summary()
