"""DAG file parse time: the real config and generated graphs, as ratios to a one-task DAG.

Goals: real config <= 0.5 s, 500 services <= 3 s (Airflow kills a parse at 30 s by default).
All figures come from one process, after Airflow itself is imported, like the dag-processor.
"""

from __future__ import annotations

import os
import runpy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from benchmarks.table import Figure, at_most, format_table, note
from lab.synthetic_graph import random_acyclic_services, with_services

PHASE = "parse"
REPO_ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = REPO_ROOT / "dags" / "pyairtable_migration.py"

ONE_TASK_DAG = """
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG("one_task", schedule=None):
    EmptyOperator(task_id="only")
"""


def median_seconds(action: Callable[[], object], repeat: int) -> float:
    action()  # warm-up: first-import costs belong to Airflow, not to this DAG
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def parse_dag_file(config_path: Path | None) -> Callable[[], object]:
    def parse() -> object:
        if config_path is None:
            os.environ.pop("PYAIRTABLE_MIGRATION_CONFIG", None)
        else:
            os.environ["PYAIRTABLE_MIGRATION_CONFIG"] = str(config_path)
        return runpy.run_path(str(DAG_FILE))["dag"]

    return parse


def figures() -> list[Figure]:
    with tempfile.TemporaryDirectory() as scratch:
        baseline_file = Path(scratch) / "one_task.py"
        baseline_file.write_text(ONE_TASK_DAG)
        baseline = median_seconds(lambda: runpy.run_path(str(baseline_file)), repeat=20)
        result = [Figure(PHASE, "one-task DAG file (baseline)", baseline * 1000, "ms")]
        cases: list[tuple[str, Path | None, float | None, int]] = [("real config (16 nodes)", None, 0.5, 10)]
        for count, goal in ((100, None), (500, 3.0)):
            generated = Path(scratch) / f"generated_{count}.yaml"
            generated.write_text(yaml.safe_dump(with_services(random_acyclic_services(count, seed=count))))
            cases.append((f"generated, {count} services", generated, goal, 5))
        for label, path, goal, repeat in cases:
            note(f"  parsing the DAG file: {label}")
            seconds = median_seconds(parse_dag_file(path), repeat)
            what = f"DAG file, {label}"
            if goal is None:
                result.append(Figure(PHASE, what, seconds, "s"))
            else:
                result.append(at_most(PHASE, what, seconds, "s", goal))
            result.append(Figure(PHASE, "  same, as a multiple of the one-task DAG", seconds / baseline, "x"))
    os.environ.pop("PYAIRTABLE_MIGRATION_CONFIG", None)
    return result


def main() -> None:
    print(format_table(figures()))


if __name__ == "__main__":
    main()
