"""`python -m lab`: the local stand-in for staging and production, as real processes on loopback.

python -m lab up [--scale N]        start (and seed) whatever is not running; safe to repeat
python -m lab status [--resources]  one line per component, checked by connecting; exit 1 if any is down
python -m lab down [--purge]        stop everything, and what an ended test run left; --purge: data too
python -m lab start|stop|restart COMPONENT [--crash]   one component, for fault drills
"""

from __future__ import annotations

import argparse
import sys

from lab.postgres import DEFAULT_SCALE
from lab.processes import LabError
from lab.reaper import reap_orphans
from lab.settings import LabSettings
from lab.supervisor import (
    components,
    down,
    resources,
    restart_component,
    start_component,
    status,
    stop_component,
    up,
)
from pyairtable_migration.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start and seed the lab (idempotent)")
    start.add_argument(
        "--scale", default=str(DEFAULT_SCALE), help="rows in the source's records table (default %(default)s)"
    )
    report = commands.add_parser("status", help="is each component answering?")
    report.add_argument("--resources", action="store_true", help="also the lab's process count and memory")
    stop = commands.add_parser("down", help="stop every lab process")
    stop.add_argument("--purge", action="store_true", help="also delete the lab's data directory")
    names = [item.name for item in components()]
    for verb in ("start", "stop", "restart"):
        one = commands.add_parser(verb, help=f"{verb} one component")
        one.add_argument("component", choices=names)
        if verb == "stop":
            one.add_argument("--crash", action="store_true", help="SIGKILL it instead of a clean stop")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    settings = LabSettings.from_env()
    try:
        if args.command == "up":
            up(settings, args.scale, echo=print)
        elif args.command == "status":
            return print_status(settings, args.resources)
        elif args.command == "down":
            for line in reap_orphans():
                print(f"stopped, left by an ended test run: {line}")
            remaining = down(settings, purge=args.purge, echo=print)
            if remaining:
                return 1
            print("lab down: no lab process and no lab port remains")
        elif args.command == "start":
            print(f"{args.component} running (pid {start_component(args.component, settings)})")
        elif args.command == "stop":
            stop_component(args.component, settings, crash=args.crash)
            print(f"{args.component} {'killed' if args.crash else 'stopped'}")
        else:
            print(f"{args.component} restarted (pid {restart_component(args.component, settings)})")
    except (LabError, ConfigError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


def print_status(settings: LabSettings, with_resources: bool) -> int:
    entries = status(settings)
    for entry in entries:
        pid = f"pid {entry.pid}" if entry.pid else "-"
        print(f"{entry.name:<16} {entry.address:<48} {entry.state:<5} {pid}")
    if with_resources:
        count, rss = resources(settings)
        print(f"{'resources':<16} {count} processes, {rss / 2**20:.0f} MiB resident (RSS sum)")
    return 0 if all(entry.state == "up" for entry in entries) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
