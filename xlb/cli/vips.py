"""`xlb vip` and `xlb real`: direct changes to one VIP or real (refused
while `xlb serve` manages the interface)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..model import SECOND_CHANCE_DEFAULT_S, IPAddress, Real, Vip, VipFlags
from .common import EXIT_OK, CliError, UsageError, open_balancer, refuse_if_daemon, resolve_target

if TYPE_CHECKING:
    from ..balancer import Balancer


def _apply_one(
    lb: Balancer,
    vip: Vip,
    flags: VipFlags,
    ring_size: int,
    reals: Sequence[Real],
    second_chance: float | None = None,
) -> None:
    """Make one VIP exactly so, through config.diff/apply (transactional per
    VIP); `second_chance` None keeps the VIP's window."""
    from .. import config as cfg

    running = cfg.state_of_balancer(lb)
    wanted_vips = dict(running.vips)
    current = running.vips.get(vip)
    if second_chance is None:
        second_chance = current.second_chance if current else SECOND_CHANCE_DEFAULT_S
    wanted_vips[vip] = cfg.VipState(flags, ring_size, tuple(reals), second_chance)
    changes = cfg.diff(running, cfg.DataPlaneState(wanted_vips, None))
    failures = cfg.apply(lb, changes)
    if failures:
        raise CliError(str(failures[0].error))


def cmd_vip(args: argparse.Namespace) -> int:
    from ..balancer import RING_SIZE_DEFAULT

    target = resolve_target(args)
    refuse_if_daemon(target, f"`xlb vip {args.action}`")
    vip: Vip = args.vip
    with open_balancer(target) as lb:
        exists = vip in lb.vips()
        if args.action == "add":
            if exists:
                raise CliError(f"VIP {vip} already exists (change it with `xlb vip edit`)")
            window = SECOND_CHANCE_DEFAULT_S if args.second_chance is None else args.second_chance
            lb.add_vip(
                vip, args.flags or VipFlags.NONE, args.ring_size or RING_SIZE_DEFAULT, window
            )
            print(f"added VIP {vip}")
            return EXIT_OK
        if not exists:
            raise CliError(f"no VIP {vip} on {target.name} (see `xlb list`)")
        changes = (args.flags, args.ring_size, args.second_chance)
        if args.action == "del":
            if any(c is not None for c in changes):
                raise UsageError("`xlb vip del` takes no --flags, --ring-size or --second-chance")
            lb.remove_vip(vip)
            print(f"removed VIP {vip}")
            return EXIT_OK
        if all(c is None for c in changes):
            raise UsageError("`xlb vip edit` needs --flags, --ring-size and/or --second-chance")
        flags = args.flags if args.flags is not None else lb.vip_flags(vip)
        ring_size = args.ring_size if args.ring_size is not None else lb.ring_size(vip)
        resized = ring_size != lb.ring_size(vip)
        _apply_one(lb, vip, flags, ring_size, lb.reals(vip), args.second_chance)
        names = ",".join(flags.names()) or "none"
        note = " (ring rebuilt: the VIP's flows re-selected)" if resized else ""
        window = f"second_chance={lb.second_chance(vip):g}"
        print(f"changed VIP {vip}: flags={names} ring_size={ring_size} {window}{note}")
    return EXIT_OK


def cmd_real(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    refuse_if_daemon(target, f"`xlb real {args.action}`")
    vip: Vip = args.vip
    with open_balancer(target) as lb:
        if vip not in lb.vips():
            raise CliError(f"no VIP {vip} on {target.name} (see `xlb list`)")
        current = {r.address: r for r in lb.reals(vip)}
        address = args.real
        if args.action == "add":
            if address in current:
                raise CliError(f"real {address} is already in VIP {vip} (use `xlb real edit`)")
            weight = 1 if args.weight is None else args.weight
            lb.add_real(vip, Real(address, weight, args.mac, _server_id(args.server_id, None)))
            print(f"added real {address} to {vip} (weight {weight}){_id_note(lb, vip, address)}")
            return EXIT_OK
        if address not in current:
            raise CliError(f"real {address} is not in VIP {vip} (see `xlb list`)")
        if args.action == "del":
            if args.weight is not None or args.mac is not None or args.server_id is not None:
                raise UsageError("`xlb real del` takes no --weight, --mac or --server-id")
            lb.remove_real(vip, address)
            print(f"removed real {address} from {vip}")
            return EXIT_OK
        if args.weight is None and args.mac is None and args.server_id is None:
            raise UsageError("`xlb real edit` needs --weight, --mac and/or --server-id")
        old = current[address]
        new = Real(
            address,
            old.weight if args.weight is None else args.weight,
            old.mac if args.mac is None else args.mac,
            _server_id(args.server_id, old.server_id),
        )
        lb.set_reals(vip, [new if r.address == address else r for r in current.values()])
        drain = " (draining: no new flows)" if new.weight == 0 else ""
        note = _id_note(lb, vip, address)
        print(f"changed real {address} of {vip}: weight {new.weight}{drain}{note}")
    return EXIT_OK


def _server_id(arg: int | str | None, old: int | None) -> int | None:
    """--server-id: absent keeps `old`, "auto" unpins, a number pins."""
    if arg is None:
        return old
    return None if arg == "auto" else int(arg)


def _id_note(lb: Balancer, vip: Vip, address: IPAddress) -> str:
    """ ", QUIC server id N" for a real of a QUIC VIP, else nothing."""
    sid = lb.server_ids(vip).get(address)
    return "" if sid is None else f", QUIC server id {sid} (0x{sid:04x})"


__all__ = ["cmd_real", "cmd_vip"]
