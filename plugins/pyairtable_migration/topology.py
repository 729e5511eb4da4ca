"""Where the writers are: the one answer every step that depends on it reads.

PostgreSQL writers reach a cluster only through the pooler(s): each PgBouncer's SHOW DATABASES row
says where its database goes now, so that row, not the configuration, is the truth. Redis writers
reach a server through the write endpoint (HAProxy), whose routing is the truth in the same way;
without an endpoint they move with the switch marker the Redis target carries once promoted.

`writers()` reads every pooler and classifies what it saw: `source` or `target` when all agree,
`split` when they disagree or one points at neither cluster, `unknown` when one cannot be read or
has no such database. Each caller decides what it tolerates (preflight lists every pooler, the
steps that fill the target refuse once any pooler is on it, the switchover needs all on one side),
but none of them reads the poolers another way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pyairtable_migration.hooks.pgbouncer import PgBouncerHook
from pyairtable_migration.hooks.redis_hook import switch_marker
from pyairtable_migration.redis.switch import Server, WriteEndpoint, side_of

Where = Literal["source", "target", "split", "unknown"]
Address = tuple[str, int]


@dataclass(frozen=True)
class Pooler:
    """One pooler in front of the clusters: its admin console and the pooled database."""

    name: str
    admin_conn_id: str
    database: str

    @classmethod
    def of(cls, pooler: Mapping[str, str] | Any) -> Pooler:
        """From an operator argument ({name, admin_conn_id, database}) or the config's model."""
        if isinstance(pooler, Mapping):
            return cls(pooler["name"], pooler["admin_conn_id"], pooler["database"])
        return cls(pooler.name, pooler.admin_conn_id, pooler.database)

    @cached_property
    def hook(self) -> PgBouncerHook:
        return PgBouncerHook(self.admin_conn_id)


@dataclass(frozen=True)
class Endpoint:
    """What one write endpoint was seen doing: the side it sends writers to (`source`, `target`, or
    None: neither cluster, or unreadable), where it points, paused or not, the switch marker it
    carries (Redis), or why it could not be read (`unreachable`: a failed read, which a retry may
    fix, rather than an answer that lacks the database)."""

    name: str
    side: str | None
    address: Address | None = None
    paused: bool = False
    marker: str | None = None
    error: str | None = None
    unreachable: bool = False

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.name}: {self.error}"
        if self.address is None:
            return f"{self.name}: " + (f"switch marker {self.marker}" if self.marker else "no switch marker")
        where = self.side or f"{self.address[0]}:{self.address[1]}"
        return f"{self.name} -> {where}{' (PAUSED)' if self.paused else ''}"


@dataclass(frozen=True)
class Writers:
    """Where writers go now, and what each endpoint was seen doing."""

    where: Where
    seen: tuple[Endpoint, ...] = ()

    def on(self, side: str) -> list[str]:
        """The endpoints sending writers to `side`."""
        return [endpoint.name for endpoint in self.seen if endpoint.side == side]

    @property
    def unreadable(self) -> list[Endpoint]:
        return [endpoint for endpoint in self.seen if endpoint.error is not None]

    @property
    def switched_at(self) -> str | None:
        """The switch marker's timestamp, when an endpoint carries one (Redis)."""
        return next((endpoint.marker for endpoint in self.seen if endpoint.marker), None)

    def describe(self) -> str:
        return f"writers on {self.where}: " + "; ".join(endpoint.describe() for endpoint in self.seen)


def first_line(exc: BaseException) -> str:
    """An exception's first line, for a one-line problem."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def classify(seen: Sequence[Endpoint]) -> Writers:
    """The verdict over what was seen: one side when every endpoint agrees, `split` when they do
    not (or one points at neither cluster), `unknown` when one could not be read (or none exists)."""
    if not seen or any(endpoint.error is not None for endpoint in seen):
        return Writers("unknown", tuple(seen))
    sides = {endpoint.side for endpoint in seen}
    if sides == {"source"}:
        return Writers("source", tuple(seen))
    if sides == {"target"}:
        return Writers("target", tuple(seen))
    return Writers("split", tuple(seen))


def pooler_endpoint(
    pooler: Pooler, source: Address, target: Address, state: Mapping[str, Any] | None
) -> Endpoint:
    """One pooler's SHOW DATABASES row (None: no such database) as the side it sends writers to."""
    if state is None:
        return Endpoint(pooler.name, None, error=f"has no database {pooler.database} (SHOW DATABASES)")
    address = (str(state["host"]), int(state["port"]))
    side = "source" if address == source else "target" if address == target else None
    return Endpoint(pooler.name, side, address, bool(state["paused"]))


def writers(poolers: Sequence[Pooler], source: Address, target: Address) -> Writers:
    """Where the PostgreSQL writers go: every pooler's admin console read, its database's address
    compared with the source's and the target's (host, port)."""
    seen = []
    for pooler in poolers:
        try:
            state = pooler.hook.database(pooler.database)
        except Exception as exc:
            seen.append(
                Endpoint(
                    pooler.name,
                    None,
                    error=f"admin console {pooler.admin_conn_id} unreachable: {first_line(exc)}",
                    unreachable=True,
                )
            )
            continue
        seen.append(pooler_endpoint(pooler, source, target, state))
    return classify(seen)


def writers_of_redis(source: Server, target: Server, endpoint: WriteEndpoint | None = None) -> Writers:
    """Where the Redis writers go. Through a write endpoint: where it routes (its runtime state is the
    truth; the target's switch marker rides along). Without one, each environment writes its own
    server, and the switch marker on the target is what says production's server took over."""
    marker = switch_marker(target.client)
    if endpoint is None:
        return classify([Endpoint("redis target", "target" if marker else "source", marker=marker)])
    name = f"redis endpoint {endpoint.describe()}"
    try:
        routed = endpoint.routed_to()
    except Exception as exc:
        return classify([Endpoint(name, None, error=f"unreachable: {first_line(exc)}", unreachable=True)])
    if routed is None:
        return classify([Endpoint(name, None, error="routes to no server")])
    return classify([Endpoint(name, side_of(routed, source.address, target.address), routed, marker=marker)])
