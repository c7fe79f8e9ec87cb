"""`xlb serve` and `xlb lab`: verbs whose own modules parse their arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .common import CliError


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ..serve import main as serve_main
    except ImportError as exc:
        raise CliError(f"`xlb serve` is not available: {exc}") from None
    return int(serve_main(args.args) or 0)


def cmd_lab(args: argparse.Namespace) -> int:
    from ..lab import main as lab_main

    return int(lab_main(args.args or ["list"]) or 0)


DELEGATES: dict[str, Callable[[argparse.Namespace], int]] = {"serve": cmd_serve, "lab": cmd_lab}


__all__ = ["DELEGATES", "cmd_lab", "cmd_serve"]
