"""The database phase's figures, on a dedicated pair of PostgreSQL clusters (plus PgBouncer) seeded
with BENCH_RECORDS records (default 1,000,000), all in one run:

  * initial sync by the migration (schema copy, logical replication until every table is ready,
    deferred indexes built concurrently) vs `pg_dump -Fc | pg_restore` of the same database
    (goal: ratio <= 1.0);
  * the same with the parallel copy under the slot's exported snapshot instead of the
    subscription's own copy (postgres/snapshot_copy.py), with 2, 4 and 8 workers (goal: ratio <= 0.8
    at 1 M records, <= 0.6 at 10 M); BENCH_REPEATS=N runs pg_dump | pg_restore and these N times in
    turn and gives each ratio's median over the rounds (each round's parallel sync against its own
    pg_dump | pg_restore: the machine's speed drifts between rounds);
  * validation throughput, both sides hashed in parallel (goal: >= 1 M rows/s on 2 cores);
  * the write switchover at 1,000 commits/s through PgBouncer: longest commit gap (goal <= 250 ms),
    failed transactions (goal 0), acknowledged writes lost (goal 0).

    PYTHONPATH=plugins:. .venv/bin/python -m benchmarks.bench_database
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import resource
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.table import Figure, at_least, at_most, format_table, note
from lab import postgres
from lab.ledger import check_ledger
from lab.loadgen import LoadGenerator
from lab.postgres import PostgresCluster
from pyairtable_migration.config import MigrationConfig, load_config
from pyairtable_migration.hooks.database import MigrationPostgresHook
from pyairtable_migration.postgres.snapshot_copy import (
    WORKER_APPLICATION,
    copy_snapshot,
    create_subscription_on_slot,
    exported_snapshot,
)
from pyairtable_migration.postgres.validator import Validator
from tests.database.pair import Pair, running_pair
from tests.database.runner import run_task

PHASE = "database"
RECORDS = int(os.environ.get("BENCH_RECORDS", "1000000"))
SWITCH_RATE = 1000
RESTORE_DATABASE = "bench_restore"
PARALLEL_WORKERS = (2, 4, 8)
REPEATS = max(1, int(os.environ.get("BENCH_REPEATS", "1")))
# The parallel copy's goal against pg_dump | pg_restore on this 2-core machine: 0.6 at 10 M records,
# 0.8 at 1 M (a smaller database spends more of its time on the schema, the slot and the indexes).
PARALLEL_GOAL = 0.6 if RECORDS >= 10_000_000 else 0.8
# records (about 200 MB at a million rows) in a score of ranges: enough for 8 workers to stay busy.
PARALLEL_SPLIT_BYTES = 16 << 20


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Operators log to stdout; the benchmark prints only its figures."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def dump_and_restore(pair: Pair) -> float:
    """`pg_dump -Fc | pg_restore` of the source into a fresh database on the target cluster."""
    with pair.superuser("target") as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {RESTORE_DATABASE}")
        cursor.execute(f"CREATE DATABASE {RESTORE_DATABASE} OWNER migrator")
    cpu_before = clusters_cpu(pair)
    own_before = own_cpu_seconds()
    busy_before = cores_busy()
    seconds = postgres.dump_and_restore(
        pair.settings,
        pair.settings.postgres_source_port,
        pair.settings.postgres_target_port,
        RESTORE_DATABASE,
    )
    busy = busy_share(busy_before)
    cpu = cpu_since(pair, cpu_before)
    note(
        f"  pg_dump -Fc | pg_restore {seconds:.2f} s; CPU: target cluster {cpu['target'][0]:.1f} s (its "
        f"WAL archiving {cpu['target'][1]:.1f} s), source cluster {cpu['source'][0]:.1f} s, pg_dump and "
        f"pg_restore {own_cpu_seconds() - own_before:.1f} s; the machine's cores busy {busy:.0%}"
    )
    with pair.superuser("target") as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE {RESTORE_DATABASE}")
    return seconds


def cluster_cpu_seconds(pair: Pair, side: str) -> tuple[float, float]:
    """CPU seconds a cluster's processes have used, and of them its WAL archiving's: the
    postmaster, its live processes and the children they reaped (the postmaster its ended
    backends, the archiver each `archive_command`, here pgBackRest's archive-push)."""
    pid_file = PostgresCluster(side).data_path(pair.settings) / "postmaster.pid"  # type: ignore[arg-type]
    postmaster = pid_file.read_text().split()[0]
    ticks = archiving = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile
        if pid == postmaster or fields[1] == postmaster:
            ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
        if fields[1] == postmaster and command.startswith(b"postgres: archiver"):
            archiving += int(fields[13]) + int(fields[14])
    per_second = os.sysconf("SC_CLK_TCK")
    return ticks / per_second, archiving / per_second


def clusters_cpu(pair: Pair) -> dict[str, tuple[float, float]]:
    """Each cluster's cluster_cpu_seconds."""
    return {side: cluster_cpu_seconds(pair, side) for side in ("source", "target")}


def cpu_since(pair: Pair, before: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Each cluster's CPU seconds, and its WAL archiving's, since `before` (clusters_cpu)."""
    return {
        side: (used - before[side][0], archiving - before[side][1])
        for side, (used, archiving) in clusters_cpu(pair).items()
    }


def cores_busy() -> tuple[int, int]:
    """Clock ticks every core has spent busy, and in all, since boot (/proc/stat)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def busy_share(before: tuple[int, int]) -> float:
    """The share of every core's time spent busy since `before` (cores_busy)."""
    busy, total = cores_busy()
    return (busy - before[0]) / max(1, total - before[1])


def own_cpu_seconds() -> float:
    """This process's CPU and its ended children's (each range's reader, psql)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


class WaitSampler:
    """What the copy's sessions do, sampled on both clusters every `interval` s while the block
    runs: on a core (no wait event) or waiting, and for what. Where the copy falls short of its CPU
    bound, this says on what it waits."""

    def __init__(self, pair: Pair, interval: float = 0.05) -> None:
        self.pair = pair
        self.interval = interval
        self.samples: dict[str, Counter[str]] = {"source": Counter(), "target": Counter()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="wait-sampler", daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _sample(self) -> None:
        with contextlib.ExitStack() as stack:
            cursors = {
                side: stack.enter_context(self.pair.superuser(side, postgres.DATABASE)).cursor()
                for side in self.samples
            }
            while not self._stop.wait(self.interval):
                for side, cursor in cursors.items():
                    cursor.execute(
                        "SELECT coalesce(wait_event_type || ':' || wait_event, 'on a core') FROM "
                        "pg_stat_activity WHERE application_name = %s AND state = 'active'",
                        (WORKER_APPLICATION,),
                    )
                    self.samples[side].update(event for (event,) in cursor.fetchall())

    def shares(self, side: str, top: int = 4) -> str:
        counts = self.samples[side]
        total = sum(counts.values()) or 1
        return ", ".join(f"{event} {count / total:.0%}" for event, count in counts.most_common(top))


def wait_all_ready(pair: Pair, poll: float = 0.02) -> float:
    started = time.perf_counter()
    while True:
        states = pair.query("target", "SELECT srsubstate FROM pg_subscription_rel")
        if states and all(state == "r" for (state,) in states):
            return time.perf_counter() - started
        time.sleep(poll)


def rest_the_launcher(pair: Pair) -> None:
    """PostgreSQL's logical replication launcher starts apply workers at most once per
    `wal_retrieve_retry_interval` (5 s by default): the parallel syncs just before started some, so a
    subscription created at once would wait for its worker, as a migration (one subscription) never
    does (measured at 1 M records: the first table began copying 5.1 s after CREATE SUBSCRIPTION,
    0.08 s once rested)."""
    ((interval_ms,),) = pair.query(
        "target", "SELECT setting::int FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'"
    )
    time.sleep(interval_ms / 1000)


def migration_sync(pair: Pair, config: MigrationConfig) -> dict[str, float]:
    rest_the_launcher(pair)
    with quiet():
        schema, _ = timed(lambda: run_task(config, "database.copy_schema"))
        run_task(config, "database.create_publication")
        subscribe, _ = timed(lambda: run_task(config, "database.create_subscription"))
    sync = wait_all_ready(pair)
    with quiet():
        indexes, _ = timed(lambda: run_task(config, "database.build_deferred_indexes"))
    return {"schema": schema, "sync": subscribe + sync, "indexes": indexes}


def parallel_sync(pair: Pair, config: MigrationConfig, workers: int) -> dict[str, Any]:
    """Schema, then the parallel copy under the slot's snapshot, deferred indexes, and the
    subscription streaming from the slot: the migration's initial sync with `initial_copy: parallel`
    (the schema copied without the split tables' keys, built with the indexes). The copy's CPU is
    counted per part: the source cluster (COPY out), the target's (COPY in: parsing, the heap, WAL)
    and this process with its readers (psql: relaying the rows)."""
    config = config.model_copy(
        update={
            "database": config.database.model_copy(
                update={"initial_copy": "parallel", "copy_split_bytes": PARALLEL_SPLIT_BYTES}
            )
        }
    )
    source = MigrationPostgresHook(config.database.source_conn_id)
    target = MigrationPostgresHook(config.database.target_conn_id)
    log = logging.getLogger("benchmarks.snapshot_copy")
    slot = config.database.subscription
    with quiet():
        schema, _ = timed(lambda: run_task(config, "database.copy_schema"))
        run_task(config, "database.create_publication")
    cpu_before = clusters_cpu(pair)
    relay_before = own_cpu_seconds()
    busy_before = cores_busy()
    started = time.perf_counter()
    with (
        WaitSampler(pair) as waits,
        exported_snapshot(
            source, target, slot=slot, publication=config.database.publication, log=log
        ) as snapshot,
    ):
        copied = copy_snapshot(
            source,
            target,
            snapshot,
            workers=workers,
            split_bytes=config.database.copy_split_bytes,
            refuse_if_writers_on_target=lambda: None,  # the bench's pooler sends writers to the source
            log=log,
        )
    copy = time.perf_counter() - started
    copy_busy = busy_share(busy_before)
    copy_cpu = cpu_since(pair, cpu_before)
    cpu = {side: used for side, (used, _) in copy_cpu.items()}
    cpu["relay"] = own_cpu_seconds() - relay_before
    cpu_before, busy_before = clusters_cpu(pair), cores_busy()
    with quiet():
        indexes, _ = timed(lambda: run_task(config, "database.build_deferred_indexes"))
    indexes_busy = busy_share(busy_before)
    indexes_cpu = cpu_since(pair, cpu_before)["target"]
    subscribe, _ = timed(
        lambda: create_subscription_on_slot(
            source, target, publication=config.database.publication, subscription=slot, slot=slot, log=log
        )
    )
    return {
        "schema": schema,
        "copy": copy,
        "indexes": indexes,
        "subscribe": subscribe,
        "total": schema + copy + indexes + subscribe,
        "ranges": copied.ranges,
        "rows_per_second": copied.rows / copy,
        "megabytes_per_second": copied.bytes / copy / 1e6,
        **{f"cpu_{part}": seconds for part, seconds in cpu.items()},
        "cpu_archiving": copy_cpu["target"][1],
        # The copy can end no sooner than its CPU spread over every core, all of them busy.
        "cpu_bound": sum(cpu.values()) / (os.cpu_count() or 1),
        "cpu_indexes": indexes_cpu[0],
        "cpu_indexes_archiving": indexes_cpu[1],
        # The same for the copy and the builds: the sync can end no sooner, its other steps aside.
        "sync_cpu_bound": (sum(cpu.values()) + indexes_cpu[0]) / (os.cpu_count() or 1),
        "busy_copy": copy_busy,
        "busy_indexes": indexes_busy,
        "waits": {side: waits.shares(side) for side in ("source", "target")},
    }


def validation(config: MigrationConfig) -> tuple[float, int, float]:
    """Best of three first passes: (rows/s, rows, seconds)."""
    source = MigrationPostgresHook(config.database.source_conn_id)
    target = MigrationPostgresHook(config.database.target_conn_id)
    best = None
    for _ in range(3):
        report = Validator(
            source, target, chunk_rows=config.database.validation_chunk_rows, parallelism=1
        ).run()
        assert report.passed, report.summary()
        if best is None or report.rows_per_second > best.rows_per_second:
            best = report
    assert best is not None
    return best.rows_per_second, best.rows, best.seconds


def switchover(pair: Pair, config: MigrationConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        ledger = Path(directory) / "ledger.log"
        generator = LoadGenerator(
            dsn=pair.app_dsn(), db_rate=SWITCH_RATE, ledger_path=ledger, edge=None, http_rate=0, writers=8
        )
        generator.start()
        time.sleep(3)
        warm = generator.report()
        generator.reset_longest_gap()
        time.sleep(3)
        steady_gap = generator.report()["longest_commit_gap_ms"]
        generator.reset_longest_gap()
        before, window_started = generator.report()["db_commits"], time.perf_counter()
        with quiet():
            summary = run_task(config, "switchover.switch_database", run_id="bench")
        time.sleep(4)
        figures = generator.stop()
        window_seconds = time.perf_counter() - window_started
        connection = pair.connect("target")
        try:
            report = check_ledger(ledger, connection)
        finally:
            connection.close()
    return {
        "stall_ms": summary["write_stall_ms"],
        "gap_ms": figures["longest_commit_gap_ms"],
        "steady_gap_ms": steady_gap,
        "failures": figures["db_failures"],
        "errors": figures["db_errors"][:3],
        "lost": report.lost,
        "checked": report.checked,
        "rate": (figures["db_commits"] - before) / window_seconds,
        "warm_rate": warm["db_commits"] / 3,
    }


def figures() -> list[Figure]:
    logging.disable(logging.CRITICAL)
    config = load_config()
    note(f"  database benchmark: {RECORDS:,} records; {load_average()}")
    started = time.perf_counter()
    with running_pair(RECORDS) as pair:
        note(f"  dedicated clusters up and seeded in {time.perf_counter() - started:.1f} s")
        restores: list[float] = []
        parallel: dict[int, list[dict[str, Any]]] = {workers: [] for workers in PARALLEL_WORKERS}
        for _ in range(REPEATS):
            restores.append(dump_and_restore(pair))
            pair.reset()
            for workers, runs in parallel.items():
                runs.append(parallel_sync(pair, config, workers))
                pair.reset()
        restore = statistics.median(restores)
        sync = migration_sync(pair, config)
        total = sync["schema"] + sync["sync"] + sync["indexes"]
        rounds = "" if REPEATS == 1 else f" (median of {', '.join(f'{r:.2f}' for r in restores)} s)"
        note(f"  initial sync: pg_dump -Fc | pg_restore {restore:.2f} s{rounds}")
        note(
            f"  migration: schema {sync['schema']:.2f} s + replication until every table is ready "
            f"{sync['sync']:.2f} s + deferred indexes {sync['indexes']:.2f} s = {total:.2f} s"
        )
        records = f"{RECORDS:,} records"
        result = [
            Figure(PHASE, f"pg_dump -Fc | pg_restore, {records}", restore, "s"),
            Figure(PHASE, "initial sync by the migration (schema + replication + indexes)", total, "s"),
            at_most(PHASE, "initial sync / dump+restore", total / restore, "", 1.0),
            Figure(
                PHASE, "  replication until every table is ready / dump+restore", sync["sync"] / restore, ""
            ),
        ]
        for workers, runs in parallel.items():
            for number, run in enumerate(runs, 1):
                describe_parallel_sync(workers, run, "" if REPEATS == 1 else f" (round {number})")

            # Each round's sync against that round's pg_dump | pg_restore, the median over the rounds.
            ratio = {
                key: statistics.median(
                    run[key] / baseline for run, baseline in zip(runs, restores, strict=True)
                )
                for key in ("total", "copy", "cpu_bound", "sync_cpu_bound")
            }
            result += [
                at_most(
                    PHASE,
                    f"initial sync, parallel copy ({workers} workers) / dump+restore",
                    ratio["total"],
                    "",
                    PARALLEL_GOAL,
                ),
                Figure(
                    PHASE,
                    f"  parallel copy alone ({workers} workers) / dump+restore",
                    ratio["copy"],
                    "",
                ),
                Figure(
                    PHASE,
                    f"  parallel copy ({workers} workers)",
                    statistics.median(run["rows_per_second"] for run in runs),
                    "rows/s",
                ),
                Figure(
                    PHASE,
                    f"  its CPU on every core ({workers} workers) / dump+restore",
                    ratio["cpu_bound"],
                    "",
                ),
                Figure(
                    PHASE,
                    f"  copy and indexes' CPU on every core ({workers} workers) / dump+restore",
                    ratio["sync_cpu_bound"],
                    "",
                ),
            ]
        rate, rows, seconds = validation(config)
        note(f"  validation: {rows:,} source rows hashed on both sides in {seconds:.2f} s")
        result.append(at_least(PHASE, "validation, both sides hashed", rate, "rows/s", 1_000_000))
        switch = switchover(pair, config)
        note(
            f"  switchover: offered {switch['warm_rate']:.0f} commits/s before, "
            f"{switch['rate']:.0f} commits/s around the flip; longest commit gap in steady state before "
            f"{switch['steady_gap_ms']:.1f} ms"
        )
        note(f"  {switch['checked']:,} acknowledged writes checked; first errors {switch['errors']}")
        during = f"switchover at {SWITCH_RATE:,} commits/s"
        result += [
            Figure(PHASE, f"write stall measured by the operator, {during}", switch["stall_ms"], "ms"),
            at_most(PHASE, f"longest commit gap, {during}", switch["gap_ms"], "ms", 250),
            at_most(PHASE, f"failed transactions, {during}", switch["failures"], "", 0),
            at_most(PHASE, f"acknowledged writes lost, {during}", switch["lost"], "", 0),
        ]
    note(f"  {load_average()}; whole database benchmark {time.perf_counter() - started:.0f} s")
    return result


def describe_parallel_sync(workers: int, run: dict[str, Any], round_label: str) -> None:
    """One parallel sync's timings, CPU and waits, in the benchmark's notes."""
    note(
        f"  parallel copy, {workers} workers{round_label}: schema {run['schema']:.2f} s + copy "
        f"{run['copy']:.2f} s ({run['ranges']} ranges, {run['rows_per_second']:,.0f} rows/s, "
        f"{run['megabytes_per_second']:.1f} MB/s) + deferred indexes {run['indexes']:.2f} s + "
        f"subscription on the slot {run['subscribe']:.2f} s = {run['total']:.2f} s"
    )
    millions = RECORDS / 1e6
    note(
        f"    the copy's CPU: target cluster {run['cpu_target']:.1f} s (its WAL archiving "
        f"{run['cpu_archiving']:.1f} s), source cluster {run['cpu_source']:.1f} s, relaying "
        f"workers {run['cpu_relay']:.1f} s ({run['cpu_target'] / millions:.2f} / "
        f"{run['cpu_source'] / millions:.2f} / {run['cpu_relay'] / millions:.2f} s per million "
        f"records); with every core busy it could end in {run['cpu_bound']:.1f} s at the soonest"
    )
    note(
        f"    the deferred indexes' CPU: target cluster {run['cpu_indexes']:.1f} s (its WAL archiving "
        f"{run['cpu_indexes_archiving']:.1f} s); copy and indexes with every core busy could end in "
        f"{run['sync_cpu_bound']:.1f} s at the soonest"
    )
    note(
        f"    the machine's cores busy: {run['busy_copy']:.0%} of the copy, "
        f"{run['busy_indexes']:.0%} of the deferred indexes"
    )
    note(f"    its sessions, sampled: target {run['waits']['target']}; source {run['waits']['source']}")


def main() -> None:
    print(format_table(figures()))


if __name__ == "__main__":
    main()
