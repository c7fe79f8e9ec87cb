"""IPVS virtual services, as both importers read them, mapped to xlb.

keepalived.conf and ipvsadm-save describe the same thing: IPVS virtual
services (an address and port, or a firewall mark; a scheduler; a
persistence timeout) with real servers (an address, a weight, a
forwarding method). The importers fill `VirtualService`s; `build()` maps
them to an xlb `Config`, saying in the report what it carried over
differently and what it could not carry over:

- forwarding: DR and TUN become xlb's encapsulation (IPIP, or GUE for a
  GUE tunnel); NAT cannot be carried over (xlb never sees the replies).
- scheduler: Maglev for every VIP. `mh` and `sh` hash the client address
  only unless `mh-port`/`sh-port` is set: the VIP gets `no_sport`, as IPVS
  did. Any other scheduler is reported with what differs. `ops` (one
  packet scheduling) is `no_conn_table`.
- persistence: the client address picks the real (`no_sport`), with no
  timeout and the same answer on every balancer node.
- firewall marks: a mark names no address; `--fwmark MARK=ADDR[:PORT][/PROTO]`
  says which VIPs it stands for, else the service is reported and left out.
- quorum: `bgp.min_healthy` where the reals' weights make it a count.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

from .. import _limits
from ..config.schema import (
    BgpSettings,
    Check,
    Config,
    Encapsulation,
    HealthSettings,
    OnFailure,
    Settings,
    VipConfig,
    sort_reals,
)
from ..errors import ConfigError
from ..model import IPAddress, Real, Vip, VipFlags, check_mac
from .source import Report, Where

T = TypeVar("T")
Method = Literal["DR", "TUN", "NAT"]
Tunnel = Literal["ipip", "gue", "gre"]

#: The schedulers IPVS has, and what Maglev does differently from each.
SCHEDULERS: dict[str, str] = {
    "rr": "round robin hands each new connection to the next real",
    "wrr": "weighted round robin hands new connections to the reals in turn, by weight",
    "lc": "least-connection sends a new connection to the real with the fewest",
    "wlc": "weighted least-connection sends a new connection to the real with the "
    "fewest per unit of weight",
    "sed": "shortest expected delay sends a new connection to the least loaded real",
    "nq": "never queue sends a new connection to an idle real first",
    "lblc": "locality-based least-connection keeps a destination address on one real",
    "lblcr": "locality-based least-connection with replication keeps a destination on a few reals",
    "dh": "destination hashing picks the real by the destination address",
    "sh": "source hashing picks the real by the client address",
    "mh": "Maglev hashing",
    "fo": "weighted failover sends everything to the available real of highest weight",
    "ovf": "overflow sends to the real of highest weight until it is full",
    "twos": "random of two picks the less loaded of two random reals",
}
_LOAD_AWARE = {"lc", "wlc", "sed", "nq", "lblc", "lblcr", "ovf", "twos"}


@dataclass(frozen=True, slots=True)
class Forwarding:
    """How IPVS sends to a real: -g (DR), -i (TUN, with its tunnel type), -m (NAT)."""

    method: Method
    tunnel: Tunnel = "ipip"
    gue_port: int | None = None

    def describe(self) -> str:
        if self.method != "TUN" or self.tunnel == "ipip":
            return self.method
        port = f" port {self.gue_port}" if self.gue_port else ""
        return f"TUN type {self.tunnel}{port}"


@dataclass(slots=True)
class RealServer:
    """One real server of a virtual service."""

    address: IPAddress
    port: int | None  # None: none given (the VIP's port is used)
    weight: int
    forwarding: Forwarding
    where: Where


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a virtual service listens on: an address and port (0: every
    port), or a firewall mark (address None)."""

    address: IPAddress | None
    port: int
    where: Where
    fwmark: int | None = None


@dataclass(slots=True)
class VirtualService:
    """One IPVS virtual service (or a keepalived virtual_server of a group:
    one service per endpoint of the group)."""

    name: str  # how the source names it, for messages
    where: Where
    endpoints: list[Endpoint]
    protocol: str = "tcp"  # "tcp", "udp" or "sctp"
    scheduler: str = "wlc"  # IPVS's default
    scheduler_where: Where | None = None  # None: not given (the default)
    sched_flags: dict[str, Where] = field(default_factory=dict)
    persistence: int | None = None  # seconds
    persistence_where: Where | None = None
    granularity: str | None = None  # persistence netmask, when not a single address
    reals: list[RealServer] = field(default_factory=list)
    quorum: int | None = None
    quorum_where: Where | None = None
    # From the source's health checks (keepalived); ipvsadm has none.
    check: Check | None = None
    on_failure: OnFailure = "remove"


@dataclass(frozen=True, slots=True)
class FwmarkTarget:
    """A VIP a firewall mark stands for: `--fwmark MARK=ADDR[:PORT][/PROTO]`."""

    mark: int
    address: IPAddress
    port: int = 0  # every port
    protocol: str | None = None  # None: the service's own protocol

    @classmethod
    def parse(cls, text: str) -> FwmarkTarget:
        match = re.fullmatch(
            r"\s*(\d+)\s*=\s*(\[[^\]]+\]|[^:/\[\]]+|[0-9a-fA-F:]+)(?::(\d+))?(?:/(\w+))?\s*", text
        )
        if match is None:
            raise ConfigError(
                f"invalid fwmark mapping {text!r}: MARK=ADDR[:PORT][/PROTO], "
                "like 1=192.0.2.10 or 2=[2001:db8::10]:443/tcp"
            )
        mark, host, port, proto = match.groups()
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ConfigError(
                f"invalid fwmark mapping {text!r}: {host!r} is not an address"
            ) from None
        if port is not None and not 0 <= int(port) <= 65535:
            raise ConfigError(f"invalid fwmark mapping {text!r}: port {port} is not 0-65535")
        if proto is not None and proto.lower() not in ("tcp", "udp"):
            raise ConfigError(f"invalid fwmark mapping {text!r}: protocol tcp or udp, not {proto}")
        return cls(int(mark), address, int(port or 0), proto.lower() if proto else None)


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What the source does not say and the operator may: the balancer's
    interface and next hop, settings to start from, what fwmarks mean."""

    interface: str | None = None
    gateway_mac: str | None = None
    base: Config | None = None  # [balancer], [health] and [bgp] to start from
    fwmarks: tuple[FwmarkTarget, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceHints:
    """Balancer settings the source implies beyond its services (keepalived's
    VRRP interface, its IPVS UDP timeout), each with where it was read."""

    interface: tuple[str, Where] | None = None
    udp_ttl: tuple[float, Where] | None = None


@dataclass(frozen=True, slots=True)
class Mapped:
    """The xlb configuration and, per VIP, where in the source it came from."""

    config: Config
    origins: dict[Vip, str]


# ================================================================ mapping


def build(
    services: Sequence[VirtualService],
    options: ImportOptions,
    report: Report,
    source: str,
    hints: SourceHints = SourceHints(),
) -> Mapped:
    """xlb's configuration for these services; errors go to the report."""
    vips: list[VipConfig] = []
    origins: dict[Vip, str] = {}
    seen: dict[Vip, Where] = {}
    carried: list[VirtualService] = []  # services with at least one VIP
    gue_ports: dict[int, Where] = {}
    min_healthy: dict[int, Where] = {}
    for service in services:
        for entry in _service_vips(service, options, report, gue_ports):
            if entry.vip in seen:
                report.error(
                    service.where, f"VIP {entry.vip} is already defined at {seen[entry.vip]}"
                )
                continue
            seen[entry.vip] = service.where
            origins[entry.vip] = f"{service.where} {service.name}"
            vips.append(entry)
            if not carried or carried[-1] is not service:
                carried.append(service)
        wanted = _min_healthy(service, report)
        if wanted is not None:
            min_healthy.setdefault(wanted, service.quorum_where or service.where)
    if len(vips) > _limits.XLB_LIMIT_MAX_VIPS:
        report.error(None, f"{len(vips)} VIPs: xlb holds at most {_limits.XLB_LIMIT_MAX_VIPS}")
    settings = _settings(options, report, hints, gue_ports, bool(vips))
    base = options.base
    bgp = _bgp_with_quorum(base, min_healthy, report)
    _global_notes(carried, report)
    config = Config(
        settings=settings,
        health=base.health if base else HealthSettings(),
        vips=tuple(vips),
        source=source,
        empty_on_purpose=not vips,
        bgp=bgp,
    )
    return Mapped(config, origins)


def _service_vips(
    service: VirtualService,
    options: ImportOptions,
    report: Report,
    gue_ports: dict[int, Where],
) -> list[VipConfig]:
    """The VIPs of one service: one per endpoint (a fwmark: one per target)."""
    if service.protocol == "sctp":
        report.warn(
            service.where,
            f"{service.name}: protocol SCTP is not balanced by xlb (TCP and UDP only); "
            f"left out{_with_reals(service.reals)}",
        )
        return []
    endpoints = _endpoints(service, options, report)
    if not endpoints:
        return []
    reals, encapsulation = _carried_reals(service, report, gue_ports)
    if not reals:
        return []
    flags = _flags(service, report)
    out = []
    for address, port, protocol, where in endpoints:
        vip = _make(report, where, functools.partial(Vip, address, port, protocol))
        if vip is None:
            continue
        kept = _family_reals(vip, reals, report)
        if not kept:
            report.warn(where, f"VIP {vip} left out: none of its reals can be carried over")
            continue
        _report_real_ports(vip, kept, report)
        out.append(
            VipConfig(
                vip=vip,
                reals=sort_reals(r for _, r in kept),
                flags=flags,
                encapsulation=encapsulation,
                on_failure=service.on_failure,
                check=_check_for(vip, service.check, report, where),
            )
        )
    return out


def _make(report: Report, where: Where, build_it: Callable[[], T]) -> T | None:
    try:
        return build_it()
    except ConfigError as exc:
        report.error(where, str(exc))
        return None


def _with_reals(reals: Iterable[RealServer]) -> str:
    listed = ", ".join(f"{r.address} (weight {r.weight})" for r in reals)
    return f" with its reals {listed}" if listed else ""


def _endpoints(
    service: VirtualService, options: ImportOptions, report: Report
) -> list[tuple[IPAddress, int, str, Where]]:
    """(address, port, protocol, where) of every VIP the service becomes."""
    out = []
    for endpoint in service.endpoints:
        if endpoint.address is not None:
            out.append((endpoint.address, endpoint.port, service.protocol, endpoint.where))
            continue
        targets = [t for t in options.fwmarks if t.mark == endpoint.fwmark]
        if not targets:
            report.warn(
                endpoint.where,
                f"fwmark {endpoint.fwmark}: a firewall mark is set by iptables/nftables rules "
                f"outside this file and names no address xlb can match; left out"
                f"{_with_reals(service.reals)}. Pass "
                f"--fwmark {endpoint.fwmark}=ADDR[:PORT][/PROTO] (once per address the mark "
                "covers) to import it as VIPs",
            )
            continue
        for target in targets:
            protocol = target.protocol or service.protocol
            vip = Vip(target.address, target.port, protocol)
            report.note(endpoint.where, f"fwmark {endpoint.fwmark} imported as {vip} (--fwmark)")
            out.append((target.address, target.port, protocol, endpoint.where))
    return out


def _carried_reals(
    service: VirtualService, report: Report, gue_ports: dict[int, Where]
) -> tuple[list[RealServer], Encapsulation | None]:
    """The reals xlb can send to (not NAT, not twice) and the VIP's encapsulation."""
    if service.reals and all(r.forwarding.method == "NAT" for r in service.reals):
        report.warn(
            service.where,
            f"{service.name}: NAT (masquerading) cannot be carried over: xlb sends packets "
            "to the reals unchanged in a tunnel and the reals answer the clients directly, "
            f"so replies never come back through the balancer to be translated; left out"
            f"{_with_reals(service.reals)}. Such a service moves to xlb as direct server "
            "return: reals with the VIP on lo and `xlb real-setup` (docs/migrate.md)",
        )
        return [], None
    if not service.reals:
        report.warn(service.where, f"{service.name} has no real servers: left out")
        return [], None
    kept: list[RealServer] = []
    seen: dict[IPAddress, Where] = {}
    for real in service.reals:
        if real.forwarding.method == "NAT":
            report.warn(
                real.where,
                f"real {real.address} (weight {real.weight}) uses NAT, which xlb cannot do "
                "(replies do not come back through the balancer): left out",
            )
        elif real.address in seen:
            report.warn(
                real.where, f"real {real.address} is already at {seen[real.address]}: left out"
            )
        else:
            seen[real.address] = real.where
            kept.append(real)
    return kept, _encapsulation(service, kept, report, gue_ports)


def _encapsulation(
    service: VirtualService, reals: list[RealServer], report: Report, gue_ports: dict[int, Where]
) -> Encapsulation | None:
    """One encapsulation per VIP: GUE when the reals use a GUE tunnel."""
    kinds = Counter("gue" if r.forwarding.tunnel == "gue" and r.forwarding.method == "TUN"
                    else "ipip" for r in reals)  # fmt: skip
    chosen: Encapsulation = "gue" if kinds["gue"] > kinds["ipip"] else "ipip"
    for real in reals:
        fwd = real.forwarding
        is_gue = fwd.method == "TUN" and fwd.tunnel == "gue"
        if ("gue" if is_gue else "ipip") != chosen:
            report.warn(
                real.where,
                f"real {real.address} uses {fwd.describe()} but xlb encapsulates every real of "
                f"a VIP the same way: it gets {chosen.upper()} like the others",
            )
        elif fwd.method == "TUN" and fwd.tunnel == "gre":
            report.warn(
                real.where,
                f"real {real.address}: GRE tunnels are not made by xlb; it gets IPIP "
                "(the real strips it with `xlb real-setup`)",
            )
        if is_gue and chosen == "gue" and fwd.gue_port:
            gue_ports.setdefault(fwd.gue_port, real.where)
    return "gue" if chosen == "gue" else None


def _family_reals(
    vip: Vip, reals: list[RealServer], report: Report
) -> list[tuple[RealServer, Real]]:
    kept = []
    for real in reals:
        if vip.address.version == 6 and real.address.version == 4:
            report.warn(
                real.where,
                f"real {real.address} (weight {real.weight}) of IPv6 VIP {vip}: xlb has no "
                "IPv6-in-IPv4 encapsulation; left out of this VIP",
            )
            continue
        made = _make(report, real.where, functools.partial(Real, real.address, real.weight))
        if made is not None:
            kept.append((real, made))
    return kept


def _report_real_ports(vip: Vip, reals: list[tuple[RealServer, Real]], report: Report) -> None:
    if vip.port == 0:
        return
    for real, _ in reals:
        if real.port is not None and real.port != vip.port:
            report.warn(
                real.where,
                f"real {real.address} port {real.port}: xlb (like IPVS DR and TUN) does not "
                f"change the destination port; the real receives the clients on port {vip.port}",
            )


def _check_for(vip: Vip, check: Check | None, report: Report, where: Where) -> Check | None:
    if check is None:
        return None
    if vip.port == 0 and check.port is None and check.type != "command":
        report.warn(
            where,
            f"VIP {vip} takes every port and its {check.type} check names none: "
            "no check carried over (add [vip.check] with a port)",
        )
        return None
    if check.type == "udp" and vip.proto == "tcp" and check.port is None:
        report.warn(where, f"UDP check of TCP VIP {vip} without a port of its own: left out")
        return None
    return check


def _flags(service: VirtualService, report: Report) -> VipFlags:
    """Maglev for every scheduler; the flags that keep IPVS's behaviour."""
    flags = VipFlags.NONE
    where = service.scheduler_where or service.where
    name = service.scheduler
    given = "" if service.scheduler_where else " (IPVS's default: none was given)"
    port_flag = f"{name}-port"
    if name in ("mh", "sh"):
        if port_flag not in service.sched_flags:
            flags |= VipFlags.NO_SPORT
            report.note(
                where,
                f"scheduler {name} without {port_flag} hashes the client address only: the VIP "
                "gets no_sport (Maglev on the client address), so one client's connections "
                "share a real, as they did",
            )
        elif name == "sh":
            report.note(where, "scheduler sh with sh-port: Maglev on the whole 5-tuple")
    else:
        load = (
            "; it does not look at the reals' connection counts, the weights alone decide"
            if name in _LOAD_AWARE
            else ""
        )
        report.note(
            where,
            f"scheduler {name}{given} is replaced by Maglev: {SCHEDULERS.get(name, name)}, "
            "while Maglev hashes each connection to a real in proportion to the weights, the "
            f"same on every balancer node and across restarts{load}",
        )
    for flag, flag_where in service.sched_flags.items():
        flags |= _sched_flag(service, flag, flag_where, report)
    if service.persistence is not None:
        flags |= VipFlags.NO_SPORT
        report.note(
            service.persistence_where,
            f"persistence {service.persistence} s: the client's address picks the real "
            "(no_sport): each client stays on one real while the reals do not change, with "
            "no timeout, the same on every balancer node (and an established TCP connection "
            "keeps its real in the connection table however long it is idle)",
        )
        if service.granularity is not None:
            report.warn(
                service.persistence_where,
                f"persistence granularity {service.granularity}: xlb keeps each client address "
                "on its real, not a whole network of them (not carried over)",
            )
    return flags


def _sched_flag(service: VirtualService, flag: str, where: Where, report: Report) -> VipFlags:
    if flag == "ops":
        if service.protocol != "udp":
            report.warn(where, "ops (one-packet scheduling) applies to UDP only: not carried over")
            return VipFlags.NONE
        report.note(where, "ops: every packet is scheduled on its own: flag no_conn_table")
        return VipFlags.NO_CONN_TABLE
    if flag in ("mh-port", "sh-port"):
        if not flag.startswith(service.scheduler):
            report.warn(where, f"{flag} applies to scheduler {flag[:2]} only: not carried over")
        return VipFlags.NONE
    if flag in ("mh-fallback", "sh-fallback"):
        report.note(
            where,
            f"{flag}: xlb takes a failed real out of the ring (its flows re-hash over the "
            "others), which is what the fallback was for",
        )
        return VipFlags.NONE
    report.warn(where, f"scheduler flag {flag}: no xlb equivalent, not carried over")
    return VipFlags.NONE


def _min_healthy(service: VirtualService, report: Report) -> int | None:
    """keepalived's quorum (a total weight) as a number of reals, if the
    reals' weights make it one."""
    if service.quorum is None:
        return None
    where = service.quorum_where or service.where
    weights = {r.weight for r in service.reals if r.weight > 0}
    if len(weights) != 1:
        report.warn(
            where,
            f"quorum {service.quorum} is a total weight; the reals' weights differ, so it is no "
            "number of reals: not carried over (xlb's bgp.min_healthy counts reals)",
        )
        return None
    count = max(1, math.ceil(service.quorum / weights.pop()))
    return count


def _bgp_with_quorum(
    base: Config | None, wanted: Mapping[int, Where], report: Report
) -> BgpSettings | None:
    bgp = base.bgp if base else None
    if not wanted:
        return bgp
    counts = ", ".join(f"{n} ({w})" for n, w in sorted(wanted.items()))
    if len(wanted) > 1:
        for count, where in wanted.items():
            report.warn(
                where,
                f"quorum as bgp.min_healthy = {count}: the services disagree ({counts}) and "
                "xlb has one min_healthy for every VIP; not carried over",
            )
        return bgp
    ((count, where),) = wanted.items()
    if bgp is None:
        report.note(
            where,
            f"quorum: a VIP is announced while bgp.min_healthy = {count} of its reals are up; "
            "set it when you add [bgp] (no [bgp] in the base configuration)",
        )
        return None
    report.note(where, f"quorum: bgp.min_healthy = {count}")
    return replace(bgp, min_healthy=count)


def _settings(
    options: ImportOptions,
    report: Report,
    hints: SourceHints,
    gue_ports: Mapping[int, Where],
    has_vips: bool,
) -> Settings:
    base = options.base.settings if options.base else Settings()
    interface = options.interface or base.interface
    if interface is None and hints.interface is not None:
        interface = hints.interface[0]
        report.note(
            hints.interface[1],
            f"balancer.interface = {interface!r}, the interface of the VRRP instance "
            "(-i IFACE to choose another)",
        )
    elif interface is None and has_vips:
        report.note(None, "no interface given: set balancer.interface (or -i IFACE) to serve")
    gateway_mac = check_mac(options.gateway_mac) if options.gateway_mac else base.gateway_mac
    fib_lookup = base.fib_lookup
    if gateway_mac is None and not fib_lookup and has_vips:
        fib_lookup = True
        report.note(
            None,
            "no gateway MAC given: balancer.fib_lookup = true, the reals are reached through "
            "the kernel's routes and neighbours as IPVS DR reached them "
            "(--gateway-mac MAC for a routed network)",
        )
    gue_port = base.gue_port
    if gue_ports:
        first, *others = sorted(gue_ports.items(), key=lambda item: item[1])
        gue_port = first[0]
        for port, where in others:
            report.warn(
                where,
                f"GUE port {port}: xlb uses one GUE port for every VIP, {gue_port} "
                f"(from {first[1]}); the reals must strip that one",
            )
    udp_ttl = base.udp_ttl
    if hints.udp_ttl is not None and udp_ttl == Settings().udp_ttl:
        udp_ttl = hints.udp_ttl[0]
    return replace(
        base,
        udp_ttl=udp_ttl,
        interface=interface,
        gateway_mac=gateway_mac,
        fib_lookup=fib_lookup,
        gue_port=gue_port,
    )


def _global_notes(carried: Sequence[VirtualService], report: Report) -> None:
    methods = {r.forwarding.method for s in carried for r in s.reals}
    if "DR" in methods:
        report.note(
            None,
            "direct routing (DR) becomes IPIP encapsulation: each real strips it with "
            "`xlb real-setup --vip ADDR` instead of holding the VIP on an ARP-silenced "
            "interface (docs/migrate.md)",
        )


__all__ = [
    "SCHEDULERS",
    "Endpoint",
    "Forwarding",
    "FwmarkTarget",
    "ImportOptions",
    "Mapped",
    "RealServer",
    "SourceHints",
    "VirtualService",
    "build",
]
