"""`make demo`: the whole migration on a fresh lab, under load, and what happened.

Starts a clean lab, runs the load generator (HTTP through the weighted edge, commits through
the pooler, every acknowledged write in the ledger), runs the migration DAG in apply mode with
`dag.test()`, then prints phase durations, the write stall, failed requests, lost writes, rows
validated and the report's path, and stops the lab. Exits non-zero if the migration failed or
anything was lost.

The lab's config (lab/migration_config.py) shortens waits (bake, cutover TTL, rollback window)
so the run fits in minutes; the records' original 300 s TTL is still waited out. Demo mode answers
no approvals: `require_approvals` is off for this run, and the summary says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import psycopg2

from lab.connections import environment
from lab.ledger import check_ledger
from lab.loadgen import LoadProcess, app_dsn
from lab.migration_config import CONFIG_ENV, LAB_OVERRIDES, lab_config_path
from lab.settings import LabSettings
from lab.supervisor import down, up
from pyairtable_migration.config import load_config


def phase_durations(run: Any) -> dict[str, float]:
    """Each phase's wall time, first task start to last task end, in the order the phases began."""
    spans: dict[str, list[float]] = {}
    for ti in run.get_task_instances():
        if ti.start_date and ti.end_date:
            phase = ti.task_id.split(".", 1)[0]
            span = spans.setdefault(phase, [ti.start_date.timestamp(), ti.end_date.timestamp()])
            span[0], span[1] = min(span[0], ti.start_date.timestamp()), max(span[1], ti.end_date.timestamp())
    by_start = sorted(spans.items(), key=lambda item: item[1][0])
    return {phase: end - start for phase, (start, end) in by_start}


def running_during(run: Any, start: float, end: float) -> list[str]:
    """The tasks that were running at some moment of [start, end] (epoch seconds)."""
    spans = [(ti.task_id, ti.start_date, ti.end_date) for ti in run.get_task_instances()]
    return sorted(
        task_id
        for task_id, began, ended in spans
        if began and ended and began.timestamp() <= end and ended.timestamp() >= start
    )


def find_figure(values: Mapping[str, Any], *names: str) -> Any:
    """The first of `names` found in any task's returned summary (XCom), depth-first."""
    for value in values.values():
        if isinstance(value, Mapping):
            for name in names:
                if name in value:
                    return value[name]
            nested = find_figure(value, *names)
            if nested is not None:
                return nested
    return None


def task_results(run: Any) -> dict[str, Any]:
    results = {}
    for ti in run.get_task_instances():
        try:
            results[ti.task_id] = ti.xcom_pull(task_ids=ti.task_id)
        except Exception:  # a task that returned nothing
            continue
    return results


def run_demo(settings: LabSettings, scale: int, http_rate: float, db_rate: float) -> int:
    started = time.monotonic()
    print("demo: starting a clean lab (previous demo state purged)", flush=True)
    down(settings, purge=True)
    up(settings, scale)
    os.environ.update(environment(settings))
    os.environ[CONFIG_ENV] = str(lab_config_path(settings))
    ledger = settings.data_dir / "demo-ledger.log"
    config = load_config(os.environ[CONFIG_ENV])
    load = LoadProcess(settings, http_rate=http_rate, db_rate=db_rate, ledger_path=ledger)
    load.start()
    print(f"demo: load running ({http_rate:g} req/s through DNS, {db_rate:g} commits/s through PgBouncer)")
    print("demo: approvals are answered automatically in demo mode (require_approvals=false)", flush=True)
    try:
        from pyairtable_migration.builder import build_migration_dag

        dag = build_migration_dag(config, config_path=os.environ[CONFIG_ENV])
        run = dag.test(run_conf={"mode": "apply", "require_approvals": False, "bake_seconds": 15})
    finally:
        figures = load.stop()
    with psycopg2.connect(app_dsn(settings)) as connection:
        ledger_report = check_ledger(ledger, connection)
    connection.close()
    results = task_results(run)
    failed_tasks = sorted(ti.task_id for ti in run.get_task_instances() if ti.state == "failed")

    print("\n=== PyAirtable migration demo ===")
    print(
        f"result:              {run.state}"
        + (f" (failed: {', '.join(failed_tasks)})" if failed_tasks else "")
    )
    for phase, seconds in phase_durations(run).items():
        print(f"  {phase:18} {seconds:7.1f} s")
    print(f"write stall:         {find_figure(results, 'write_stall_ms', 'stall_ms')} ms (switchover)")
    print(
        f"requests:            {figures['http_requests']} sent, {figures['http_failures']} failed, "
        f"by environment {figures['http_by_environment']}"
    )
    gap_ms, gap_end = figures["longest_commit_gap_ms"], figures["longest_commit_gap_ended_at"]
    during = running_during(run, gap_end - gap_ms / 1000, gap_end) if gap_end else []
    print(
        f"commits:             {figures['db_commits']} acknowledged, {figures['db_failures']} failed, "
        f"longest gap {gap_ms:.0f} ms" + (f" (while running: {', '.join(during)})" if during else "")
    )
    print(f"lost writes:         {ledger_report.lost} of {ledger_report.checked} acknowledged (ledger)")
    print(f"rows validated:      {find_figure(results, 'rows_validated', 'rows_compared', 'rows')}")
    print(f"report:              {find_figure(results, 'report_html', 'html', 'report_path')}")
    print(f"demo took {time.monotonic() - started:.0f} s; lab waits: {LAB_OVERRIDES}")
    down(settings, purge=True)  # a migrated lab must not be mistaken for a fresh one by `make test`
    ok = run.state == "success" and ledger_report.lost == 0 and figures["db_failures"] == 0
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=20_000, help="records seeded on the source")
    parser.add_argument("--http-rate", type=float, default=100.0)
    parser.add_argument("--db-rate", type=float, default=200.0)
    args = parser.parse_args(argv)
    return run_demo(LabSettings.from_env(), args.scale, args.http_rate, args.db_rate)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
