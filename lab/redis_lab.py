"""The two Redis servers: `source` (staging's cache and sessions, seeded) and `target` (empty).

No persistence: the migration replicates (REPLICAOF) or copies keys, and a restarted source is
reseeded. The seed mixes every key type the copy has to handle, with and without TTLs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from lab.processes import Binary, Component, State, apt_hint
from lab.settings import LabSettings

SESSION_TTL_SECONDS = 3600
CACHE_TTL_SECONDS = 600


def answers_ping(client: redis.Redis) -> bool:
    """One PING as a component's probe, the client closed after it: any Redis error (refused,
    still loading, wrong password) means not ready yet, and no connection outlives the probe."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def key_count(records: int) -> int:
    """A few thousand keys at the default scale, capped so a 10M-record lab still seeds in seconds."""
    return min(max(records // 5, 100), 200_000)


class RedisServer(Component):
    binary = Binary(Path("/usr/bin/redis-server"), apt_hint("redis-server"))
    start_timeout_seconds = 15.0
    scheme, address_path = "redis", "/0"

    def __init__(self, role: Literal["source", "target"]) -> None:
        self.role = role
        self.name = f"redis-{role}"

    def port(self, settings: LabSettings) -> int:
        return settings.redis_source_port if self.role == "source" else settings.redis_target_port

    def prepare(self, settings: LabSettings) -> None:
        (settings.data_dir / "redis" / self.role).mkdir(parents=True, exist_ok=True)

    def command(self, settings: LabSettings) -> list[str]:
        return [
            str(self.binary.path),
            "--port",
            str(self.port(settings)),
            "--bind",
            settings.host,
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            # A replica's full sync starts at once: the server's default waits 5 s for more replicas
            # to share the transfer, and the lab has one.
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
            str(settings.data_dir / "redis" / self.role),
            "--logfile",
            "",
        ]

    def client(self, settings: LabSettings, timeout: float = 5) -> redis.Redis:
        return redis.Redis(
            host=settings.host, port=self.port(settings), socket_timeout=timeout, decode_responses=True
        )

    def probe(self, settings: LabSettings) -> bool:
        """PING, once: the client's default retries would make a down server take seconds to report."""
        client = redis.Redis(
            host=settings.host,
            port=self.port(settings),
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        return answers_ping(client)

    def seed(self, settings: LabSettings, scale: int, state: State) -> str | None:
        if self.role == "target":
            return "empty (the migration replicates into it)"
        client = self.client(settings)
        existing = client.dbsize()
        if existing:
            return f"already seeded ({existing} keys)"
        count = key_count(scale)
        with client.pipeline(transaction=False) as pipe:
            for index in range(count):
                kind = index % 10
                if kind < 4:
                    pipe.set(f"session:{index:08x}", f"user:{index % 997}", ex=SESSION_TTL_SECONDS)
                elif kind < 6:
                    pipe.hset(
                        f"user:{index}",
                        mapping={"email": f"user{index}@example.com", "plan": "team", "logins": index % 50},
                    )
                elif kind == 6:
                    pipe.rpush(f"activity:{index}", *(f"record.update:{index + n}" for n in range(5)))
                elif kind == 7:
                    pipe.sadd(f"workspace:{index}:members", *(str(index + n) for n in range(4)))
                elif kind == 8:
                    pipe.zadd(f"leaderboard:{index}", {f"user:{index + n}": n * 10 for n in range(5)})
                else:
                    pipe.set(f"cache:record:{index}", f'{{"id": {index}}}', ex=CACHE_TTL_SECONDS)
                if index % 5000 == 4999:
                    pipe.execute()
            pipe.set("config:feature_flags", '{"ai_assist": true}')
            pipe.execute()
        state.seed["redis_keys"] = count + 1
        return f"seeded {count + 1} keys"
