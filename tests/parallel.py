"""`make test`: the suite as two pytest processes side by side, so it ends in about half the time.

The tests marked `real_airflow` (a whole Airflow with scheduler and workers, driven through its
API or a browser) spend their minutes waiting on that Airflow, and they bring their own lab on
free ports and their own Airflow home; they run beside the rest instead of after it. Each
process prints its own summary (the second one's after the first finishes); the exit status is
the worse of the two. Extra arguments go to both, e.g. `python -m tests.parallel -x -k drill`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

# Tests marked `real_airflow` (whole Airflows of their own) or `beside` (placed there to balance).
SIDE = "real_airflow or beside"
NO_TESTS_COLLECTED = 5


def pytest_command(marker_expression: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-m", marker_expression, *extra]


def combined_status(statuses: list[int]) -> int:
    """Failure wins; a side that selected nothing (extra arguments filtered it out) is not one."""
    ran = [status for status in statuses if status != NO_TESTS_COLLECTED]
    if not ran:
        return NO_TESTS_COLLECTED
    return max(ran)


def main(extra: list[str]) -> int:
    with tempfile.TemporaryFile(mode="w+") as output, tempfile.TemporaryDirectory() as airflow_home:
        beside = subprocess.Popen(
            pytest_command(SIDE, extra),
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own metadata database: the two processes never write one SQLite file together.
            env={**os.environ, "PYAIRTABLE_TEST_AIRFLOW_HOME": airflow_home},
        )
        try:
            rest = subprocess.call(pytest_command(f"not ({SIDE})", extra))
        finally:
            real_airflow = beside.wait()
        output.seek(0)
        print(f"\n{'=' * 30} tests marked {SIDE}, run beside the rest {'=' * 30}", flush=True)
        sys.stdout.write(output.read())
    return combined_status([rest, real_airflow])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
