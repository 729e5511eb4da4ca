"""`python -m pyairtable_migration.kafka_mirror.mirror_runner`: run one mirror until SIGTERM, spec from the
environment (process.SPEC_VARIABLE), so no address or setting shows in the process list."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from pyairtable_migration.kafka_mirror.mirror import Mirror, MirrorSpec
from pyairtable_migration.kafka_mirror.process import SPEC_VARIABLE


def main() -> int:
    spec = MirrorSpec.from_dict(json.loads(os.environ[SPEC_VARIABLE]))
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
