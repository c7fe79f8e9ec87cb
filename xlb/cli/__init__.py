"""The `xlb` command: inspect and change a running data plane, set up reals.

    xlb list                        # VIPs, reals, weights, health (like ipvsadm -Ln)
    xlb list --stats | --rate       # packet/byte totals, or rates
    xlb vip add 10.0.0.1:80/tcp     # direct changes (refused while `xlb serve` runs)
    xlb real add 10.0.0.1:80/tcp 10.0.1.1 --weight 2
    xlb save > lb.toml; xlb apply lb.toml --dry-run
    xlb stats --watch; xlb counters; xlb flows
    xlb top                         # live: rates, new flows, shares, health, drops
    xlb real-setup --vip 10.0.0.1   # on a backend: decap, VIP on lo, sysctls
    xlb doctor                      # what is wrong on this host, in plain words
    xlb serve lb.toml               # the daemon (xlb.service)
    xlb lab cleanup                 # remove what crashed labs left (xlb.lab)
    xlb -Ln [--stats|--rate|-c]     # ipvsadm's listing of the data plane
    xlb import keepalived FILE      # keepalived.conf (or ipvsadm-save -n) as an xlb file

Every command works on the data plane pinned under /sys/fs/bpf/xlb/<iface>
(`--interface/-i`, or `--pin-dir`); it adopts it read-mostly and never
detaches it on exit. A command that finds nothing pinned says so instead of
attaching a new data plane. Reference: docs/cli.md.

The package: `parser` builds the command line; `common` holds what every
verb shares (errors, exit codes, which data plane); one module per verb
family: `show` (list, stats, counters, flows), `top` (the live view),
`vips` (vip, real), `apply` (save, apply), `node`, `importing` (import),
`ipvsadm` (-L), `realsetup`, `doctor`, and `delegates` (serve, lab).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import NotFoundError, XlbError
from .common import (
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    PROG,
    CliError,
    Target,
    UsageError,
    daemon_pid,
    refuse_if_daemon,
    resolve_target,
)
from .delegates import DELEGATES
from .parser import build_ipvsadm_parser, build_parser, is_ipvsadm_list


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATES:  # their own parsers, --help included
        args = argparse.Namespace(args=argv[1:], func=DELEGATES[argv[0]], debug=False)
    elif is_ipvsadm_list(argv):  # xlb -Ln: ipvsadm's habit
        args = build_ipvsadm_parser().parse_args(argv)
    else:
        args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    debug = getattr(args, "debug", False)
    try:
        return func(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `xlb flows | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        return EXIT_OK
    except (XlbError, OSError) as exc:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_RUNTIME


def _one_line(exc: BaseException) -> str:
    """The error as one line, except config files, whose issues are listed."""
    from ..config import ConfigFileError

    if isinstance(exc, ConfigFileError):
        return str(exc)
    if isinstance(exc, PermissionError):
        return f"{exc.strerror}: {exc.filename or ''} (xlb needs root: BPF maps and links)".strip()
    if isinstance(exc, NotFoundError):
        return str(exc)
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first + (" (run with --debug for details)" if len(text) > 1 else "")


__all__ = [
    "CliError",
    "Target",
    "UsageError",
    "build_ipvsadm_parser",
    "build_parser",
    "daemon_pid",
    "is_ipvsadm_list",
    "main",
    "refuse_if_daemon",
    "resolve_target",
]
