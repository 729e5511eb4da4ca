"""Rollback on a fresh lab under load, after a whole migration to 100 % (the e2e scenario's lab):

  * the emergency path: the rollback DAG with scope `traffic`, from its trigger until every
    weighted record is back on staging and Route53 reports the change INSYNC (goal <= 10 s);
  * the full rollback (scope `all`) from 100 % (the step that set 100 % run again first, as an
    engineer clearing it would), until everything is back on staging (goal <= 5 min, the seed's figure).

In the lab every service is a first deployment (no previous color), so the full rollback's service
steps find nothing to undo: the figure is traffic, poolers, replication and Redis.

Each run is the real DAG under dag.test() (the tasks run one after another in this process, as
the slowest scheduler would order them); both must succeed and lose no acknowledged write.

    PYTHONPATH=plugins:. .venv/bin/python -m benchmarks.bench_rollback
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks.table import Figure, at_most, format_table, note

PHASE = "rollback"
EMERGENCY_GOAL_SECONDS = 10
FULL_GOAL_SECONDS = 300
BACK_TO_100 = "traffic.shift_to_100"


def seconds(run: Any) -> float:
    """From the run's start (its trigger, under dag.test()) to its end."""
    return float((run.end_date - run.start_date).total_seconds())


def figures() -> list[Figure]:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="bench-rollback-airflow-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the figures, not task logs
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    from tests.e2e.scenario import assert_succeeded, scenario
    from tests.e2e.test_migration_and_rollback import assert_nothing_lost, weights

    with scenario("bench_rollback") as lab:
        note("  migrating the lab to 100 % under load ...")
        assert_succeeded(lab.migrate())
        assert weights(lab.status()) == {(100, 0)}
        emergency = lab.rollback(scope="traffic")
        assert_succeeded(emergency)
        assert weights(lab.status()) == {(0, 100)}
        note(
            f"  emergency rollback (scope traffic): {seconds(emergency):.1f} s until every record is on "
            "staging, INSYNC"
        )
        assert_succeeded(lab.migrate([BACK_TO_100], include_upstream=False))
        assert weights(lab.status()) == {(100, 0)}
        full = lab.rollback()
        assert_succeeded(full)
        note(f"  full rollback from 100 %: {seconds(full):.1f} s")
        figures, ledger, sessions, events = lab.finish()
    assert_nothing_lost(figures, ledger, sessions, events)
    note(f"  {ledger.summary()}; {sessions.summary()}; {events.summary()}")
    return [
        at_most(
            PHASE,
            "emergency rollback: trigger -> every record on staging, INSYNC",
            seconds(emergency),
            "s",
            EMERGENCY_GOAL_SECONDS,
        ),
        at_most(PHASE, "full rollback from 100 %", seconds(full), "s", FULL_GOAL_SECONDS),
    ]


def main() -> None:
    print(format_table(figures()))


if __name__ == "__main__":
    main()
