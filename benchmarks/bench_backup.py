"""pgBackRest's figures on a production lab of its own (source, target archiving to a local
stanza, PgBouncer pointing at the target) holding BENCH_RECORDS records (default 1,000,000):

  * `pg_dump -Fc | pg_restore` of production into a fresh database: the baseline;
  * a full backup, `pgbackrest verify`, the latest backup restored into a scratch cluster until it
    accepts sessions, and the comparison of that copy with production;
  * recovery to a timestamp taken under load: restore, replay to the target, promote.
Each pgBackRest figure is also given as a ratio to the baseline.

    PYTHONPATH=plugins:. .venv/bin/python -m benchmarks.bench_backup
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.table import Figure, at_most, format_table, note
from lab import postgres
from lab.credentials import MIGRATOR_ROLE
from lab.loadgen import LoadGenerator
from pyairtable_migration.hooks.database import MigrationPostgresHook
from pyairtable_migration.pgbackrest.cluster import RestoredCluster, free_port
from pyairtable_migration.pgbackrest.recovery import check_target, promote, recovery_reached, start_recovery
from pyairtable_migration.pgbackrest.repository import PgBackRest
from pyairtable_migration.pgbackrest.verification import verify_latest_backup
from tests.backup.production import Production, running_production

PHASE = "backup"
RECORDS = int(os.environ.get("BENCH_RECORDS", "1000000"))
BASELINE_DATABASE = "bench_dump_restore"


def dump_and_restore(production: Production) -> float:
    """`pg_dump -Fc | pg_restore` of production into a fresh database on the same cluster."""
    settings = production.settings
    connection = production.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {BASELINE_DATABASE}")
            cursor.execute(f"CREATE DATABASE {BASELINE_DATABASE} OWNER {MIGRATOR_ROLE}")
    finally:
        connection.close()
    seconds = postgres.dump_and_restore(
        settings, settings.postgres_target_port, settings.postgres_target_port, BASELINE_DATABASE
    )
    connection = production.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE {BASELINE_DATABASE}")
    finally:
        connection.close()
    return seconds


def recovery_under_load(production: Production, pgbackrest: PgBackRest) -> tuple[float, float]:
    """Writes before and after T, then production restored to T: (restore + replay + promote s,
    seconds of that spent in pgbackrest restore)."""
    with tempfile.TemporaryDirectory() as directory:
        generator = LoadGenerator(
            dsn=production.app_dsn(),
            db_rate=200,
            ledger_path=Path(directory) / "ledger.log",
            edge=None,
            http_rate=0,
        )
        generator.start()
        try:
            time.sleep(3)
            target = datetime.now(UTC)
            time.sleep(3)
        finally:
            generator.stop()
    pgbackrest.check()  # the WAL after T reaches the repository, as the recovery's check step does
    _, backup = check_target(target.isoformat(), pgbackrest.info(), datetime.now(UTC))
    settings = production.backup
    cluster = RestoredCluster(settings, Path(settings.recovery_dir) / "bench", free_port())
    started = time.perf_counter()
    start_recovery(pgbackrest, cluster, target, backup)
    restored = time.perf_counter()
    while not recovery_reached(cluster.wait_accepting(settings.recovery_timeout_seconds)):
        time.sleep(0.1)
    promote(cluster)
    total = time.perf_counter() - started
    cluster.remove()
    return total, restored - started


def figures() -> list[Figure]:
    logging.disable(logging.CRITICAL)
    load = os.getloadavg()[0]
    note(f"  backup benchmark: {RECORDS:,} records; load average {load:.2f} on {os.cpu_count()} cores")
    began = time.perf_counter()
    with running_production(RECORDS) as production:
        note(f"  production lab up, seeded and loaded in {time.perf_counter() - began:.1f} s")
        pgbackrest = PgBackRest(production.backup)
        baseline = dump_and_restore(production)
        started = time.perf_counter()
        pgbackrest.backup("full", {"pyairtable-run": "bench"})
        backup = time.perf_counter() - started
        latest = pgbackrest.info().latest
        assert latest is not None
        verified = verify_latest_backup(pgbackrest, MigrationPostgresHook(production.backup.target_conn_id))
        assert verified["passed"], verified["differences"]
        scratch = verified["restore_seconds"] + verified["consistent_seconds"]
        recovery, recovery_restore = recovery_under_load(production, pgbackrest)
        note(
            f"  backup {latest.label}: {latest.size_bytes / 1e6:.0f} MB, "
            f"{latest.repository_bytes / 1e6:.0f} MB in the repository; "
            "compare of the scratch copy with production "
            f"{verified['compare']['total_seconds']:.2f} s ({verified['compare']['rows']:,} rows)"
        )
        note(f"  recovery to T: pgbackrest restore {recovery_restore:.2f} s of {recovery:.2f} s")
        records = f"{RECORDS:,} records"
        result = [
            Figure(PHASE, f"pg_dump -Fc | pg_restore (baseline), {records}", baseline, "s"),
            Figure(PHASE, f"pgbackrest full backup, {records}", backup, "s"),
            at_most(PHASE, "  full backup / dump+restore", backup / baseline, "", 1.0),
            Figure(PHASE, "pgbackrest verify (repository read back)", verified["verify_seconds"], "s"),
            Figure(PHASE, "restore to a scratch cluster until it accepts sessions", scratch, "s"),
            at_most(PHASE, "  restore to scratch / dump+restore", scratch / baseline, "", 1.0),
            Figure(
                PHASE, "compare the scratch copy with production", verified["compare"]["total_seconds"], "s"
            ),
            Figure(PHASE, "recovery to a timestamp (restore, replay, promote)", recovery, "s"),
            at_most(PHASE, "  recovery to a timestamp / dump+restore", recovery / baseline, "", 1.0),
        ]
    note(f"  whole backup benchmark {time.perf_counter() - began:.0f} s")
    return result


def main() -> None:
    print(format_table(figures()))


if __name__ == "__main__":
    main()
