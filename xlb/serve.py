"""`xlb serve`: the daemon's command line.

Kept apart from xlb/service.py so that `xlb serve --check FILE` validates a
configuration with the pure config reader alone: no binding, no root, no
asyncio. Running the daemon imports the service.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import config as cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xlb serve",
        description=(
            "Run the balancer from a TOML file: health checks, reloads (docs/config.md); "
            "a control socket and systemd notifications (docs/deploy.md)."
        ),
    )
    parser.add_argument("config", type=Path, help="the configuration file (TOML)")
    parser.add_argument("--check", action="store_true", help="validate the file and exit")
    parser.add_argument(
        "--teardown", action="store_true", help="on exit, detach the data plane (default: leave it)"
    )
    parser.add_argument("--log-format", choices=("kv", "json"), default="kv")
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    return parser


def check(path: Path) -> int:
    """0 and a one-line summary if the file is valid; 1 and every error if not."""
    try:
        config = cfg.load(path)
    except cfg.ConfigFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(config.vips)} VIPs)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`xlb serve`: 0 after a clean stop (or a valid --check), 1 on an invalid
    file or a failure to start, 2 if another daemon holds the interface."""
    args = build_parser().parse_args(argv)
    if args.check:
        return check(args.config)
    from .service import run_daemon

    return run_daemon(args)


if __name__ == "__main__":
    sys.exit(main())
