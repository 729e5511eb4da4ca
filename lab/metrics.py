"""Labelled counters and histograms in Prometheus text format, for the lab's own processes.

The lab's pods, edge and load generator are what Prometheus scrapes; the migration's gates read
those series, so they must look like an instrumented service's (counter + latency histogram).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

LabelKey = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label_text(labels: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{key}="{_escape(value)}"' for key, value in labels)


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help_text = name, help_text
        self._lock = threading.Lock()
        self._values: dict[LabelKey, float] = {}

    def inc(self, labels: Mapping[str, str], amount: float = 1.0) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, labels: Mapping[str, str]) -> float:
        with self._lock:
            return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self, common: LabelKey) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} counter"]
        with self._lock:
            for key, value in sorted(self._values.items()):
                lines.append(f"{self.name}{{{_label_text(common + key)}}} {value:g}")
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.help_text, self.buckets = name, help_text, buckets
        self._lock = threading.Lock()
        self._series: dict[LabelKey, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Mapping[str, str], value: float) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * len(self.buckets), [0.0, 0.0]))
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[index] += 1
            total[0] += value
            total[1] += 1

    def render(self, common: LabelKey) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for key, (counts, (value_sum, count)) in sorted(self._series.items()):
                labels = _label_text(common + key)
                for bound, bucket in zip(self.buckets, counts, strict=True):
                    lines.append(f'{self.name}_bucket{{{labels},le="{bound:g}"}} {bucket}')
                lines.append(f'{self.name}_bucket{{{labels},le="+Inf"}} {count:g}')
                lines.append(f"{self.name}_sum{{{labels}}} {value_sum:.6f}")
                lines.append(f"{self.name}_count{{{labels}}} {count:g}")
        return lines


class MetricsRegistry:
    """The metrics of one process; `common_labels` go on every series (e.g. the pod's identity)."""

    def __init__(self, common_labels: Mapping[str, str] | None = None) -> None:
        self._common: LabelKey = tuple((common_labels or {}).items())
        self._metrics: list[Counter | Histogram] = []

    def counter(self, name: str, help_text: str) -> Counter:
        metric = Counter(name, help_text)
        self._metrics.append(metric)
        return metric

    def histogram(self, name: str, help_text: str) -> Histogram:
        metric = Histogram(name, help_text)
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.render(self._common))
        return "\n".join(lines) + "\n"


def serve_metrics(registry: MetricsRegistry, host: str, port: int) -> ThreadingHTTPServer:
    """Serve GET /metrics on a daemon thread; the caller shuts the server down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = registry.render().encode()
            self.send_response(200 if self.path.startswith("/metrics") else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes every second would drown the log."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True).start()
    return server
