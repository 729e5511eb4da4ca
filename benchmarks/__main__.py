"""`make bench`: every phase's benchmark in order, then one table of figures with their goals.

Progress goes to stderr, the table alone to stdout. A missed goal is reported, not an error (exit
0); a benchmark that crashes prints its error, the others still run, and the exit status is 1.
Each benchmark runs in a fresh interpreter, as when run alone: they set process-wide state
(logging, Airflow connections in os.environ) that must not leak into the next one's figures.

    python -m benchmarks [--only parse|services|traffic|database|backup|kafka|redis|rollback ...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import traceback
from concurrent.futures import ProcessPoolExecutor

from benchmarks.table import Figure, collect, format_table, note

BENCHMARKS = {
    "parse": "benchmarks.bench_parse",
    "services": "benchmarks.bench_services",
    "traffic": "benchmarks.bench_traffic",
    "database": "benchmarks.bench_database",
    "backup": "benchmarks.bench_backup",
    "kafka": "benchmarks.bench_kafka",
    "redis": "benchmarks.bench_redis",
    "rollback": "benchmarks.bench_rollback",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), metavar="NAME", help="run only NAME (repeatable)"
    )
    names = parser.parse_args().only or list(BENCHMARKS)
    figures: list[Figure] = []
    crashed: list[str] = []
    started = time.perf_counter()
    for index, name in enumerate(names, 1):
        note(f"[{index}/{len(names)}] {name} ...")
        began = time.perf_counter()
        try:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                figures += pool.submit(collect, BENCHMARKS[name]).result()
        except Exception as error:
            traceback.print_exception(error)
            crashed.append(name)
            note(f"[{index}/{len(names)}] {name} crashed after {time.perf_counter() - began:.0f} s")
            continue
        note(f"[{index}/{len(names)}] {name} done in {time.perf_counter() - began:.0f} s")
    note(f"all benchmarks: {time.perf_counter() - started:.0f} s\n")
    print(format_table(figures), flush=True)
    if crashed:
        note(f"\ncrashed: {', '.join(crashed)} (their figures are missing above; errors printed earlier)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
