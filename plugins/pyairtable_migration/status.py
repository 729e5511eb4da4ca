"""Live migration status, read from the systems themselves (not from Airflow).

    python -m pyairtable_migration.status                 # the lab's connections (lab/connections.py)
    python -m pyairtable_migration.status --connections env   # AIRFLOW_CONN_* already in the environment
    python -m pyairtable_migration.status --json

Shows: where each pooler sends writers, replication state and lag in both directions
(forward source -> target, reverse target -> source), the parallel initial copy's progress when
one ran, each Redis server's role, whom it replicates, its offset and whether it carries the
switch marker (so whether Redis was switched), each production service's active color and
version, the DNS weights and TTLs, and for Kafka where each consumer group's workers run and what
each mirror has left to copy. A part that cannot be read says why; the others are still shown.
Exit status 1 when any part could not be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyairtable_migration.config import ConfigError, MigrationConfig, load_config


def database_status(config: MigrationConfig) -> dict[str, Any]:
    from pyairtable_migration.hooks.database import (
        MigrationError,
        MigrationPostgresHook,
        get_slot,
        get_subscription,
    )
    from pyairtable_migration.topology import Pooler, writers

    db = config.database
    source, target = MigrationPostgresHook(db.source_conn_id), MigrationPostgresHook(db.target_conn_id)
    pooler_list = [Pooler.of(p) for p in db.poolers]
    where = writers(pooler_list, source.address[:2], target.address[:2])
    if where.unreadable:
        raise MigrationError("; ".join(f"pooler {endpoint.describe()}" for endpoint in where.unreadable))
    poolers = {}
    for pooler, endpoint in zip(pooler_list, where.seen, strict=True):
        if endpoint.address is None:
            continue
        # Writers waiting with no server connection: the pooler cannot reach where it points.
        serving = pooler.hook.serving(pooler.database)
        poolers[endpoint.name] = {
            "points_at": endpoint.side or f"{endpoint.address[0]}:{endpoint.address[1]}",
            "paused": endpoint.paused,
            "clients_waiting": serving.waiting,
            "server_connections": serving.logged_in,
        }
    directions = {}
    for label, publisher, subscriber, subscription in (
        ("forward (source -> target)", source, target, db.subscription),
        ("reverse (target -> source)", target, source, db.reverse_subscription),
    ):
        with subscriber.cursor() as sub, publisher.cursor() as pub:
            found = get_subscription(sub, subscription)
            slot = get_slot(pub, (found or {}).get("subslotname") or subscription)
        directions[label] = {
            "subscription": subscription,
            "state": "absent" if found is None else "enabled" if found["subenabled"] else "DISABLED",
            "slot_active": None if slot is None else bool(slot["active"]),
            "lag_bytes": None if slot is None else slot["lag_bytes"],
        }
    from pyairtable_migration.postgres.copy_runner import copy_process
    from pyairtable_migration.postgres.snapshot_copy import read_progress

    copied = read_progress(target)
    # The copy's process, if it runs on this host (where its task ran: database.copy_queue's worker).
    copier = copy_process(Path(db.copy_state_dir)).running_pid()
    running = "" if copier is None else f" (copy process running here, pid {copier})"
    return {
        "poolers": poolers,
        "replication": directions,
        **({"parallel_copy": copied.describe() + running} if copied is not None else {}),
    }


def redis_status(config: MigrationConfig) -> dict[str, Any]:
    from pyairtable_migration.hooks.redis_hook import MigrationRedisHook, replication_state, switch_marker

    hooks = {
        "source": MigrationRedisHook(config.redis.source_conn_id),
        "target": MigrationRedisHook(config.redis.target_conn_id),
    }
    names = {hook.address: side for side, hook in hooks.items()}
    result = {}
    for side, hook in hooks.items():
        with hook.client(timeout=5) as client:
            state = replication_state(client)
            marker = switch_marker(client)
        replica = state.role == "slave"
        address = (str(state.master_host), int(state.master_port or 0))
        result[side] = {
            "role": "replica" if replica else "primary",
            "replicates": names.get(address, f"{address[0]}:{address[1]}") if replica else None,
            "link_up": state.link_up if replica else None,
            "offset": state.offset,
            "switched_at": marker,
        }
    if config.redis.endpoint_conn_id:
        from pyairtable_migration.hooks.redis_endpoint import RedisEndpointHook
        from pyairtable_migration.redis.switch import routed_side

        endpoint = RedisEndpointHook(config.redis.endpoint_conn_id)
        try:
            result["endpoint"] = {
                "routes_to": routed_side(endpoint, hooks["source"].address, hooks["target"].address)
            }
        except Exception as exc:
            result["endpoint"] = {"error": str(exc).strip().splitlines()[0]}
    return result


def services_status(config: MigrationConfig) -> dict[str, Any]:
    from pyairtable_migration.hooks.bluegreen import BlueGreenHook

    production = config.environments.production
    states = BlueGreenHook(production.kubernetes_conn_id, production.namespace).read_all_states(
        sorted(config.deployable)
    )
    result = {}
    for name, state in sorted(states.items()):
        color = state.active_color
        active = state.colors.get(color) if color else None
        result[name] = {
            "color": color,
            "image": active.image if active else None,
            "ready": f"{active.rollout.ready}/{active.replicas}" if active else None,
            "wanted": config.deployable[name].image,
        }
    return result


def dns_status(config: MigrationConfig) -> dict[str, Any]:
    from pyairtable_migration.hooks.route53 import Route53WeightsHook

    hook = Route53WeightsHook(aws_conn_id=config.dns.aws_conn_id)
    zone = hook.hosted_zone_id(config.dns.hosted_zone)
    records = hook.weighted_records(zone, config.dns.records)
    return {
        name: {sid: {"weight": r.weight, "ttl": r.ttl} for sid, r in sorted(sets.items())}
        for name, sets in sorted(records.items())
    }


def kafka_status(config: MigrationConfig) -> dict[str, Any]:
    """Each consumer group on both clusters (its state, whether it has offsets there, its workers'
    replicas) and each mirror (running on this host, events left to copy)."""
    kafka = config.kafka
    if kafka is None:
        return {"groups": {}, "mirrors": {}}
    from pyairtable_migration.hooks.bluegreen import BlueGreenHook
    from pyairtable_migration.kafka_mirror.client import committed_offsets, group_state
    from pyairtable_migration.kafka_mirror.connection import bootstrap_of
    from pyairtable_migration.kafka_mirror.groups import mirror_progress
    from pyairtable_migration.kafka_mirror.process import running_pid
    from pyairtable_migration.plan import mirror_state_dirs

    environments = config.environments
    sides = {
        "staging": (bootstrap_of(kafka.source_conn_id), environments.staging),
        "production": (bootstrap_of(kafka.target_conn_id), environments.production),
    }
    groups: dict[str, Any] = {}
    for group, consumer in sorted(kafka.consumer_groups.items()):
        groups[group] = {}
        for side, (bootstrap, environment) in sides.items():
            members = BlueGreenHook(environment.kubernetes_conn_id, environment.namespace).members(
                consumer.deployment
            )
            groups[group][side] = {
                "state": group_state(bootstrap, group),
                "has_offsets": bool(committed_offsets(bootstrap, group)),
                "deployment": consumer.deployment,
                "replicas": None if members is None else members.replicas,
            }
    mirrors: dict[str, Any] = {}
    forward_dir, reverse_dir = mirror_state_dirs(kafka)
    for label, source, mirror_group, state_dir in (
        ("staging -> production", "staging", kafka.mirror_group, forward_dir),
        ("production -> staging", "production", kafka.reverse_mirror_group, reverse_dir),
    ):
        bootstrap = sides[source][0]
        started = bool(committed_offsets(bootstrap, mirror_group))
        here = Path(state_dir).is_dir()
        mirrors[label] = {
            "group": mirror_group,
            "running_pid": running_pid(Path(state_dir)) if here else None,
            "state_dir_here": here,
            "lag": mirror_progress(bootstrap, mirror_group, kafka.topics).total if started else None,
        }
    return {"groups": groups, "mirrors": mirrors}


PARTS: dict[str, Callable[[MigrationConfig], dict[str, Any]]] = {
    "database": database_status,
    "redis": redis_status,
    "services": services_status,
    "dns": dns_status,
    "kafka": kafka_status,
}


def collect(config: MigrationConfig) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for name, part in PARTS.items():
        try:
            status[name] = part(config)
        except Exception as exc:
            status[name] = {
                "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
            }
    return status


def _database_lines(database: dict[str, Any]) -> list[str]:
    lines = [
        f"pooler {name} -> {pooler['points_at']}{' (PAUSED)' if pooler['paused'] else ''}: "
        f"{pooler['clients_waiting']} client(s) waiting, {pooler['server_connections']} server connection(s)"
        for name, pooler in database["poolers"].items()
    ]
    for label, d in database["replication"].items():
        lag = "—" if d["lag_bytes"] is None else f"{d['lag_bytes']} bytes"
        lines.append(f"{label}: subscription {d['subscription']} {d['state']}, lag {lag}")
    if "parallel_copy" in database:
        lines.append(f"parallel initial copy: {database['parallel_copy']}")
    return lines


def _redis_lines(redis: dict[str, Any]) -> list[str]:
    endpoint = redis.get("endpoint")
    lines = (
        []
        if endpoint is None
        else [f"write endpoint -> {endpoint.get('routes_to') or endpoint.get('error')}"]
    )
    for side in ("source", "target"):
        r = redis[side]
        role = (
            f"replica of {r['replicates']} (link {'up' if r['link_up'] else 'DOWN'})"
            if r["role"] == "replica"
            else "primary"
        )
        marker = f", switch marker {r['switched_at']}" if r["switched_at"] else ""
        lines.append(f"{side} {role}, offset {r['offset']}{marker}")
    return lines


def _services_lines(services: dict[str, Any]) -> list[str]:
    lines = []
    for name, s in services.items():
        if s["color"] is None:
            lines.append(f"{name:20} not deployed in production (config: {s['wanted']})")
            continue
        marker = "" if s["image"] == s["wanted"] else f"  (config: {s['wanted']})"
        lines.append(f"{name:20} {s['color']:6} {s['image'] or '—'} ready {s['ready']}{marker}")
    return lines


def _dns_lines(dns: dict[str, Any]) -> list[str]:
    return [
        f"{name}: "
        + (
            ", ".join(f"{sid} weight {v['weight']} ttl {v['ttl']}" for sid, v in sets.items())
            or "no weighted records"
        )
        for name, sets in dns.items()
    ]


def _kafka_lines(kafka: dict[str, Any]) -> list[str]:
    lines = []
    for group, sides in kafka["groups"].items():
        described = [
            f"{side} {g['state']}{'' if g['has_offsets'] else ' (no offsets)'}, {g['deployment']} "
            + ("missing" if g["replicas"] is None else f"x{g['replicas']}")
            for side, g in sides.items()
        ]
        lines.append(f"group {group}: " + "; ".join(described))
    for label, m in kafka["mirrors"].items():
        if m["running_pid"]:
            where = f"running (pid {m['running_pid']})"
        else:
            where = "not running" if m["state_dir_here"] else "not started on this host"
        lag = "never ran" if m["lag"] is None else f"{m['lag']} events left to copy"
        lines.append(f"mirror {label}: {where}, {lag}")
    return lines or ["not configured"]


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
    "database": ("database", _database_lines),
    "redis": ("redis", _redis_lines),
    "services": ("services (production)", _services_lines),
    "dns": ("dns", _dns_lines),
    "kafka": ("kafka", _kafka_lines),
}


def format_status(status: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, (title, describe) in SECTIONS.items():
        part = status[name]
        lines.append(f"== {title} ==")
        lines.extend(
            f"  {line}" for line in ([f"cannot read: {part['error']}"] if "error" in part else describe(part))
        )
    return "\n".join(lines)


CONNECTIONS = ("lab", "env")


def live_status(config: MigrationConfig, connections: str = "env") -> dict[str, Any]:
    """`collect` through the configured connection ids as the environment has them (`env`:
    AIRFLOW_CONN_* or Airflow's own), or through the running lab's (`lab`: put into os.environ first)."""
    if connections == "lab":
        from lab.connections import environment
        from lab.settings import LabSettings

        os.environ.update(environment(LabSettings.from_env(), config))
    return collect(config)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyairtable_migration.status", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="migration.yaml (default: include/migration.yaml)"
    )
    parser.add_argument(
        "--connections",
        choices=CONNECTIONS,
        default="env",
        help="env (default): the configured connection ids as AIRFLOW_CONN_* / Airflow has them; "
        "lab: the running lab's connections",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else load_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    status = live_status(config, args.connections)
    print(json.dumps(status, indent=2, default=str) if args.json else format_status(status))
    return 1 if any("error" in part for part in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
