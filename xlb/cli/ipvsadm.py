"""`xlb -Ln` and friends: the running data plane listed the way `ipvsadm
-Ln` lists IPVS, for the hands and scripts of people who ran IPVS.

    xlb -Ln                  services and reals: Forward Weight ActiveConn InActConn
    xlb -Ln --stats          Conns InPkts OutPkts InBytes OutBytes
    xlb -Ln --rate           CPS InPPS OutPPS InBPS OutBPS (over --interval)
    xlb -Lnc                 the connection table
    xlb -Ln -t 10.0.0.1:80   one service (-u for UDP)

The columns keep ipvsadm's places and widths; docs/cli.md says what each
means here and which have no meaning (Out*: replies go from the reals
straight to the clients, as with IPVS DR and TUN, so they are 0).
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..model import IPAddress, Vip, format_endpoint
from .common import EXIT_OK, CliError, UsageError, daemon_pid, open_balancer, resolve_target
from .show import Health, daemon_health, vip_snapshot

if TYPE_CHECKING:
    from ..balancer import Balancer
    from ..flows import ConnCounts, ConnSnapshot

#: What ipvsadm options ask that xlb has no answer for.
NO_MEANING = {
    "thresholds": "xlb has no per-real connection thresholds (-x/-y)",
    "persistent_conn": "xlb keeps no persistence templates: persistence is the client-address "
    "hash (no_sport)",
    "timeout": "xlb has no TCP timeouts (TCP flows stay in the connection table until the LRU "
    "needs room); UDP's is balancer.udp_ttl",
    "daemon": "xlb has no connection sync daemon: every node computes the same Maglev ring",
}


def cmd_ipvsadm(args: argparse.Namespace) -> int:
    for option, why in NO_MEANING.items():
        if getattr(args, option):
            raise UsageError(f"--{option.replace('_', '-')}: {why}")
    target = resolve_target(args)
    pid = daemon_pid(target)
    health = daemon_health(target) if pid else Health({}, {})
    with open_balancer(target) as lb:
        only = _only(args, lb)
        if args.connection:
            lines = _connections(lb)
        elif args.rate:
            lines = _rates(lb, health, only, args)
        else:
            lines = _services(lb, health, only, args)
    print(f"xlb {__version__} on {target.name} (pinned at {target.pin_dir})")
    for line in lines:
        print(line)
    return EXIT_OK


def _only(args: argparse.Namespace, lb: Balancer) -> Vip | None:
    service = args.tcp_service or args.udp_service
    if service is None:
        return None
    vip = Vip.parse(f"{service}/{'tcp' if args.tcp_service else 'udp'}")
    if vip not in lb.vips():
        raise CliError(f"no service {vip} (see `xlb -Ln`)")
    return vip


def _sorted_vips(vips: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ipvsadm's order: protocol, address, port."""

    def key(vip: dict[str, Any]) -> tuple[str, int, bytes, int]:
        address = _address(vip["address"])
        return vip["protocol"], address.version, address.packed, vip["port"]

    return sorted(vips, key=key)


def _address(text: str) -> IPAddress:
    from ..model import parse_address

    return parse_address(text)


def _service_name(vip: dict[str, Any]) -> str:
    name = f"{vip['protocol'].upper()}  {format_endpoint(_address(vip['address']), vip['port'])}"
    return name[:33] if ":" not in vip["address"] else name


def _real_name(real: dict[str, Any], port: int) -> str:
    return format_endpoint(_address(real["address"]), port)


def _conn_counts(lb: Balancer, snapshot: ConnSnapshot) -> dict[tuple[Vip, IPAddress], ConnCounts]:
    owners = lb.real_id_owners()
    udp_ttl_ns = int(lb.config.udp_ttl_s * 1e9)
    return {
        owners[owner]: counts
        for owner, counts in snapshot.counts(udp_ttl_ns).items()
        if owner in owners
    }


def _services(
    lb: Balancer, health: Health, only: Vip | None, args: argparse.Namespace
) -> list[str]:
    from ..flows import ConnCounts

    vips = [v for v in vip_snapshot(lb, health) if only is None or v["vip"] == str(only)]
    counts = _conn_counts(lb, lb.conn_snapshot())
    lines = []
    if args.stats:
        lines.append(f"{'Prot LocalAddress:Port':<33} {'Conns':>8} {'InPkts':>8} "
                     f"{'OutPkts':>8} {'InBytes':>8} {'OutBytes':>8}")  # fmt: skip
        lines.append("  -> RemoteAddress:Port")
    else:
        lines.append("Prot LocalAddress:Port Scheduler Flags")
        lines.append("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn")
    for vip in _sorted_vips(vips):
        key = Vip.parse(vip["vip"])
        real_counts = {
            r["address"]: counts.get((key, _address(r["address"])), ConnCounts())
            for r in vip["reals"]
        }
        if args.stats:
            total = sum(c.total for c in real_counts.values())
            numbers = (total, vip["packets"], 0, vip["bytes"], 0)
            lines.append(f"{_service_name(vip):<33}" + _numbers(numbers, args.exact))
        else:
            flags = ",".join(f for f in vip["flags"] if f != "gue")
            lines.append(f"{_service_name(vip)} mh" + (f" {flags}" if flags else ""))
        for real in vip["reals"]:
            name, c = _real_name(real, vip["port"]), real_counts[real["address"]]
            if args.stats:
                numbers = (c.total, real["packets"], 0, real["bytes"], 0)
                lines.append(f"  -> {name:<28}" + _numbers(numbers, args.exact))
            else:
                lines.append(
                    f"  -> {name:<28} {vip['forward']:<7} {real['weight']:<6} "
                    f"{c.active:<10} {c.inactive:<10}".rstrip()
                )
    return lines


def _rates(lb: Balancer, health: Health, only: Vip | None, args: argparse.Namespace) -> list[str]:
    before, conns_before = vip_snapshot(lb, health), lb.conn_snapshot()
    started = time.monotonic()
    time.sleep(args.interval)
    after, conns_after = vip_snapshot(lb, health), lb.conn_snapshot()
    seconds = time.monotonic() - started
    owners = lb.real_id_owners()
    new = {owners[o]: n for o, n in conns_after.new_since(conns_before).items() if o in owners}
    old = {v["vip"]: v for v in before}
    lines = [
        f"{'Prot LocalAddress:Port':<33} {'CPS':>8} {'InPPS':>8} {'OutPPS':>8} "
        f"{'InBPS':>8} {'OutBPS':>8}",
        "  -> RemoteAddress:Port",
    ]
    for vip in _sorted_vips([v for v in after if only is None or v["vip"] == str(only)]):
        key = Vip.parse(vip["vip"])
        prev = old.get(vip["vip"], vip)
        prev_reals = {r["address"]: r for r in prev.get("reals", [])}
        cps = sum(n for (v, _), n in new.items() if v == key)
        lines.append(
            f"{_service_name(vip):<33}" + _numbers(_per_second(cps, vip, prev, seconds), args.exact)
        )
        for real in vip["reals"]:
            name = _real_name(real, vip["port"])
            real_new = new.get((key, _address(real["address"])), 0)
            numbers = _per_second(real_new, real, prev_reals.get(real["address"], real), seconds)
            lines.append(f"  -> {name:<28}" + _numbers(numbers, args.exact))
    return lines


def _per_second(
    new: int, now: dict[str, Any], before: dict[str, Any], seconds: float
) -> tuple[int, ...]:
    packets = max(0, now["packets"] - before["packets"])
    nbytes = max(0, now["bytes"] - before["bytes"])
    return (round(new / seconds), round(packets / seconds), 0, round(nbytes / seconds), 0)


def _numbers(values: tuple[int, ...], exact: bool) -> str:
    return "".join(_large(v, exact) for v in values)


def _large(value: int, exact: bool) -> str:
    """A number in ipvsadm's 9 columns: exact, or K/M/G/T beyond 10^8."""
    if exact:
        text = str(value)
        return text.rjust(9 if len(text) <= 8 else len(text) + 1)
    for limit, divisor, suffix in (
        (10**8, 1, ""),
        (10**9, 10**3, "K"),
        (10**11, 10**6, "M"),
        (10**14, 10**9, "G"),
    ):
        if value < limit:
            return f"{value // divisor:>{9 - len(suffix)}}{suffix}"
    return f"{value // 10**12:>8}T"


def _connections(lb: Balancer) -> list[str]:
    snapshot = lb.conn_snapshot()
    owners = lb.real_id_owners()
    udp_ttl_ns = int(lb.config.udp_ttl_s * 1e9)
    lines = [
        "xlb connection entries",
        f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination",
    ]
    for entry in snapshot.entries():
        flow = entry.flow
        owner = owners.get(entry.owner)
        expired = flow.proto == "udp" and udp_ttl_ns and entry.idle_ns > udp_ttl_ns
        if owner is None:
            state, destination = "STALE", "-"
        else:
            state = "EXPIRED" if expired else "ACTIVE"
            destination = format_endpoint(owner[1], flow.dport)
        lines.append(
            f"{flow.proto.upper():<3} {_expire(flow.proto, entry.idle_ns, udp_ttl_ns):<6} "
            f"{state:<11} {format_endpoint(flow.src, flow.sport):<18} "
            f"{format_endpoint(flow.dst, flow.dport):<18} {destination}"
        )
    return lines


def _expire(proto: str, idle_ns: int, udp_ttl_ns: int) -> str:
    """mm:ss left before a UDP entry stops counting; TCP entries never expire."""
    if proto != "udp" or not udp_ttl_ns:
        return "never"
    left = max(0, (udp_ttl_ns - idle_ns) // 10**9)
    return f"{left // 60:02d}:{left % 60:02d}"


__all__ = ["NO_MEANING", "cmd_ipvsadm"]
