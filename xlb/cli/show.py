"""`xlb list`, `xlb stats`, `xlb counters`, `xlb flows`: what the data
plane holds and does, with the daemon's health where one runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import control, host
from ..model import Vip, VipFlags, parse_address
from .common import EXIT_OK, CliError, Target, daemon_pid, open_balancer, resolve_target
from .node import describe as describe_bgp

if TYPE_CHECKING:
    from ..balancer import Balancer

# ================================================================= health


@dataclass(slots=True)
class Health:
    """What a running daemon reports about health (its control socket, or
    the metrics endpoint of a daemon without one)."""

    reals: dict[tuple[str, str], str]  # (vip, real) -> "up" | "down"
    vips: dict[str, bool]
    weights: dict[tuple[str, str], int] = field(default_factory=dict)  # configured

    def real(self, vip: Vip, address: Any) -> str:
        return self.reals.get((str(vip), str(address)), "-")

    def configured_reals(self, vip: Vip) -> dict[str, int]:
        """The daemon's configured reals of a VIP and their weights (down ones
        included, which the data plane may no longer hold)."""
        return {real: weight for (v, real), weight in self.weights.items() if v == str(vip)}

    def vip(self, vip: Vip) -> str:
        healthy = self.vips.get(str(vip))
        return "-" if healthy is None else ("healthy" if healthy else "UNHEALTHY")


def daemon_health(target: Target, timeout: float = 1.0) -> Health:
    """Health states from the daemon: asked on its control socket; from its
    metrics page when nothing listens there (a daemon older than the
    socket); empty when neither answers."""
    if target.interface is not None:
        try:
            reply = control.request(
                control.socket_path(target.lock_dir, target.interface), "health", timeout
            )
        except control.DaemonUnreachable:
            return _scraped_health(target, timeout)
        except control.ControlError:  # a daemon that does not answer: no health to show
            return Health({}, {})
        return _health_from_reply(reply)
    return _scraped_health(target, timeout)


def daemon_bgp(target: Target, timeout: float = 1.0) -> dict[str, Any] | None:
    """The daemon's announcement state (its `status` op's "bgp"): None
    without [bgp], or when the daemon does not answer."""
    if target.interface is None:
        return None
    path = control.socket_path(target.lock_dir, target.interface)
    try:
        bgp = control.request(path, "status", timeout).get("bgp")
    except control.ControlError:
        return None
    return bgp if isinstance(bgp, dict) else None


def _health_from_reply(reply: dict[str, Any]) -> Health:
    """Health from the `health` op's answer (Service.health()'s shape); a
    real without a check ("unchecked") has no state, as on the metrics page."""
    health = Health({}, {})
    vips = reply.get("vips")
    for vip, entry in (vips if isinstance(vips, dict) else {}).items():
        health.vips[vip] = bool(entry.get("healthy"))
        for real, state in entry.get("reals", {}).items():
            if state.get("state") in ("up", "down"):
                health.reals[(vip, real)] = state["state"]
            if isinstance(state.get("weight"), int):
                health.weights[(vip, real)] = state["weight"]
    return health


def _scraped_health(target: Target, timeout: float) -> Health:
    """Health states from the daemon's metrics server, if one announced itself."""
    empty = Health({}, {})
    try:
        from prometheus_client.parser import text_string_to_metric_families

        from ..metrics import discovery_file
    except ImportError:  # installed without the metrics extra: nothing to read
        return empty
    try:
        info = json.loads(discovery_file(target.pin_dir).read_text())
        os.kill(int(info["pid"]), 0)
        url = f"http://{info['address']}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except (OSError, ValueError, KeyError, TypeError):
        return empty
    health = Health({}, {})
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "xlb_real_up":
                key = (sample.labels["vip"], sample.labels["real"])
                health.reals[key] = "up" if sample.value else "down"
            elif sample.name == "xlb_vip_healthy":
                health.vips[sample.labels["vip"]] = bool(sample.value)
            elif sample.name == "xlb_real_configured_weight":
                key = (sample.labels["vip"], sample.labels["real"])
                health.weights[key] = int(sample.value)
    return health


# ================================================================ helpers


def _encap(lb: Balancer, vip: Vip) -> str:
    return "GUE" if VipFlags.GUE in lb.vip_flags(vip) or lb.config.gue_all else "Tunnel"


def vip_snapshot(lb: Balancer, health: Health | None = None) -> list[dict[str, Any]]:
    out = []
    for vip in lb.vips():
        stats = lb.stats(vip)
        flags = lb.vip_flags(vip)
        out.append(
            {
                "vip": str(vip),
                "address": vip.address_text,  # or its prefix: 10.100.0.0/24
                "port": vip.port,
                "protocol": vip.proto,
                "flags": flags.names(),
                "forward": _encap(lb, vip),
                "ring_size": lb.ring_size(vip),
                "health": health.vip(vip) if health else "-",
                "packets": stats.packets,
                "bytes": stats.bytes,
                "reals": _real_rows(lb, vip, health),
            }
        )
    return out


def _real_rows(lb: Balancer, vip: Vip, health: Health | None) -> list[dict[str, Any]]:
    """The VIP's reals: those in the data plane, plus those the daemon
    configures but took out (down, `on_failure = "remove"`), with share 0.
    A real the daemon knows shows its configured weight (a drained or
    removed one holds 0 or nothing in the data plane: `serving_weight`)."""
    per_real, shares = lb.real_stats(vip), lb.ring_shares(vip)
    server_ids = lb.server_ids(vip)
    configured = health.configured_reals(vip) if health else {}
    rows: dict[str, dict[str, Any]] = {}
    for real in lb.reals(vip):
        address = str(real.address)
        counter = per_real.get(real.address)
        rows[address] = {
            "address": address,
            "weight": configured.get(address, real.weight),
            "serving_weight": real.weight,
            "mac": real.mac,
            "share": round(shares.get(real.address, 0.0), 6),
            "health": health.real(vip, address) if health else "-",
            "packets": counter.packets if counter else 0,
            "bytes": counter.bytes if counter else 0,
            "server_id": server_ids.get(real.address),
            "server_id_pinned": real.server_id is not None,
        }
    for address, weight in configured.items():
        if address not in rows:
            rows[address] = {
                "address": address,
                "weight": weight,
                "serving_weight": None,
                "mac": None,
                "share": 0.0,
                "health": health.real(vip, address) if health else "-",
                "packets": 0,
                "bytes": 0,
                "server_id": None,
                "server_id_pinned": False,
            }
    return sorted(rows.values(), key=lambda row: _address_key(row["address"]))


def _address_key(text: str) -> tuple[int, bytes]:
    address = parse_address(text)
    return address.version, address.packed


def _add_rates(now: list[dict[str, Any]], before: list[dict[str, Any]], seconds: float) -> None:
    """Add pps/bps (bits) to each VIP and real of `now` from an earlier snapshot."""
    old = {v["vip"]: v for v in before}
    for vip in now:
        prev = old.get(vip["vip"], {})
        _rate(vip, prev, seconds)
        prev_reals = {r["address"]: r for r in prev.get("reals", [])}
        for real in vip["reals"]:
            _rate(real, prev_reals.get(real["address"], {}), seconds)


def _rate(entry: dict[str, Any], prev: dict[str, Any], seconds: float) -> None:
    packets = max(0, entry["packets"] - prev.get("packets", entry["packets"]))
    nbytes = max(0, entry["bytes"] - prev.get("bytes", entry["bytes"]))
    entry["pps"] = round(packets / seconds, 1)
    entry["bps"] = round(nbytes * 8 / seconds, 1)


def human(value: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(value) < 1000 or suffix == "T":
            text = f"{value:.0f}" if suffix == "" else f"{value:.1f}{suffix}"
            return text + unit
        value /= 1000
    return str(value)


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _flood_cpus(lb: Balancer) -> list[int]:
    """The CPUs whose SYN-flood guard is tripped now (bpf/flood.h)."""
    return [cpu.cpu for cpu in lb.syn_flood() if cpu.under_flood]


def _describe_flood(lb: Balancer, cpus: list[int]) -> str:
    threshold = lb.config.syn_flood_threshold
    return (
        f"SYN flood on CPU {', '.join(map(str, cpus))}: over {threshold} SYNs/s, "
        "new TCP flows are routed by the ring and recorded at their first ACK"
    )


def header_line(target: Target, lb: Balancer, pid: int | None) -> str:
    xdp = host.xdp_program(target.interface) if target.interface else None
    if xdp is None:
        where = f"{target.interface} (no XDP program seen in this network namespace)"
    else:
        where = f"{target.interface} (XDP {xdp.mode}, program {xdp.name} id {xdp.id})"
    daemon = f", managed by xlb serve pid {pid}" if pid else ""
    return f"xlb on {where}, pinned at {target.pin_dir}{daemon}"


# ================================================================= verbs


def cmd_list(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    pid = daemon_pid(target)
    health = daemon_health(target) if pid else Health({}, {})
    bgp = daemon_bgp(target) if pid else None
    with open_balancer(target) as lb:
        vips = vip_snapshot(lb, health)
        if args.rate:
            time.sleep(args.interval)
            before, vips = vips, vip_snapshot(lb, health)
            _add_rates(vips, before, args.interval)
        header = header_line(target, lb, pid)
        flood = _flood_cpus(lb)
        if flood:
            header += "\n" + _describe_flood(lb, flood)
    if args.json:
        _print_json(
            {
                "interface": target.interface,
                "pin_dir": str(target.pin_dir),
                "daemon_pid": pid,
                "vips": vips,
                "bgp": bgp,
                "syn_flood_cpus": flood,
            }
        )
        return EXIT_OK
    print(header)
    if args.stats:
        print(f"{'Prot LocalAddress:Port':<34}{'InPkts':>12}{'InBytes':>14}")
        print("  -> RemoteAddress")
    elif args.rate:
        print(f"{'Prot LocalAddress:Port':<34}{'InPPS':>12}{'InBPS':>14}")
        print("  -> RemoteAddress")
    else:
        print(f"{'Prot LocalAddress:Port':<34}{'Flags':<16}{'Ring':<8}Health")
        quic = any("quic" in vip["flags"] for vip in vips)
        ids = f"{'Health':<8}ServerId" if quic else "Health"  # QUIC VIPs' reals only
        print(f"{'  -> RemoteAddress':<34}{'Forward':<8}{'Weight':<8}{'Share':<8}{ids}")
    for vip in vips:
        first = f"{vip['protocol'].upper():<5}{_endpoint(vip)}"
        if args.stats:
            print(f"{first:<34}{vip['packets']:>12}{vip['bytes']:>14}")
        elif args.rate:
            print(f"{first:<34}{vip['pps']:>12.0f}{vip['bps'] / 8:>14.0f}")
        else:
            flags = ",".join(f for f in vip["flags"] if f != "gue") or "-"
            print(f"{first:<34}{flags:<16}{vip['ring_size']:<8}{vip['health']}")
        for real in vip["reals"]:
            left = f"  -> {real['address']}"
            if args.stats:
                print(f"{left:<34}{real['packets']:>12}{real['bytes']:>14}")
            elif args.rate:
                print(f"{left:<34}{real['pps']:>12.0f}{real['bps'] / 8:>14.0f}")
            else:
                share = f"{real['share'] * 100:.1f}%"
                line = f"{left:<34}{vip['forward']:<8}{real['weight']:<8}{share:<8}{real['health']}"
                print(line + _server_id_text(real))
    if bgp is not None:
        print(describe_bgp(bgp))
    return EXIT_OK


def _server_id_text(real: dict[str, Any]) -> str:
    """The ServerId column of a QUIC VIP's real: hex as in the CIDs, and
    whether the configuration pinned it; nothing for other VIPs' reals."""
    sid = real["server_id"]
    if sid is None:
        return ""
    pinned = " (pinned)" if real["server_id_pinned"] else ""
    return f"{'':<{max(0, 8 - len(real['health']))}}0x{sid:04x}{pinned}"


def _endpoint(vip: dict[str, Any]) -> str:
    host = f"[{vip['address']}]" if ":" in vip["address"] else vip["address"]
    return f"{host}:{vip['port']}"


def cmd_stats(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    count = args.count or (None if args.watch else 1)
    tty = sys.stdout.isatty() and args.watch and not args.json
    with open_balancer(target) as lb:
        before, counters_before = vip_snapshot(lb), lb.counters()
        taken = time.monotonic()
        shown = 0
        try:
            while count is None or shown < count:
                time.sleep(args.interval)
                now, counters_now = vip_snapshot(lb), lb.counters()
                elapsed = time.monotonic() - taken
                taken = time.monotonic()
                _add_rates(now, before, elapsed)
                totals = {
                    k: round(max(0, counters_now[k] - counters_before.get(k, 0)) / elapsed, 1)
                    for k in ("xdp_tx", "xdp_pass", "xdp_drop", "conn_hit", "conn_miss")
                }
                if args.json:
                    print(json.dumps({"time": round(time.time(), 3), "rates": totals, "vips": now}))
                else:
                    if tty:
                        sys.stdout.write("\x1b[H\x1b[2J")
                    _print_stats(target, now, totals, elapsed)
                sys.stdout.flush()
                before, counters_before = now, counters_now
                shown += 1
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def _print_stats(
    target: Target, vips: list[dict[str, Any]], totals: dict[str, float], t: float
) -> None:
    print(
        f"{target.name}: forwarded {human(totals['xdp_tx'])} pkt/s, passed "
        f"{human(totals['xdp_pass'])} pkt/s, dropped {human(totals['xdp_drop'])} pkt/s, "
        f"conn table {human(totals['conn_hit'])} hit/s {human(totals['conn_miss'])} miss/s "
        f"(over {t:.1f}s)"
    )
    print(f"{'VIP / real':<34}{'pkt/s':>10}{'bit/s':>10}{'packets':>14}{'bytes':>16}")
    for vip in vips:
        print(
            f"{vip['vip']:<34}{human(vip['pps']):>10}{human(vip['bps']):>10}"
            f"{vip['packets']:>14}{vip['bytes']:>16}"
        )
        for real in vip["reals"]:
            print(
                f"{'  -> ' + real['address']:<34}{human(real['pps']):>10}"
                f"{human(real['bps']):>10}{real['packets']:>14}{real['bytes']:>16}"
            )


def cmd_counters(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    from ..balancer import counter_names

    with open_balancer(target) as lb:
        raw = lb.counters()
        flood = _flood_cpus(lb)
        flood_line = _describe_flood(lb, flood) if flood else None
    # In the ABI's order: actions, reasons, connection table, SYN-flood guard.
    counters = {name: raw[name] for _, name in sorted(counter_names().items()) if name in raw}
    if args.nonzero:
        counters = {k: v for k, v in counters.items() if v}
    if args.json:
        _print_json(counters)
        return EXIT_OK
    width = max((len(k) for k in counters), default=0)
    for name, value in counters.items():
        print(f"{name:<{width}}  {value:>14}")
    if flood_line:
        print(flood_line)
    return EXIT_OK


def cmd_flows(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    vip: Vip | None = args.vip
    rows: list[dict[str, Any]] = []
    with open_balancer(target) as lb:
        if vip is not None and vip not in lb.vips():
            raise CliError(f"no VIP {vip} on {target.name} (see `xlb list`)")
        for flow, real in lb.flows(limit=2**31):
            if vip is not None and not (
                vip.holds(flow.dst)
                and flow.proto == vip.proto
                and (vip.port == 0 or flow.dport == vip.port)
            ):
                continue
            rows.append(
                {
                    "protocol": flow.proto,
                    "client": str(flow.src),
                    "sport": flow.sport,
                    "vip": str(flow.dst),
                    "dport": flow.dport,
                    "real": str(real) if real is not None else None,
                }
            )
            if len(rows) >= args.limit:
                break
    if args.json:
        _print_json(rows)
        return EXIT_OK
    print(f"{'Prot':<5}{'Client':<42}{'VIP':<42}Real")
    for row in rows:
        client = _hostport(row["client"], row["sport"])
        dst = _hostport(row["vip"], row["dport"])
        owner = row["real"] or "(stale: real retired)"
        print(f"{row['protocol'].upper():<5}{client:<42}{dst:<42}{owner}")
    if not rows:
        print("(no flows in the connection table)")
    return EXIT_OK


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = [
    "Health",
    "cmd_counters",
    "cmd_flows",
    "cmd_list",
    "cmd_stats",
    "daemon_bgp",
    "daemon_health",
    "header_line",
    "human",
    "vip_snapshot",
]
