"""Steady HTTP load through the weighted edge, recording every request (tests.traffic.lablib.load).

    python -m tests.traffic.load_worker --rate 400 --clients 1000 --out requests.json

Settings come from LAB_<FIELD> variables. Prints `running` once started; on SIGTERM stops and
writes {times, environments, statuses, report} (times: when each request was sent, sorted).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from lab.edge import EdgeResult, lab_edge
from lab.loadgen import LoadGenerator
from lab.settings import LabSettings
from pyairtable_migration.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    edge = lab_edge(LabSettings.from_env(), clients=args.clients)
    sent: list[tuple[float, str, int]] = []
    lock = threading.Lock()
    request = edge.request

    def recorded(
        record: str, path: str = "/health", service: str | None = None, **options: Any
    ) -> EdgeResult:
        started = time.time()
        result = request(record, path, service, **options)
        with lock:
            sent.append((started, result.environment, result.status))
        return result

    edge.request = recorded  # type: ignore[method-assign]
    generator = LoadGenerator(
        dsn=None,
        db_rate=0,
        ledger_path=None,
        edge=edge,
        http_rate=args.rate,
        records=load_config().dns.records,
        http_workers=args.workers,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    generator.start()
    print("running", flush=True)
    stopping.wait()
    report: dict[str, Any] = generator.stop()
    sent.sort()
    args.out.write_text(
        json.dumps(
            {
                "times": [s[0] for s in sent],
                "environments": [s[1] for s in sent],
                "statuses": [s[2] for s in sent],
                "report": report,
            }
        )
    )


if __name__ == "__main__":
    main()
