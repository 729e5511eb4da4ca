"""`make test`: the suite as three pytest processes side by side, so it ends in about a third of
the time its parts take one after the other.

Most of the long tests spend their minutes waiting (on a whole Airflow's scheduler, a DNS TTL, a
bake time), not computing: the tests marked `real_airflow` (a whole Airflow with scheduler and
workers, driven through its API or a browser) and those marked `beside` (each brings its own lab
on free ports) run in processes of their own, each with its own Airflow home, beside the rest.
The first process prints as it goes; the others' output follows once each has finished; the exit
status is the worst of the three. Extra arguments go to all, e.g. `python -m tests.parallel -x -k drill`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack

# Each process's tests, as a marker expression: every test is in exactly one.
REST = "not (real_airflow or beside)"
BESIDE = ("real_airflow", "beside and not real_airflow")
NO_TESTS_COLLECTED = 5


def pytest_command(marker_expression: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-m", marker_expression, *extra]


def combined_status(statuses: list[int]) -> int:
    """Failure wins; a process that selected nothing (extra arguments filtered it out) is not one."""
    ran = [status for status in statuses if status != NO_TESTS_COLLECTED]
    if not ran:
        return NO_TESTS_COLLECTED
    return max(ran)


def main(extra: list[str]) -> int:
    with ExitStack() as stack:
        started = []
        for expression in BESIDE:
            output = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
            airflow_home = stack.enter_context(tempfile.TemporaryDirectory())
            process = subprocess.Popen(
                pytest_command(expression, extra),
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own metadata database: no two processes write one SQLite file together.
                env={**os.environ, "PYAIRTABLE_TEST_AIRFLOW_HOME": airflow_home},
            )
            started.append((expression, process, output))
        statuses = []
        try:
            statuses.append(subprocess.call(pytest_command(REST, extra)))
        finally:
            for expression, process, output in started:
                statuses.append(process.wait())
                output.seek(0)
                print(f"\n{'=' * 30} tests marked {expression}, run beside the rest {'=' * 30}", flush=True)
                sys.stdout.write(output.read())
    return combined_status(statuses)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
