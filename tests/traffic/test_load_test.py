"""The load test: real `hey` processes driving a real HTTP server whose services answer as a
healthy, a failing (5xx), a slow and a dead production service would (the lab's e2e runs it against
the lab's production ingress); the operator's verdict names each service and its figure, and plan
mode sends nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from pyairtable_migration.config import load_config
from pyairtable_migration.loadtest.driver import Target, parse_summary
from pyairtable_migration.operators.loadtest import LoadTestOperator
from pyairtable_migration.plan import LOAD_TEST_TASK, build_plan
from tests.traffic.lablib import cutover_config
from tests.validation.test_checks import context

pytestmark = pytest.mark.timeout(120)

# Wide budgets: this server shares the test's process and the machine with the rest of the suite
# (a healthy service's p95 reached 1 s in a full run); only `slow` is meant to breach.
BUDGETS = {"health": 500, "business": 5000}
SLOW_SECONDS = 1.5  # three times the health class's budget, well below business's


class Production(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Answer)
        self.served: dict[str, int] = {}
        self.lock = threading.Lock()


class Answer(BaseHTTPRequestHandler):
    """`/<service>/health`: `broken` answers 500, `slow` after SLOW_SECONDS, `dead` closes the
    connection without an answer, the rest answer 200 at once."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: Production = self.server  # type: ignore[assignment]
        service = self.path.strip("/").split("/", 1)[0]
        with server.lock:
            server.served[service] = server.served.get(service, 0) + 1
        if service == "dead":
            self.close_connection = True
            return
        if service == "slow":
            time.sleep(SLOW_SECONDS)
        code = 500 if service == "broken" else 200
        body = b'{"status": "ok"}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet: hundreds of requests a second."""


@pytest.fixture
def production() -> Iterator[Production]:
    server = Production()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def load_test(url_template: str, services: dict[str, str], rate: float = 200) -> LoadTestOperator:
    return LoadTestOperator(
        task_id=LOAD_TEST_TASK,
        url_template=url_template,
        services={name: (slo_class, "/health") for name, slo_class in services.items()},
        slo_classes=BUDGETS,
        rate=rate,
        duration_seconds=3,
        max_error_ratio=0.01,
        connections_per_service=5,
        request_timeout_seconds=5,
        hey_path="/usr/bin/hey",
    )


def test_a_healthy_production_passes_with_every_service_driven(production: Production) -> None:
    url = f"http://127.0.0.1:{production.server_address[1]}/{{service}}{{path}}"
    services = {"api-gateway": "business", "auth-frontend": "business", "web-bff": "business"}
    figures = load_test(url, services).execute(context())  # type: ignore[arg-type]
    assert figures["failed"] == 0 and figures["error_ratio"] == 0
    assert figures["requests"] == sum(production.served.values()) > 0
    assert set(figures["services"]) == set(services) == set(production.served)
    assert all(s["requests"] > 0 and s["p95_ms"] is not None for s in figures["services"].values())
    assert set(figures["slo_classes"]) == {"business"}


def test_a_failing_a_slow_and_a_dead_service_are_each_named_with_their_figure(production: Production) -> None:
    url = f"http://127.0.0.1:{production.server_address[1]}/{{service}}{{path}}"
    services = {"api-gateway": "business", "broken": "business", "slow": "health", "dead": "business"}
    ctx = context()
    with pytest.raises(AirflowFailException) as refused:
        load_test(url, services).execute(ctx)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "broken: 100.0% of " in message and "HTTP 500" in message, message
    assert "dead: 100.0% of " in message, message
    assert "slow: p95 " in message and ">= 500 ms (health)" in message, message
    assert "api-gateway" not in message, message
    figures = ctx["ti"].pushed["figures"]
    assert figures["services"]["api-gateway"]["failed"] == 0
    assert figures["services"]["dead"]["errors"], figures["services"]["dead"]
    assert figures["services"]["slow"]["p95_ms"] >= SLOW_SECONDS * 1000


def test_plan_mode_sends_nothing(production: Production) -> None:
    url = f"http://127.0.0.1:{production.server_address[1]}/{{service}}{{path}}"
    assert load_test(url, {"api-gateway": "business"}).execute(context("plan")) == {"mode": "plan"}  # type: ignore[arg-type]
    assert production.served == {}


def test_few_answers_take_the_slowest_for_the_percentiles_hey_leaves_empty() -> None:
    """hey prints "0% in 0.0000 secs" for the upper percentiles of a handful of answers."""
    summary = """
Summary:
  Total:	1.0143 secs
  Slowest:	0.0196 secs
  Fastest:	0.0015 secs

Latency distribution:
  10% in 0.0016 secs
  90% in 0.0196 secs
  0% in 0.0000 secs
  0% in 0.0000 secs

Status code distribution:
  [200]	9 responses
  [503]	1 responses

Error distribution:
  [2]	Get "http://127.0.0.1:1/x": dial tcp 127.0.0.1:1: connect: connection refused
"""
    figures = parse_summary(Target("web-bff", "business", "http://x"), summary)
    assert (figures.p95_ms, figures.p99_ms) == (19.6, 19.6)
    assert figures.statuses == {200: 9, 503: 1}
    assert figures.errors == {"connection refused": 2}
    assert (figures.requests, figures.failed) == (12, 3)


def test_the_plan_places_it_before_the_last_step_and_its_approval() -> None:
    assert LOAD_TEST_TASK not in build_plan(cutover_config(2)).steps  # the cutover tests run without it
    shipped = build_plan(load_config())
    assert {("traffic.shift_to_75", LOAD_TEST_TASK), (LOAD_TEST_TASK, "traffic.approve_100")} <= shipped.edges
    arguments = shipped.steps[LOAD_TEST_TASK].arguments
    assert (arguments["rate"], arguments["max_error_ratio"]) == (1000, 0.01)
    assert set(arguments["services"]) == set(load_config().deployable)
    # Its failure moves no user, so it is no reason for traffic.undo to put them back on staging.
    assert shipped.steps["traffic.undo"].arguments["not_undone_for"] == [LOAD_TEST_TASK]
