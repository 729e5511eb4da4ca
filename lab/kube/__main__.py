"""`python -m lab.kube`: run the emulator until SIGTERM or SIGINT.

python -m lab.kube --port 16443 \\
    --ingress 127.0.0.2=pyairtable-staging --ingress 127.0.0.3=pyairtable-production
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from lab.kube.emulator import IngressRoute, KubeEmulator
from lab.settings import LabSettings


def parse_ingress(text: str, default_port: int) -> IngressRoute:
    """`HOST[:PORT]=NAMESPACE`; the port defaults to the lab's ingress port."""
    address, separator, namespace = text.partition("=")
    if not separator or not address or not namespace:
        raise argparse.ArgumentTypeError(f"expected HOST[:PORT]=NAMESPACE, got {text!r}")
    host, _, port = address.partition(":")
    if port and not port.isdigit():
        raise argparse.ArgumentTypeError(f"bad port in {text!r}")
    return IngressRoute(host, int(port) if port else default_port, namespace)


def build_parser(settings: LabSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab.kube", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--host", default=settings.host, help="API server address (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=settings.kube_api_port, help="API server port (default %(default)s)"
    )
    parser.add_argument(
        "--ingress",
        action="append",
        metavar="HOST[:PORT]=NAMESPACE",
        type=lambda text: parse_ingress(text, settings.ingress_port),
        help="serve NAMESPACE's Services at http://HOST:PORT/<service>/...; repeatable "
        f"(default: {settings.staging_ingress_host}=pyairtable-staging and "
        f"{settings.production_ingress_host}=pyairtable-production on port {settings.ingress_port})",
    )
    parser.add_argument(
        "--pod-ready-delay",
        type=float,
        default=float(os.environ.get("LAB_POD_READY_DELAY", "0.5")),
        help="seconds before a started pod turns Ready (default: $LAB_POD_READY_DELAY or 0.5)",
    )
    parser.add_argument(
        "--state-dir", type=Path, help="also write the emulator's log to STATE_DIR/kube-emulator.log"
    )
    parser.add_argument("--verbose", action="store_true", help="log every API request")
    return parser


def main(argv: list[str]) -> int:
    settings = LabSettings.from_env()
    args = build_parser(settings).parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if args.state_dir is not None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(args.state_dir / "kube-emulator.log"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=handlers,
    )
    ingresses = args.ingress or [
        IngressRoute(settings.staging_ingress_host, settings.ingress_port, "pyairtable-staging"),
        IngressRoute(settings.production_ingress_host, settings.ingress_port, "pyairtable-production"),
    ]
    emulator = KubeEmulator(args.host, args.port, ingresses, pod_ready_delay_seconds=args.pod_ready_delay)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("lab.kube").info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        emulator.start()
    except OSError as exc:
        print(f"kube-emulator: cannot listen: {exc}", file=sys.stderr)
        return 1
    for route in ingresses:
        logging.getLogger("lab.kube").info(
            "ingress http://%s:%d -> namespace %s", route.host, route.port, route.namespace
        )
    print(f"kube-emulator listening on {emulator.url}", flush=True)
    stop_requested.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
