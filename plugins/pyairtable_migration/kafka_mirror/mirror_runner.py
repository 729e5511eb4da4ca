"""`python -m pyairtable_migration.kafka_mirror.mirror_runner`: run one mirror until SIGTERM, its
spec from the environment (pyairtable_migration.detached), so no address shows in the process list."""

from __future__ import annotations

import signal
import sys
import threading
import time

from pyairtable_migration.detached import runner_spec
from pyairtable_migration.kafka_mirror.mirror import Mirror, MirrorSpec


def main() -> int:
    spec = MirrorSpec.from_dict(runner_spec())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    started = time.monotonic()
    print(
        f"mirror {spec.group}: {spec.source_label} -> {spec.target_label}, topics {', '.join(spec.topics)}",
        flush=True,
    )
    stats = Mirror(spec).run(stop)
    print(
        f"mirror {spec.group} stopped after {time.monotonic() - started:.1f} s: {stats.copied} copied, "
        f"{stats.skipped} skipped (from {spec.target_label}), committed {sorted(stats.committed.items())}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
