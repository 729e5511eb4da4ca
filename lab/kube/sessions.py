"""Users' state in Redis as the platform's services keep it: login sessions and per-user rate limits.

Both environments reach one Redis endpoint, which the migration moves from the source server to
the target at the switchover: while it moves, writes pause, open connections are cut and the old
server answers READONLY. A request rides through that on fresh connections until its deadline,
and only then fails (the pod answers 503), so users see a stall, not an error.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SESSION_PREFIX = "session:"
RATE_PREFIX = "ratelimit:"
# Outlasts the endpoint's write pause (a fraction of a second), so a paused write waits, not fails.
SOCKET_TIMEOUT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 1.0
FIRST_RETRY_DELAY_SECONDS = 0.005  # a move stalls writes ~10 ms: retry soon, then back off
LONGEST_RETRY_DELAY_SECONDS = 0.25
# What the endpoint's move looks like from a client; anything else is a real error.
RIDE_THROUGH = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)

T = TypeVar("T")


def session_key(token: str) -> str:
    return f"{SESSION_PREFIX}{token}"


def rate_key(user: str, window: int) -> str:
    return f"{RATE_PREFIX}{user}:{window}"


@dataclass(frozen=True)
class SessionSettings:
    """Where sessions live and how long a request may wait for them, from a pod's environment."""

    url: str
    ttl_seconds: int = 1800
    rate_window_seconds: int = 60
    rate_limit: int = 100_000
    deadline_seconds: float = 5.0

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> SessionSettings | None:
        """None without `REDIS_URL`: such a pod has no session store."""
        url = env.get("REDIS_URL")
        if not url:
            return None
        return cls(
            url=url,
            ttl_seconds=int(env.get("SESSION_TTL_SECONDS", cls.ttl_seconds)),
            rate_window_seconds=int(env.get("RATE_LIMIT_WINDOW_SECONDS", cls.rate_window_seconds)),
            rate_limit=int(env.get("RATE_LIMIT_PER_WINDOW", cls.rate_limit)),
            deadline_seconds=float(env.get("REDIS_DEADLINE_SECONDS", cls.deadline_seconds)),
        )


class StoreUnavailable(Exception):
    """Redis did not answer within the request's deadline."""


class SessionMissing(Exception):
    """The token names no session (never created, expired, or lost)."""


@dataclass(frozen=True)
class RateCount:
    """This request's place in its user's fixed window."""

    window: int
    count: int


class SessionStore:
    """Sessions and rate counters through one Redis client whose retries this class owns."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        # No retries inside redis-py: its default backs off for seconds, past the request's deadline.
        self._client = redis.Redis.from_url(
            settings.url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )

    def login(self, user: str, deadline: float) -> str:
        """A new session for `user`: its token."""
        token = secrets.token_urlsafe(18)
        key, ttl = session_key(token), self.settings.ttl_seconds

        def create(client: redis.Redis) -> None:
            with client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"user": user, "writes": 0})
                pipe.expire(key, ttl)
                pipe.execute()

        self._call(create, deadline)
        return token

    def session_user(self, token: str, deadline: float) -> str:
        """The session's user; SessionMissing when there is none."""
        user = self._call(lambda client: client.hget(session_key(token), "user"), deadline)
        if user is None:
            raise SessionMissing(token)
        return str(user)

    def count_request(self, user: str, deadline: float) -> RateCount:
        """One more request in the user's current window; the window's key expires with it.

        SET NX EX creates the counter with its expiry and INCR keeps it, in one transaction: a
        retried attempt can count twice, but never leaves a counter without an expiry.
        """
        window_seconds = self.settings.rate_window_seconds
        window = int(time.time() // window_seconds)
        key = rate_key(user, window)

        def increment(client: redis.Redis) -> int:
            with client.pipeline(transaction=True) as pipe:
                pipe.set(key, 0, nx=True, ex=window_seconds)
                pipe.incr(key)
                return int(pipe.execute()[1])

        return RateCount(window, self._call(increment, deadline))

    def record_write(self, token: str, user: str, deadline: float) -> int:
        """HINCRBY `writes` and refresh the TTL atomically; the new count.

        HSETNX keeps the user on the hash should the session expire between the caller's read and
        this write, so a write never leaves a session without its user.
        """
        key, ttl = session_key(token), self.settings.ttl_seconds

        def write(client: redis.Redis) -> int:
            with client.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "user", user)
                pipe.hincrby(key, "writes", 1)
                pipe.expire(key, ttl)
                return int(pipe.execute()[1])

        return self._call(write, deadline)

    def deadline(self) -> float:
        """A request's deadline on the monotonic clock, from now."""
        return time.monotonic() + self.settings.deadline_seconds

    def close(self) -> None:
        self._client.close()

    def _call(self, action: Callable[[redis.Redis], T], deadline: float) -> T:
        """`action`, again on fresh connections while the endpoint moves, until `deadline` (an attempt
        under way then may take one socket timeout more).

        A retried write may have been applied once already: counters then count twice, which only
        ever errs upwards (an acknowledged count is never taken back).
        """
        delay = FIRST_RETRY_DELAY_SECONDS
        while True:
            try:
                return action(self._client)
            except RIDE_THROUGH as exc:
                # Idle connections may still lead to the old server (READONLY): drop them all.
                self._client.connection_pool.disconnect(inuse_connections=False)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from None
                time.sleep(min(delay, remaining))  # the last attempt comes at the deadline
                delay = min(delay * 2, LONGEST_RETRY_DELAY_SECONDS)
