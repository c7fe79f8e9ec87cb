"""`xlb save` and `xlb apply`: the running configuration as a file, and a
file made the running configuration (a diff, applied VIP by VIP)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import (
    EXIT_OK,
    EXIT_RUNTIME,
    PROG,
    CliError,
    open_balancer,
    refuse_if_daemon,
    resolve_target,
)


def cmd_save(args: argparse.Namespace) -> int:
    from .. import config as cfg

    target = resolve_target(args)
    base = cfg.load(args.base) if args.base else None
    with open_balancer(target) as lb:
        text = cfg.dumps(cfg.from_balancer(lb, base))
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from .. import config as cfg

    wanted = cfg.load(args.file)
    if args.interface is None and args.pin_dir is None:
        args.interface = wanted.settings.interface
        args.pin_dir = wanted.settings.pin_dir
    try:
        target = resolve_target(args)
    except CliError:
        if not args.dry_run:
            raise
        return _plan_for_a_new_data_plane(wanted)
    if not args.dry_run:
        refuse_if_daemon(target, "`xlb apply`")
    with open_balancer(target) as lb:
        cfg.refuse_removing_every_vip(
            lb.vips(), wanted, allowed=args.allow_empty, how_to_allow="pass --allow-empty"
        )
        changes = cfg.diff(cfg.state_of_balancer(lb), cfg.desired_state(wanted))
        if not changes:
            print(f"no changes: {target.name} already runs {args.file}")
            return EXIT_OK
        _print_changes(changes)
        if args.dry_run:
            print(f"{len(changes)} change(s); dry run, nothing applied")
            return EXIT_OK
        failures = cfg.apply(lb, changes)
    for failure in failures:
        print(f"{PROG}: error: {failure}", file=sys.stderr)
    if failures:
        return EXIT_RUNTIME
    print(f"applied {len(changes)} change(s)")
    return EXIT_OK


def _plan_for_a_new_data_plane(wanted: Any) -> int:
    """`apply --dry-run` where no data plane runs: the file is checked and the
    changes a new data plane would get are listed. Needs neither the binding
    nor root, so a config can be checked on any machine."""
    from .. import config as cfg

    changes = cfg.diff(cfg.DataPlaneState(), cfg.desired_state(wanted))
    _print_changes(changes)
    print(f"{len(changes)} change(s) for a new data plane (none is pinned); dry run")
    return EXIT_OK


def _print_changes(changes: list[Any]) -> None:
    for change in changes:
        print(f"{_change_sign(change)} {change}")


def _change_sign(change: Any) -> str:
    name = type(change).__name__
    return {"AddVip": "+", "RemoveVip": "-"}.get(name, "~")


__all__ = ["cmd_apply", "cmd_save"]
