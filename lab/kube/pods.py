"""Pods as real HTTP servers, so latency and errors measured through them are real.

A pod's behaviour comes from its container the way a real image's would: the image tag selects
injected faults (`-neverready`, `-5xx`, `-slow`) and the container env configures the rest:
`DATABASE_URL` for the records and users routes, `REDIS_URL` for logins and session writes
(lab.kube.sessions), `KAFKA_BOOTSTRAP` for an event published on each session write and for the
consumer-group members of worker pods (lab.kube.events).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg2
import psycopg2.errors
import psycopg2.extras
import psycopg2.pool
from psycopg2 import sql

from lab.kube.events import EventPublisher, EventSettings, EventsUnavailable, GroupMember
from lab.kube.serving import BackgroundServer, KeepAliveHandler
from lab.kube.sessions import SessionMissing, SessionSettings, SessionStore, StoreUnavailable
from lab.metrics import MetricsRegistry

POD_PORT_ANNOTATION = "lab.pyairtable.io/port"
FAULT_TAGS = frozenset({"neverready", "5xx", "slow"})
USER_ROUTE = "/api/users/:id"
RECORDS_ROUTE = "/api/records"
LOGIN_ROUTE = "/login"
SESSION_ROUTE = "/api/session"


def split_image(image: str) -> tuple[str, str]:
    """`registry:5000/org/name:1.4.0-slow` -> (`registry:5000/org/name`, `1.4.0-slow`); no tag -> `latest`."""
    repository, _, tag = image.partition("@")[0].rpartition(":")
    if not repository or "/" in tag:
        return image.partition("@")[0], "latest"
    return repository, tag


@dataclass(frozen=True)
class PodBehaviour:
    """Who a pod is and how it misbehaves, read once from its pod template."""

    namespace: str
    pod_name: str
    service: str
    color: str
    version: str
    health_path: str
    never_ready: bool
    answers_5xx: bool
    added_latency_seconds: float
    database_url: str | None
    database_pool_size: int
    sessions: SessionSettings | None = None
    events: EventSettings | None = None
    # Why the container cannot start (a missing Secret), as CreateContainerConfigError reports it.
    config_error: str | None = None

    @classmethod
    def from_container(
        cls,
        namespace: str,
        pod_name: str,
        labels: Mapping[str, str],
        container: Mapping[str, Any],
        environment: Mapping[str, str] | None = None,
        config_error: str | None = None,
    ) -> PodBehaviour:
        """`environment` is the resolved one (Secrets included); without it, only literal env values count."""
        env = (
            dict(environment)
            if environment is not None
            else {
                item["name"]: str(item.get("value", ""))
                for item in container.get("env") or []
                if "name" in item
            }
        )
        _, tag = split_image(str(container.get("image", "")))
        faults = {part for part in tag.split("-")[1:] if part in FAULT_TAGS}
        tag_version = "-".join(part for part in tag.split("-") if part not in FAULT_TAGS)
        base_ms = float(env.get("BASE_LATENCY_MS", "2"))
        slow_ms = float(env.get("SLOW_MS", "800")) if "slow" in faults else 0.0
        return cls(
            namespace=namespace,
            pod_name=pod_name,
            service=labels.get("app") or str(container.get("name", "")),
            color=labels.get("color", ""),
            version=labels.get("version") or tag_version,
            health_path=env.get("HEALTH_PATH", "/health"),
            never_ready="neverready" in faults,
            answers_5xx="5xx" in faults,
            added_latency_seconds=(base_ms + slow_ms) / 1000,
            database_url=env.get("DATABASE_URL") or None,
            database_pool_size=int(env.get("DB_POOL_SIZE", "4")),
            sessions=SessionSettings.from_environment(env),
            events=EventSettings.from_environment(env, cluster=namespace),
            config_error=config_error,
        )

    @property
    def can_become_ready(self) -> bool:
        """The kubelet's readiness verdict; decided here, not over HTTP, so `-5xx` pods still roll out."""
        return not self.never_ready and self.config_error is None


class _Reply(Exception):
    """An early HTTP answer from deep inside a route handler."""

    def __init__(self, code: int, body: Mapping[str, Any]) -> None:
        super().__init__(code)
        self.code = code
        self.body = body


def _database_reply(exc: psycopg2.Error) -> _Reply:
    """Map a database error to what a real service would answer."""
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        return _Reply(503, {"error": "database unavailable", "detail": str(exc).strip()[:200]})
    if isinstance(exc, psycopg2.DataError | psycopg2.errors.UndefinedColumn):
        return _Reply(400, {"error": "bad request", "detail": str(exc).strip()[:200]})
    return _Reply(500, {"error": "database error", "detail": str(exc).strip()[:200]})


class RequestMetrics:
    """Request counter and latency histogram, labelled like an instrumented service's."""

    def __init__(self, behaviour: PodBehaviour) -> None:
        self.registry = MetricsRegistry(
            {
                "service": behaviour.service,
                "namespace": behaviour.namespace,
                "color": behaviour.color,
                "version": behaviour.version,
            }
        )
        self._requests = self.registry.counter(
            "pyairtable_http_requests_total", "HTTP requests served, by response code and route."
        )
        self._latency = self.registry.histogram(
            "pyairtable_http_request_duration_seconds", "HTTP request latency, by route."
        )

    def observe(self, route: str, code: int, seconds: float) -> None:
        self._requests.inc({"code": str(code), "route": route})
        self._latency.observe({"route": route}, seconds)

    def render(self) -> str:
        return self.registry.render()


class DatabasePool:
    """A small per-pod connection pool; callers wait for a free connection rather than fail."""

    def __init__(self, url: str, size: int) -> None:
        self._url = url
        self._size = max(1, size)
        self._slots = threading.BoundedSemaphore(self._size)
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pool_lock = threading.Lock()

    def _connections(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = psycopg2.pool.ThreadedConnectionPool(0, self._size, self._url, connect_timeout=3)
            return self._pool

    @contextmanager
    def cursor(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """An autocommit cursor; a connection that failed is closed, not returned to the pool."""
        with self._slots:
            pool = self._connections()
            connection = pool.getconn()
            broken = False
            try:
                connection.autocommit = True
                with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                    yield cursor
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                broken = True
                raise
            finally:
                pool.putconn(connection, close=broken or bool(connection.closed))

    def fetch(self, statement: sql.Composable, values: tuple[Any, ...]) -> list[dict[str, Any]]:
        """Every row the statement returns; a database error becomes the reply a service would send."""
        try:
            with self.cursor() as cursor:
                cursor.execute(statement, values)
                return [dict(row) for row in cursor.fetchall()]
        except psycopg2.Error as exc:
            raise _database_reply(exc) from None

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None


class PodServer:
    """One pod's HTTP server on an ephemeral loopback port, served by its own threads."""

    def __init__(self, behaviour: PodBehaviour, host: str = "127.0.0.1") -> None:
        self.behaviour = behaviour
        self.metrics = RequestMetrics(behaviour)
        self.database = (
            DatabasePool(behaviour.database_url, behaviour.database_pool_size)
            if behaviour.database_url
            else None
        )
        self.sessions = SessionStore(behaviour.sessions) if behaviour.sessions else None
        events = behaviour.events
        self.publisher = EventPublisher(events) if events and events.events_topic else None
        self.member = GroupMember(events, behaviour.pod_name) if events and events.consumer_group else None
        self._server = BackgroundServer(host, 0, _PodRequestHandler, f"pod-{behaviour.pod_name}", self)

    @property
    def port(self) -> int:
        return self._server.address[1]

    def start(self) -> None:
        self._server.start()
        if self.member is not None:
            self.member.start()

    def stop(self) -> None:
        """Stop accepting; requests already being served finish on their own threads."""
        self._server.stop()
        if self.member is not None:
            self.member.stop()
        if self.publisher is not None:
            self.publisher.close()
        if self.database is not None:
            self.database.close()
        if self.sessions is not None:
            self.sessions.close()

    def route_of(self, path: str) -> str:
        """The low-cardinality route label for a request path."""
        if path == self.behaviour.health_path:
            return path
        if path.rstrip("/") == RECORDS_ROUTE:
            return RECORDS_ROUTE
        if path.startswith("/api/users/"):
            return USER_ROUTE
        if path.rstrip("/") in (LOGIN_ROUTE, SESSION_ROUTE):
            return path.rstrip("/")
        return "other"

    def handle(
        self, method: str, target: str, body: bytes, authorization: str = ""
    ) -> tuple[int, Mapping[str, Any]]:
        """Answer one application request (everything but /metrics); `authorization` is the header's value."""
        behaviour = self.behaviour
        time.sleep(behaviour.added_latency_seconds)
        path = urlsplit(target).path
        identity = {
            "service": behaviour.service,
            "version": behaviour.version,
            "color": behaviour.color,
            "pod": behaviour.pod_name,
        }
        if behaviour.answers_5xx:
            return 500, {"error": "injected fault: this image answers 5xx", **identity}
        if path == behaviour.health_path:
            if behaviour.never_ready:
                return 503, {"status": "not ready", **identity}
            return 200, {"status": "ok", "namespace": behaviour.namespace, **identity}
        try:
            if path.rstrip("/") == RECORDS_ROUTE and method in ("GET", "POST"):
                return self._records(method, target, body)
            if path.startswith("/api/users/") and method == "GET":
                return self._user(path.removeprefix("/api/users/"))
            if path.rstrip("/") == LOGIN_ROUTE and method == "POST":
                return self._login(body, identity)
            if path.rstrip("/") == SESSION_ROUTE and method == "POST":
                return self._session_write(authorization, identity)
        except _Reply as reply:
            return reply.code, reply.body
        return 200, {"path": path, "method": method, **identity}

    def _records(self, method: str, target: str, body: bytes) -> tuple[int, Mapping[str, Any]]:
        database = self.database
        if database is None:
            return 200, {"records": [], "source": "static", "service": self.behaviour.service}
        if method == "GET":
            limit_text = parse_qs(urlsplit(target).query).get("limit", ["20"])[0]
            if not limit_text.isdigit():
                raise _Reply(400, {"error": "limit must be a whole number"})
            rows = database.fetch(sql.SQL("SELECT * FROM records LIMIT %s"), (min(int(limit_text), 100),))
            return 200, {"records": rows, "count": len(rows)}
        try:
            fields = json.loads(body or b"{}")
        except ValueError:
            raise _Reply(400, {"error": "the body must be a JSON object"}) from None
        if not isinstance(fields, dict):
            raise _Reply(400, {"error": "the body must be a JSON object"})
        if fields:
            statement = sql.SQL("INSERT INTO records ({}) VALUES ({}) RETURNING *").format(
                sql.SQL(", ").join(sql.Identifier(column) for column in fields),
                sql.SQL(", ").join(sql.Placeholder() for _ in fields),
            )
        else:
            statement = sql.SQL("INSERT INTO records DEFAULT VALUES RETURNING *")
        values = tuple(psycopg2.extras.Json(v) if isinstance(v, dict | list) else v for v in fields.values())
        return 201, {"record": database.fetch(statement, values)[0]}

    def _user(self, user_id: str) -> tuple[int, Mapping[str, Any]]:
        if self.database is None:
            return 200, {"user": {"id": user_id}, "source": "static", "service": self.behaviour.service}
        rows = self.database.fetch(sql.SQL("SELECT * FROM users WHERE id = %s"), (user_id,))
        if not rows:
            return 404, {"error": f"user {user_id} not found"}
        return 200, {"user": rows[0]}

    def _session_store(self) -> SessionStore:
        if self.sessions is None:
            raise _Reply(503, {"error": "no session store"})
        return self.sessions

    def _login(self, body: bytes, identity: Mapping[str, str]) -> tuple[int, Mapping[str, Any]]:
        store = self._session_store()
        try:
            fields = json.loads(body or b"{}")
        except ValueError:
            fields = None
        user = fields.get("user") if isinstance(fields, dict) else None
        if not isinstance(user, str) or not user:
            raise _Reply(400, {"error": 'the body must be {"user": "<id>"}'})
        try:
            token = store.login(user, store.deadline())
        except StoreUnavailable as exc:
            raise _Reply(503, {"error": "session store unavailable", "detail": str(exc)}) from None
        return 201, {"token": token, "user": user, **identity}

    def _session_write(
        self, authorization: str, identity: Mapping[str, str]
    ) -> tuple[int, Mapping[str, Any]]:
        """One acknowledged session write: the session read, the user's request counted, the write made."""
        store = self._session_store()
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Reply(401, {"error": "a bearer token is required"})
        token = token.strip()
        deadline = store.deadline()
        try:
            user = store.session_user(token, deadline)
            rate = store.count_request(user, deadline)
            if rate.count > store.settings.rate_limit:
                raise _Reply(
                    429,
                    {"error": "rate limit exceeded", "rate_count": rate.count, "rate_window": rate.window},
                )
            writes = store.record_write(token, user, deadline)
        except SessionMissing:
            raise _Reply(401, {"error": "session not found"}) from None
        except StoreUnavailable as exc:
            raise _Reply(503, {"error": "session store unavailable", "detail": str(exc)}) from None
        event = {}
        if self.publisher is not None:
            try:
                event = {"event": self.publisher.publish(user)}
            except EventsUnavailable as exc:
                raise _Reply(503, {"error": "events unavailable", "detail": str(exc)}) from None
        return 200, {
            **event,
            "writes": writes,
            "user": user,
            "rate_count": rate.count,
            "rate_window": rate.window,
            "expires_in": store.settings.ttl_seconds,
            **identity,
        }


class _PodRequestHandler(KeepAliveHandler):
    server_version = "pyairtable-lab-pod"

    def _serve(self) -> None:
        pod: PodServer = self.context
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path == "/metrics" and self.command == "GET":
            self._send(200, pod.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8")
            return
        started = time.perf_counter()
        code, reply = pod.handle(self.command, self.path, body, self.headers.get("Authorization", ""))
        payload = json.dumps(reply, default=str).encode()
        pod.metrics.observe(pod.route_of(urlsplit(self.path).path), code, time.perf_counter() - started)
        self._send(code, payload, "application/json")

    def _send(self, code: int, payload: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Pods are silent; their traffic is visible in /metrics."""


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    """Ready condition True and not being deleted: the Endpoints controller's rule."""
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_port(pod: Mapping[str, Any]) -> int | None:
    """The loopback port of the pod's HTTP server, from the annotation the controller sets."""
    raw = (pod["metadata"].get("annotations") or {}).get(POD_PORT_ANNOTATION)
    return int(raw) if raw and raw.isdigit() else None
