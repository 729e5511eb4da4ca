"""The load generator: steady HTTP requests through the weighted edge and steady database commits
through the pooler, so every migration step is exercised under the traffic it must not disturb.

Every acknowledged commit goes into the ledger (lab.ledger); failures, the longest gap between
commits (the write stall writers felt) and the share of requests each environment served are
counted and exposed on /metrics for Prometheus.

With users, each logs in through the edge and then writes to its session (Redis, behind the pods)
at a share of the session rate; every acknowledged session write goes into the session ledger
(lab.session_ledger), and a valid token rejected (the session lost) or a rate counter gone back
within its window is counted.

    python -m lab.loadgen --http-rate 200 --db-rate 500 --duration 60
    python -m lab.loadgen --http-rate 0 --db-rate 0 --users 50 --session-rate 200 --duration 60
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from lab.credentials import APP_ROLE, secrets
from lab.edge import Edge, EdgeResult, lab_edge, public_routes
from lab.ledger import DIGEST_SQL, Ledger
from lab.metrics import MetricsRegistry, serve_metrics
from lab.session_ledger import SessionLedger
from lab.settings import LabSettings
from pyairtable_migration.config import load_config

DATABASE = "pyairtable"

INSERT_SQL = f"INSERT INTO records (table_id, data) VALUES (%s, %s::jsonb) RETURNING id, {DIGEST_SQL}"
ERROR_SAMPLES = 20
LATENCY_SAMPLES = 20_000
# Past a pod's Redis deadline (5 s), so the pod's own 503 is what a stalled request ends in.
SESSION_TIMEOUT_SECONDS = 10.0
SESSION_WORKERS = 16


class Pacer:
    """Spreads `rate` events per second evenly; after a stall it resumes the rate, without a burst."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self.interval = 1.0 / rate
        self.stop = stop
        self._next = time.monotonic()

    def wait(self) -> bool:
        """Sleep until the next slot; False once stopping."""
        now = time.monotonic()
        if self._next < now - 0.1:
            self._next = now
        delay = self._next - now
        self._next += self.interval
        return not self.stop.wait(delay) if delay > 0 else not self.stop.is_set()


@dataclass
class LoadStats:
    db_commits: int = 0
    db_failures: int = 0
    db_errors: list[str] = field(default_factory=list)
    longest_commit_gap_ms: float = 0.0
    # Wall-clock time (epoch seconds) the longest gap ended, to find what caused it.
    longest_commit_gap_ended_at: float | None = None
    http_requests: int = 0
    http_failures: int = 0
    http_errors: list[str] = field(default_factory=list)
    http_by_environment: dict[str, int] = field(default_factory=dict)
    http_latencies_ms: list[float] = field(default_factory=list, repr=False)

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.http_latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0

    def report(self) -> dict[str, Any]:
        data = asdict(self)
        del data["http_latencies_ms"]
        data["http_p50_ms"] = round(self.percentile_ms(0.50), 2)
        data["http_p99_ms"] = round(self.percentile_ms(0.99), 2)
        return data


@dataclass
class SimulatedUser:
    """What one user's client knows: its session, and the counts the platform last answered."""

    user_id: str
    client: int
    token: str | None = None
    writes: int = 0
    rate_window: int | None = None
    rate_count: int = 0


@dataclass
class SessionStats:
    logins_attempted: int = 0
    logins_succeeded: int = 0
    session_writes: int = 0
    # A valid token answered 401: the user's session is gone (the user then logs in again).
    sessions_lost: int = 0
    # An acknowledged `writes` count lower than or equal to one acknowledged before for the same token.
    session_writes_regressed: int = 0
    # A user's rate counter at or below its previous value within the same window.
    rate_counters_reset: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    by_environment: dict[str, dict[str, int]] = field(default_factory=dict)

    def environment(self, name: str) -> dict[str, int]:
        """The figures of the environment that answered, created on its first answer."""
        return self.by_environment.setdefault(
            name, {"requests": 0, "session_writes": 0, "sessions_lost": 0, "failures": 0}
        )

    def sample(self, text: str) -> None:
        if len(self.errors) < ERROR_SAMPLES:
            self.errors.append(text[:300])


class LoadGenerator:
    """Runs database writers, HTTP workers and users' session journeys on threads until stopped."""

    def __init__(
        self,
        *,
        dsn: str | None,
        db_rate: float,
        ledger_path: Path | None,
        edge: Edge | None,
        http_rate: float,
        records: Sequence[str] = (),
        services: Sequence[str] = (),
        http_path: str = "/health",
        writers: int = 4,
        http_workers: int = 16,
        registry: MetricsRegistry | None = None,
        users: int = 0,
        session_rate: float = 0.0,
        session_ledger_path: Path | None = None,
    ) -> None:
        """HTTP requests go to each of `services` in turn (by default the public records' own
        services), each through the public record that fronts it; `users` log in through the edge
        at the first public record's service, then send `session_rate` session writes per second
        between them."""
        if db_rate > 0 and (dsn is None or ledger_path is None):
            raise ValueError("database load needs a DSN and a ledger path")
        if http_rate > 0 and (edge is None or not records):
            raise ValueError("HTTP load needs an edge and at least one public record")
        if users > 0 and (edge is None or not records or session_rate <= 0 or session_ledger_path is None):
            raise ValueError("users need an edge, a public record, a session rate and a session ledger path")
        self.dsn, self.db_rate, self.writers = dsn, db_rate, writers
        self.edge, self.http_rate, self.records, self.http_path = edge, http_rate, list(records), http_path
        self.routes = public_routes(records, services) if records else []
        self.http_workers = http_workers
        self.ledger = Ledger(ledger_path) if ledger_path and db_rate > 0 else None
        self.stats = LoadStats()
        self.session_rate = session_rate
        run = uuid.uuid4().hex[:8]  # user ids of their own, so no other run's rate counters are shared
        self.users = [SimulatedUser(f"user-{run}-{index}", client=index) for index in range(users)]
        self.session_ledger = SessionLedger(session_ledger_path) if session_ledger_path and users else None
        self.session_stats = SessionStats() if users else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_commit: float | None = None
        registry = registry or MetricsRegistry()
        self._commits = registry.counter("lab_loadgen_db_commits_total", "Acknowledged commits.")
        self._db_failures = registry.counter("lab_loadgen_db_failures_total", "Failed transactions.")
        self._http = registry.counter(
            "lab_loadgen_http_requests_total", "HTTP requests by environment, code."
        )
        self._session_requests = registry.counter(
            "lab_loadgen_session_requests_total", "Logins and session writes by environment, step, code."
        )

    def start(self) -> None:
        table_ids = self._table_ids() if self.db_rate > 0 else []
        for index in range(self.writers if self.db_rate > 0 else 0):
            self._spawn(f"writer-{index}", functools.partial(self._write_loop, table_ids, index))
        if self.http_rate > 0:
            tickets: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=max(1, int(self.http_rate)))
            self._spawn("http-pacer", lambda: self._pace_http(tickets))
            for index in range(self.http_workers):
                self._spawn(f"http-{index}", lambda: self._http_loop(tickets))
        if self.users:
            idle: queue.Queue[SimulatedUser] = queue.Queue()
            for user in self.users:
                idle.put(user)
            turns: queue.Queue[SimulatedUser] = queue.Queue()
            self._spawn("session-pacer", lambda: self._pace_sessions(idle, turns))
            for index in range(min(SESSION_WORKERS, len(self.users))):
                self._spawn(f"session-{index}", lambda: self._session_loop(idle, turns))

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        if self.ledger:
            self.ledger.close()
        if self.session_ledger:
            self.session_ledger.close()
        return self.report()

    def report(self) -> dict[str, Any]:
        """The figures; a `sessions` section only when users were asked for."""
        with self._lock:
            data = self.stats.report()
            if self.session_stats is not None:
                data["sessions"] = asdict(self.session_stats)
            return data

    def reset_longest_gap(self) -> None:
        with self._lock:
            self.stats.longest_commit_gap_ms = 0.0
            self.stats.longest_commit_gap_ended_at = None

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"loadgen-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _table_ids(self) -> list[int]:
        with psycopg2.connect(self.dsn) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT id FROM tables ORDER BY id LIMIT 100")
            ids = [row[0] for row in cursor.fetchall()]
        connection.close()
        if not ids:
            raise RuntimeError("the database has no rows in `tables` to attach records to")
        return ids

    def _write_loop(self, table_ids: list[int], writer: int) -> None:
        assert self.ledger is not None
        pacer = Pacer(self.db_rate / self.writers, self._stop)
        connection = None
        sequence = 0
        while pacer.wait():
            sequence += 1
            payload = json.dumps({"writer": writer, "seq": sequence, "at": time.time()})
            try:
                if connection is None:
                    connection = psycopg2.connect(self.dsn, connect_timeout=5)
                with connection.cursor() as cursor:
                    cursor.execute(INSERT_SQL, (table_ids[sequence % len(table_ids)], payload))
                    row_id, digest = cursor.fetchone()
                connection.commit()
            except psycopg2.Error as exc:
                self._db_failed(exc)
                _close_quietly(connection)
                connection = None
                continue
            self.ledger.record(row_id, digest)
            self._committed()
        _close_quietly(connection)

    def _committed(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._last_commit is not None:
                gap_ms = (now - self._last_commit) * 1000
                if gap_ms > self.stats.longest_commit_gap_ms:
                    self.stats.longest_commit_gap_ms = gap_ms
                    self.stats.longest_commit_gap_ended_at = time.time()
            self._last_commit = now
            self.stats.db_commits += 1
        self._commits.inc({})

    def _db_failed(self, exc: psycopg2.Error) -> None:
        with self._lock:
            self.stats.db_failures += 1
            if len(self.stats.db_errors) < ERROR_SAMPLES:
                self.stats.db_errors.append(f"{type(exc).__name__}: {str(exc).strip()}"[:300])
        self._db_failures.inc({})

    def _pace_http(self, tickets: queue.Queue[tuple[str, str]]) -> None:
        pacer = Pacer(self.http_rate, self._stop)
        sent = 0
        while pacer.wait():
            try:
                tickets.put_nowait(self.routes[sent % len(self.routes)])
                sent += 1
            except queue.Full:
                continue  # workers saturated: the offered rate drops, nothing counts as failed

    def _http_loop(self, tickets: queue.Queue[tuple[str, str]]) -> None:
        assert self.edge is not None
        while not self._stop.is_set():
            try:
                record, service = tickets.get(timeout=0.2)
            except queue.Empty:
                continue
            self._counted(self.edge.request(record, self.http_path, service))

    def _counted(self, result: EdgeResult) -> None:
        failed = not 200 <= result.status < 400
        with self._lock:
            stats = self.stats
            stats.http_requests += 1
            stats.http_by_environment[result.environment] = (
                stats.http_by_environment.get(result.environment, 0) + 1
            )
            if len(stats.http_latencies_ms) < LATENCY_SAMPLES:
                stats.http_latencies_ms.append(result.seconds * 1000)
            if failed:
                stats.http_failures += 1
                if len(stats.http_errors) < ERROR_SAMPLES:
                    where = f"{result.environment} {result.record} /{result.service}"
                    stats.http_errors.append(f"{where} {result.status} {result.error}"[:300])
        self._http.inc({"environment": result.environment, "code": str(result.status)})

    def _pace_sessions(self, idle: queue.Queue[SimulatedUser], turns: queue.Queue[SimulatedUser]) -> None:
        """Hand a turn to an idle user each slot: a user never has two requests in flight, so the
        counts it is answered must grow."""
        pacer = Pacer(self.session_rate, self._stop)
        while pacer.wait():
            try:
                turns.put(idle.get_nowait())
            except queue.Empty:
                continue  # every user awaits an answer: the offered rate drops, nothing counts as failed

    def _session_loop(self, idle: queue.Queue[SimulatedUser], turns: queue.Queue[SimulatedUser]) -> None:
        while not self._stop.is_set():
            try:
                user = turns.get(timeout=0.2)
            except queue.Empty:
                continue
            if user.token is None:
                self._login(user)
            else:
                self._session_write(user)
            idle.put(user)

    def _session_request(self, user: SimulatedUser, path: str, **options: Any) -> EdgeResult:
        assert self.edge is not None
        return self.edge.request(
            self.records[0],
            path,
            method="POST",
            client=user.client,
            timeout_seconds=SESSION_TIMEOUT_SECONDS,
            **options,
        )

    def _login(self, user: SimulatedUser) -> None:
        result = self._session_request(user, "/login", json_body={"user": user.user_id})
        token = _json_object(result.body).get("token") if result.status == 201 else None
        with self._lock:
            stats = self._counted_session(result, "login")
            stats.logins_attempted += 1
            if isinstance(token, str) and token:
                stats.logins_succeeded += 1
                user.token, user.writes = token, 0  # the rate counter is the user's: it carries on
            else:
                self._session_failed(stats, "login", result)

    def _session_write(self, user: SimulatedUser) -> None:
        assert user.token is not None and self.session_ledger is not None
        sent_at = time.time()  # the pod refreshes the TTL later: the session outlives sent_at + TTL
        result = self._session_request(
            user, "/api/session", headers={"Authorization": f"Bearer {user.token}"}
        )
        answer = _json_object(result.body)
        counts = [answer.get(key) for key in ("writes", "expires_in", "rate_count", "rate_window")]
        acknowledged = result.status == 200 and all(isinstance(value, int) for value in counts)
        if acknowledged:
            self.session_ledger.record(user.token, int(answer["writes"]), sent_at + int(answer["expires_in"]))
        with self._lock:
            stats = self._counted_session(result, "write")
            if acknowledged:
                self._acknowledged(stats, user, result, answer)
            elif result.status == 401:
                stats.sessions_lost += 1
                stats.environment(result.environment)["sessions_lost"] += 1
                stats.sample(
                    f"{result.environment} session of {user.user_id} lost after {user.writes} writes"
                )
                user.token = None  # the user logs in again
            else:
                self._session_failed(stats, "write", result)

    def _acknowledged(
        self, stats: SessionStats, user: SimulatedUser, result: EdgeResult, answer: dict[str, Any]
    ) -> None:
        """One acknowledged session write; its counts checked against the user's previous ones."""
        writes, window, count = int(answer["writes"]), int(answer["rate_window"]), int(answer["rate_count"])
        stats.session_writes += 1
        stats.environment(result.environment)["session_writes"] += 1
        if writes <= user.writes:
            stats.session_writes_regressed += 1
            stats.sample(f"{result.environment} {user.user_id}: writes {writes} after {user.writes}")
        if window == user.rate_window and count <= user.rate_count:
            stats.rate_counters_reset += 1
            stats.sample(f"{result.environment} {user.user_id}: rate count {count} after {user.rate_count}")
        user.writes, user.rate_window, user.rate_count = writes, window, count

    def _counted_session(self, result: EdgeResult, step: str) -> SessionStats:
        """Count one answer (the caller holds the lock); the stats to add the outcome to."""
        assert self.session_stats is not None
        self.session_stats.environment(result.environment)["requests"] += 1
        self._session_requests.inc(
            {"environment": result.environment, "step": step, "code": str(result.status)}
        )
        return self.session_stats

    @staticmethod
    def _session_failed(stats: SessionStats, step: str, result: EdgeResult) -> None:
        kind = f"{step} {result.status}"
        stats.failures[kind] = stats.failures.get(kind, 0) + 1
        stats.environment(result.environment)["failures"] += 1
        stats.sample(f"{result.environment} {kind} {result.error}")


def _json_object(body: bytes) -> dict[str, Any]:
    """A JSON object answer, or {} for anything else (an HTML error page, a cut-off body)."""
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _close_quietly(connection: Any) -> None:
    if connection is not None:
        with contextlib.suppress(psycopg2.Error):
            connection.close()


def app_dsn(settings: LabSettings) -> str:
    """The platform apps' address: through the pooler, as the application role."""
    password = secrets(settings)[APP_ROLE]
    return f"postgresql://{APP_ROLE}:{password}@{settings.host}:{settings.pgbouncer_port}/{DATABASE}"


class LoadProcess:
    """`python -m lab.loadgen` as a child process: its figures cannot be stalled by the caller's own
    work (an in-process `dag.test()` holding the GIL), and Prometheus scrapes its /metrics."""

    def __init__(
        self,
        settings: LabSettings,
        *,
        http_rate: float,
        db_rate: float,
        ledger_path: Path,
        users: int = 0,
        session_rate: float = 0.0,
    ) -> None:
        """With `users`, their acknowledged session writes go to `session_ledger_path` beside the ledger."""
        self.settings, self.ledger_path = settings, ledger_path
        self.stats_path = ledger_path.with_suffix(".stats.json")
        self.errors_path = ledger_path.with_suffix(".stderr.log")
        self.session_ledger_path = ledger_path.with_suffix(".sessions.log")
        self.command = [
            sys.executable,
            "-m",
            "lab.loadgen",
            f"--http-rate={http_rate}",
            f"--db-rate={db_rate}",
            f"--ledger={ledger_path}",
            f"--stats-file={self.stats_path}",
        ]
        if users:
            self.command += [
                f"--users={users}",
                f"--session-rate={session_rate}",
                f"--session-ledger={self.session_ledger_path}",
            ]
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.ledger_path.unlink(missing_ok=True)
        self.stats_path.unlink(missing_ok=True)
        self.session_ledger_path.unlink(missing_ok=True)
        with self.errors_path.open("w") as errors:
            self.process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.settings.to_environment()},
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first.startswith("load generator running"):
            self.process.kill()
            self.process.wait()
            self.process = None
            said = first.strip() or "no output"
            tail = "\n".join(self.errors_path.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"the load generator did not start: {said}\n{tail}".rstrip())

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then the figures it wrote on its way out."""
        if self.process is None:
            return {}
        self.process.terminate()
        self.process.communicate(timeout=60)
        self.process = None
        return dict(json.loads(self.stats_path.read_text()))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-rate", type=float, default=100.0, help="requests per second (0: none)")
    parser.add_argument("--db-rate", type=float, default=200.0, help="commits per second (0: none)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until SIGTERM")
    parser.add_argument("--ledger", type=Path, help="ledger file (default: .lab/ledger.log)")
    parser.add_argument("--stats-file", type=Path, help="where the final figures go as JSON")
    parser.add_argument("--users", type=int, default=0, help="users who log in and write to their sessions")
    parser.add_argument(
        "--session-rate", type=float, default=50.0, help="session writes per second, all users together"
    )
    parser.add_argument(
        "--session-ledger", type=Path, help="session ledger (default: .lab/session-ledger.log)"
    )
    args = parser.parse_args(argv)
    settings = LabSettings.from_env()
    registry, edge_registry = MetricsRegistry(), MetricsRegistry()
    config = load_config()
    edge = lab_edge(settings, edge_registry) if args.http_rate > 0 or args.users > 0 else None
    generator = LoadGenerator(
        dsn=app_dsn(settings),
        db_rate=args.db_rate,
        ledger_path=args.ledger or settings.data_dir / "ledger.log",
        edge=edge,
        http_rate=args.http_rate,
        records=config.dns.records,
        services=list(config.deployable),
        registry=registry,
        users=args.users,
        session_rate=args.session_rate,
        session_ledger_path=args.session_ledger or settings.data_dir / "session-ledger.log",
    )
    # Prometheus scrapes the edge (what clients saw) and the generator (what it sent) as two jobs.
    servers = [
        serve_metrics(registry, settings.host, settings.loadgen_metrics_port),
        serve_metrics(edge_registry, settings.host, settings.edge_metrics_port),
    ]
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    generator.start()
    users = f", {args.users} users at {args.session_rate:g} session writes/s" if args.users else ""
    print(f"load generator running: {args.http_rate:g} req/s, {args.db_rate:g} commits/s{users}", flush=True)
    stopping.wait(args.duration or None)
    figures = generator.stop()
    for server in servers:
        server.shutdown()
    text = json.dumps(figures, indent=2)
    if args.stats_file:
        args.stats_file.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
