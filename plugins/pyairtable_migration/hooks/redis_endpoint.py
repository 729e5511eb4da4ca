"""The Redis write endpoint: HAProxy in TCP mode in front of both Redis servers, moved through its
runtime API as PgBouncer is moved through its admin console.

Both environments' services write to Redis through the endpoint; the switchover moves it, so the
servers never both take writes. The connection (`haproxy`) names the runtime API's host and port
(`stats socket ipv4@<host>:<port> level admin`: over TCP, so a worker on another host reaches it)
and, in its extra, the `backend` whose servers are the Redis servers (default "redis"). Each call
opens one TCP connection, sends one line (several commands separated by `;` run in that order) and
reads the answer until HAProxy closes the connection.

The routing lives in HAProxy's memory only: a restarted HAProxy routes as its config file says
(the source, in the lab) unless it loads a server-state file saved before it stopped (the lab's
component saves one; after a crash there is none). Read `routed_to()` after a restart.

Addresses are HAProxy's: a server's `srv_addr` (the IP its config's name resolved to) and
`srv_port`. An address given to `route_to` matches a server when its port is the same and its host
is that IP or resolves to it (`same_address`), so "localhost" finds 127.0.0.1; `routed_to` returns
HAProxy's form, to be compared with `same_address` rather than `==` when hosts are names.
"""

from __future__ import annotations

import csv
import socket
from dataclasses import dataclass

from pyairtable_migration.hooks.connection import ConnectionHook
from pyairtable_migration.hooks.database import MigrationError

Address = tuple[str, int]
DEFAULT_BACKEND = "redis"
TIMEOUT_SECONDS = 5.0
READY, MAINT = "ready", "maint"
# srv_admin_state's bit for "declared `disabled` in the config": it stays set after `state ready`
# (HAProxy 2.6 reports 4 for such a server, UP/READY), so alone it does not keep connections away.
CONFIG_MAINT = 0x04


@dataclass(frozen=True)
class EndpointServer:
    """One server of the endpoint's backend, as HAProxy reports it."""

    name: str  # HAProxy's server name in the backend
    address: Address
    admin_state: str  # "ready" or "maint" (drain counts as not ready)

    @property
    def routed(self) -> bool:
        """Receives new connections."""
        return self.admin_state == READY

    def __str__(self) -> str:
        return f"{self.name} ({self.address[0]}:{self.address[1]}, {self.admin_state})"


def parse_servers_state(text: str, backend: str) -> list[EndpointServer]:
    """`show servers state` (format version 1) -> the servers of `backend`; ValueError for any other
    text, such as an error answer.

    `srv_admin_state` is HAProxy's bit field of maintenance (forced, inherited, DNS) and drain
    flags: any of them set means no new connection is sent to the server. The config's `disabled`
    bit is not one of them (CONFIG_MAINT).
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "1":
        raise ValueError(f"not a `show servers state` answer: {text.strip()[:300]!r}")
    columns: list[str] = []
    servers = []
    for line in lines[1:]:
        if line.startswith("#"):
            columns = line.lstrip("#").split()
        elif line.strip():
            row = dict(zip(columns, line.split(), strict=False))
            try:
                if row["be_name"] != backend:
                    continue
                admin = READY if int(row["srv_admin_state"]) & ~CONFIG_MAINT == 0 else MAINT
                address = (row["srv_addr"], int(row["srv_port"]))
                servers.append(EndpointServer(row["srv_name"], address, admin))
            except (KeyError, ValueError) as exc:
                raise ValueError(f"unreadable server line {line!r} ({exc!r})") from exc
    return servers


def parse_current_sessions(text: str, backend: str) -> dict[str, int]:
    """`show stat` (CSV) -> the current sessions (`scur`) of each server of `backend`."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"not a `show stat` answer: {text.strip()[:300]!r}")
    rows = csv.DictReader([lines[0][2:], *lines[1:]])
    return {
        row["svname"]: int(row["scur"] or 0)
        for row in rows
        if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def _ips(host: str) -> set[str]:
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return {host}
    return {host} | {str(info[4][0]) for info in found}


def same_address(a: Address, b: Address) -> bool:
    """One port, and hosts that are the same or resolve to a common IP ("localhost", "127.0.0.1")."""
    return a[1] == b[1] and (a[0] == b[0] or bool(_ips(a[0]) & _ips(b[0])))


class RedisEndpointHook(ConnectionHook):
    """HAProxy's runtime API for the Redis write endpoint: which server gets writers, and moving them.

    :param conn_id: `haproxy` connection: host, port of the runtime API; extra `backend`
    """

    conn_type = "haproxy"
    hook_name = "Redis write endpoint (HAProxy runtime API)"

    @property
    def admin_address(self) -> Address:
        connection = self._connection
        if not connection.port:
            raise MigrationError(
                f"connection {self.conn_id!r} names no port: HAProxy's runtime API has no "
                "default one (its `stats socket ipv4@host:port`)"
            )
        return str(connection.host or "localhost"), int(connection.port)

    @property
    def backend(self) -> str:
        return str(self._connection.extra_dejson.get("backend") or DEFAULT_BACKEND)

    def describe(self) -> str:
        host, port = self.admin_address
        return f"{host}:{port} backend {self.backend}"

    def _ask(self, line: str) -> str:
        """Send one line, return the whole answer (HAProxy closes the connection after it)."""
        host, port = self.admin_address
        try:
            with socket.create_connection((host, port), timeout=TIMEOUT_SECONDS) as sock:
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise MigrationError(
                f"the Redis write endpoint's runtime API at {host}:{port} did not answer `{line}`: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return b"".join(chunks).decode(errors="replace")

    def _apply(self, line: str) -> None:
        """A line of commands that answer nothing when they succeed: any answer is an error."""
        answer = self._ask(line).strip()
        if answer:
            raise MigrationError(f"the Redis write endpoint {self.describe()} refused `{line}`: {answer}")

    def servers(self) -> list[EndpointServer]:
        command = f"show servers state {self.backend}"
        answer = self._ask(command)
        try:
            return parse_servers_state(answer, self.backend)
        except ValueError as exc:
            raise MigrationError(f"the Redis write endpoint {self.describe()}: `{command}`: {exc}") from None

    def _current_sessions(self) -> dict[str, int]:
        command = f"show stat {self.backend} 4 -1"  # type 4: servers only
        try:
            return parse_current_sessions(self._ask(command), self.backend)
        except ValueError as exc:
            raise MigrationError(f"the Redis write endpoint {self.describe()}: `{command}`: {exc}") from None

    def routed_to(self) -> Address | None:
        """The address of the one server receiving new connections; None when none does."""
        routed = [server for server in self.servers() if server.routed]
        if len(routed) > 1:
            raise MigrationError(
                f"the Redis write endpoint {self.describe()} routes to {len(routed)} servers at once "
                f"({', '.join(map(str, routed))}): writes split between them; route to one"
            )
        return routed[0].address if routed else None

    def route_to(self, address: Address) -> bool:
        """Send every new connection to the server at `address` and cut the connections open to the
        others (their clients reconnect through the endpoint); whether anything changed.

        One runtime-API line: the others in maintenance first, then the server ready, then their
        sessions shut, so no new connection reaches an old server once it has run. Read back after.
        """
        servers = self.servers()
        host, port = address
        matching = [server for server in servers if same_address(server.address, address)]
        if len(matching) != 1:
            what = "no server" if not matching else f"{len(matching)} servers"
            raise MigrationError(
                f"the Redis write endpoint {self.describe()} has {what} at {host}:{port}; its servers: "
                f"{', '.join(map(str, servers)) or 'none'}"
            )
        new = matching[0]
        others = [server for server in servers if server is not new]
        prefix = f"set server {self.backend}/"
        moves = [f"{prefix}{other.name} state maint" for other in others if other.routed]
        if not new.routed:
            moves.append(f"{prefix}{new.name} state ready")
        if moves:
            cut = [other.name for other in others]
        else:
            sessions = self._current_sessions()
            cut = [other.name for other in others if sessions.get(other.name, 0) > 0]
            if not cut:
                self.log.info("Redis write endpoint %s already routes to %s only", self.describe(), new)
                return False
        self._apply("; ".join([*moves, *(f"shutdown sessions server {self.backend}/{name}" for name in cut)]))
        after = self.servers()
        if [server.name for server in after if server.routed] != [new.name]:
            raise MigrationError(
                f"the Redis write endpoint {self.describe()} was told to route to {new.name} only, "
                f"and now reads: {', '.join(map(str, after))}"
            )
        self.log.info(
            "Redis write endpoint %s routes to %s; %s; connections to %s cut",
            self.describe(),
            new,
            "; ".join(moves) or "routing unchanged",
            ", ".join(cut) or "no server",
        )
        return True
