"""keepalived.conf's LVS part read into virtual services.

`KeepalivedReader(report).read(statements)` walks the tree `kaconf`
parsed: every `virtual_server` (an address and port, a `fwmark`, or a
`group` of `virtual_server_group` entries, expanded) becomes a
`VirtualService` with its real servers, and the reals' checkers
(`kachecks`) become one xlb `Check` for the service: the one most of its
reals have, the others reported. What is not LVS (global_defs, VRRP,
static routes...) is named in a note: VRRP stays with keepalived
(docs/deploy.md). Every keyword of a virtual server, a real server and a
checker is known here; an unknown one is an error, as is a real server
without a port (of a service that is not a firewall mark).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

from ..config.schema import Check, OnFailure
from ..model import MAX_WEIGHT, IPAddress
from .kachecks import COMMON_NOTES, Candidate, Checkers, Inherited, inherit
from .kaconf import Statement, Values
from .services import (
    SCHEDULERS,
    Endpoint,
    Forwarding,
    RealServer,
    SourceHints,
    VirtualService,
)
from .source import Report, Where

DEFAULT_PERSISTENCE = 360  # keepalived's, when persistence_timeout has no value
MAX_GROUP_RANGE = 4096  # addresses one virtual_server_group entry may expand to

#: Root blocks that are not LVS: named in a note, their content not read.
NOT_LVS = {
    "global_defs": "keepalived's global settings",
    "vrrp_instance": "VRRP stays with keepalived (docs/deploy.md: active/backup)",
    "vrrp_sync_group": "VRRP stays with keepalived",
    "vrrp_script": "VRRP stays with keepalived",
    "vrrp_track_file": "VRRP stays with keepalived",
    "vrrp_track_process": "VRRP stays with keepalived",
    "garp_group": "VRRP stays with keepalived",
    "track_file": "keepalived's track files (FILE_CHECK is not carried over)",
    "track_group": "keepalived's tracking",
    "static_ipaddress": "host configuration, not the balancer's",
    "static_routes": "host configuration, not the balancer's",
    "static_rules": "host configuration, not the balancer's",
    "linkbeat_interfaces": "keepalived's link monitoring",
    "linkbeat_use_polling": "keepalived's link monitoring",
    "interface_up_down_delays": "keepalived's link monitoring",
    "bfd_instance": "keepalived's BFD (xlb does BFD through BIRD: docs/deploy.md)",
    "net_namespace": "keepalived's process settings",
    "net_namespace_ipvs": "keepalived's process settings",
    "namespace_with_ipsets": "keepalived's process settings",
    "instance": "keepalived's process settings",
    "use_pid_dir": "keepalived's process settings",
    "child_wait_time": "keepalived's process settings",
}

SCHEDULER_NAMES = frozenset(SCHEDULERS)
SCHED_FLAGS = frozenset(
    ("hashed", "ops", "flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port",
     "mh-fallback")
)  # fmt: skip
CHECKERS = frozenset(
    ("HTTP_GET", "SSL_GET", "TCP_CHECK", "SMTP_CHECK", "DNS_CHECK", "MISC_CHECK", "BFD_CHECK",
     "UDP_CHECK", "PING_CHECK", "FILE_CHECK")
)  # fmt: skip


# ========================================================== virtual servers


class KeepalivedReader:
    """keepalived.conf statements into virtual services."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.values = Values(report)
        self.checkers = Checkers(self.values, report)
        self.groups: dict[str, tuple[list[Endpoint], Where]] = {}
        self.used_groups: set[str] = set()
        self.interfaces: dict[str, Where] = {}
        self.udp_ttl: tuple[float, Where] | None = None
        self.vrrp_addresses: dict[IPAddress, Where] = {}
        self.probe_note_given = False

    def read(self, statements: list[Statement]) -> list[VirtualService]:
        for s in statements:
            if s.keyword == "virtual_server_group":
                self._group(s)
        services: list[VirtualService] = []
        for s in statements:
            if s.keyword == "virtual_server":
                service = self._virtual_server(s)
                if service is not None:
                    services.append(service)
            elif s.keyword == "virtual_server_group":
                pass
            elif s.keyword in NOT_LVS:
                self._not_lvs(s)
            elif s.keyword == "SSL":
                self.report.warn(
                    s.where,
                    "SSL: xlb's https checks present no client certificate and verify none by "
                    "default (tls_verify); not carried over",
                )
            else:
                self.report.error(s.where, f"unknown keyword {s.keyword!r}")
        for name, (_, where) in self.groups.items():
            if name not in self.used_groups:
                self.report.warn(where, f"virtual_server_group {name} is used by no virtual_server")
        self._vrrp_vips(services)
        return services

    def _vrrp_vips(self, services: list[VirtualService]) -> None:
        """A VIP that VRRP puts on this node's interface is a local address
        there: the kernel would take xlb's health probes to it for itself."""
        addresses = {e.address for s in services for e in s.endpoints if e.address is not None}
        for address, where in self.vrrp_addresses.items():
            if address in addresses:
                self.report.warn(
                    where,
                    f"{address} is a VRRP virtual_ipaddress and a VIP: on the node that holds "
                    "it, it is a local address, so the kernel answers xlb's health probes to "
                    "it itself (they never reach the tunnel); let VRRP move a next-hop address "
                    "the router routes the VIPs to instead (docs/migrate.md, docs/deploy.md)",
                )

    def hints(self) -> SourceHints:
        """The VRRP instances' interface (when they agree on one) and the
        IPVS UDP timeout of global_defs."""
        interface = None
        if len(self.interfaces) == 1:
            ((name, where),) = self.interfaces.items()
            interface = (name, where)
        return SourceHints(interface=interface, udp_ttl=self.udp_ttl)

    def _not_lvs(self, s: Statement) -> None:
        self.report.note(s.where, f"{s.keyword}: not imported: {NOT_LVS[s.keyword]}")
        for item in s.block or []:
            if s.keyword == "vrrp_instance" and item.keyword == "interface" and item.args:
                self.interfaces.setdefault(item.args[0], item.where)
            elif s.keyword == "vrrp_instance" and item.keyword.startswith("virtual_ipaddress"):
                for entry in item.block or []:
                    try:
                        address = ipaddress.ip_interface(entry.keyword).ip
                    except ValueError:
                        continue  # VRRP's business: not read here
                    self.vrrp_addresses.setdefault(address, entry.where)
            elif s.keyword == "global_defs" and item.keyword == "lvs_timeouts":
                self._lvs_timeouts(item)
            elif s.keyword == "global_defs" and item.keyword.startswith("lvs_sync_daemon"):
                self.report.note(
                    item.where,
                    f"{item.keyword}: xlb needs no connection sync between balancers: every "
                    "node computes the same Maglev ring, so a flow that moves to another node "
                    "finds the same real (not carried over)",
                )

    def _lvs_timeouts(self, s: Statement) -> None:
        """`lvs_timeouts tcp N tcpfin N udp N`: IPVS's idle timeouts."""
        words = iter(s.args)
        for name in words:
            value = self.values.integer(s, 0, 2**31, next(words, ""))
            if value is None:
                continue
            if name == "udp" and value > 0:
                self.udp_ttl = (float(value), s.where)
                self.report.note(s.where, f"lvs_timeouts udp {value}: balancer.udp_ttl = {value}")
            elif name == "udp":
                self.report.note(s.where, "lvs_timeouts udp 0: IPVS's default, as xlb's udp_ttl")
            elif name in ("tcp", "tcpfin"):
                idle = "an idle flow" if name == "tcp" else "a closing flow (FIN seen)"
                self.report.note(
                    s.where,
                    f"lvs_timeouts {name} {value}: xlb's connection table keeps TCP flows with "
                    "no idle timeout and no FIN state (an entry stays until the table needs room), "
                    f"where IPVS forgot {idle} after {value} s (not carried over)",
                )
            else:
                self.report.error(s.where, f"lvs_timeouts {name!r}: tcp, tcpfin or udp")

    # ------------------------------------------------------------ groups

    def _group(self, s: Statement) -> None:
        name = self.values.one(s)
        block = self.values.block(s)
        if name is None:
            return
        if name in self.groups:
            self.report.error(
                s.where, f"virtual_server_group {name} is already at {self.groups[name][1]}"
            )
            return
        endpoints: list[Endpoint] = []
        for entry in block:
            endpoints += self._group_entry(entry)
        if not endpoints:
            self.report.warn(s.where, f"virtual_server_group {name} has no entries")
        self.groups[name] = (endpoints, s.where)

    def _group_entry(self, s: Statement) -> list[Endpoint]:
        self.values.no_block(s)
        if s.keyword == "fwmark":
            words = self.values.words(s, 1, 2)
            mark = self.values.integer(s, 0, 2**32 - 1, words[0]) if words else None
            if words and len(words) == 2 and words[1] not in ("inet", "inet6"):
                self.report.error(s.where, f"fwmark family {words[1]!r}: inet or inet6")
            return [Endpoint(None, 0, s.where, mark)] if mark is not None else []
        words = [s.keyword, *s.args]
        if len(words) > 2:
            self.report.error(s.where, f"group entry {s.text()!r}: ADDRESS[-RANGE] [PORT]")
            return []
        port = self.values.port(s, words[1], "virtual server") if len(words) == 2 else 0
        addresses = self._address_range(s, words[0])
        if port is None or addresses is None:
            return []
        return [Endpoint(address, port, s.where) for address in addresses]

    def _address_range(self, s: Statement, text: str) -> list[IPAddress] | None:
        """192.0.2.1, 192.0.2.1-10, 192.0.2.250-192.0.3.5, 192.0.2.8/29 (and IPv6)."""
        try:
            if "/" in text:
                network = ipaddress.ip_network(text, strict=True)
                first, last = network[0], network[-1]
            elif "-" in text:
                start, end = text.split("-", 1)
                first = ipaddress.ip_address(start)
                last = self._range_end(first, end)
            else:
                first = last = ipaddress.ip_address(text)
        except ValueError:
            self.report.error(s.where, f"{text!r} is not an address, range or network")
            return None
        count = int(last) - int(first) + 1
        if count < 1 or first.version != last.version:
            self.report.error(s.where, f"{text!r}: the range ends before it starts")
            return None
        if count > MAX_GROUP_RANGE:
            self.report.error(
                s.where, f"{text!r} holds {count} addresses: at most {MAX_GROUP_RANGE}"
            )
            return None
        return [ipaddress.ip_address(int(first) + i) if first.version == 4
                else ipaddress.IPv6Address(int(first) + i) for i in range(count)]  # fmt: skip

    @staticmethod
    def _range_end(first: IPAddress, end: str) -> IPAddress:
        if "." in end or ":" in end:
            return ipaddress.ip_address(end)
        if first.version == 4:  # the last octet
            value = int(end)
            if not 0 <= value <= 255:
                raise ValueError(end)
            return ipaddress.IPv4Address((int(first) & ~0xFF) | value)
        value = int(end, 16)  # the last 16 bits
        if not 0 <= value <= 0xFFFF:
            raise ValueError(end)
        return ipaddress.IPv6Address((int(first) & ~0xFFFF) | value)

    # ------------------------------------------------------------ servers

    def _virtual_server(self, s: Statement) -> VirtualService | None:
        block = self.values.block(s)
        endpoints = self._vs_endpoints(s)
        if endpoints is None:
            return None
        service = VirtualService(name=f"virtual_server {' '.join(s.args)}", where=s.where,
                                 endpoints=endpoints)  # fmt: skip
        inherited = Inherited()
        default_weight = 1
        forwarding: Forwarding | None = None
        reals: list[Statement] = []
        for item in block:
            key = item.keyword
            if key == "real_server":
                reals.append(item)
                continue
            changed = inherit(item, self.values, inherited)
            if changed is not None:
                inherited = changed
            elif key == "inhibit_on_failure":
                self.values.no_block(item)
                inherited = replace(inherited, inhibit=self.values.boolean(item))
            elif key in ("lb_kind", "lvs_method"):
                forwarding = self._forwarding(item) or forwarding
            elif key == "weight":
                default_weight = self.values.integer(item, 1, MAX_WEIGHT) or default_weight
            else:
                self._vs_setting(item, service)
        self._check_port_rule(s, service)
        vports = {e.port for e in service.endpoints}
        candidates: list[tuple[RealServer, Candidate | None, bool | None]] = []
        for item in reals:
            read = self._real_server(item, service, inherited, default_weight, forwarding, vports)
            if read is not None:
                service.reals.append(read[0])
                candidates.append(read)
        if forwarding is None and any(r[0].forwarding.method == "NAT" for r in candidates):
            self.report.note(
                s.where, "no lb_kind: keepalived's default is NAT (real servers without lvs_method)"
            )
        service.check, service.on_failure = self._vip_check(service, candidates)
        return service

    def _vs_endpoints(self, s: Statement) -> list[Endpoint] | None:
        args = s.args
        if args and args[0] == "group":
            if len(args) != 2:
                self.report.error(s.where, "virtual_server group takes one group name")
                return None
            group = self.groups.get(args[1])
            if group is None:
                self.report.error(s.where, f"no virtual_server_group {args[1]}")
                return None
            self.used_groups.add(args[1])
            return list(group[0])
        if args and args[0] == "fwmark":
            mark = self.values.integer(s, 0, 2**32 - 1, args[1]) if len(args) == 2 else None
            if len(args) != 2:
                self.report.error(s.where, "virtual_server fwmark takes one mark")
            return [Endpoint(None, 0, s.where, mark)] if mark is not None else None
        if not 1 <= len(args) <= 2:
            self.report.error(
                s.where, "virtual_server takes ADDRESS [PORT], fwmark MARK or group NAME"
            )
            return None
        address = self.values.address(s, args[0], "virtual server")
        port = self.values.port(s, args[1], "virtual server") if len(args) == 2 else 0
        if address is None or port is None:
            return None
        return [Endpoint(address, port, s.where)]

    def _check_port_rule(self, s: Statement, service: VirtualService) -> None:
        if service.persistence is not None:
            return
        for endpoint in service.endpoints:
            if endpoint.address is not None and endpoint.port == 0:
                self.report.error(
                    endpoint.where,
                    f"{endpoint.address} has no port, which only a persistent virtual server may "
                    "(persistence_timeout); give the port",
                )

    def _vs_setting(self, s: Statement, service: VirtualService) -> None:
        key = s.keyword
        self.values.no_block(s)
        if key in ("lb_algo", "lvs_sched"):
            name = self.values.one(s)
            if name is not None and name not in SCHEDULER_NAMES:
                self.report.error(s.where, f"unknown scheduler {name!r}")
            elif name is not None:
                service.scheduler, service.scheduler_where = name, s.where
        elif key in SCHED_FLAGS:
            self.values.words(s, 0, 0)
            service.sched_flags[key] = s.where
        elif key == "protocol":
            proto = self.values.one(s) or ""
            if proto.lower() not in ("tcp", "udp", "sctp"):
                self.report.error(s.where, f"protocol {proto!r}: TCP, UDP or SCTP")
            else:
                service.protocol = proto.lower()
        elif key == "persistence_timeout":
            words = self.values.words(s, 0, 1)
            if words is not None:
                timeout = (
                    self.values.integer(s, 1, 2**31, words[0]) if words else DEFAULT_PERSISTENCE
                )
                service.persistence, service.persistence_where = timeout, s.where
        elif key == "persistence_granularity":
            mask = self.values.one(s)
            if mask not in (None, "255.255.255.255", "128", "32"):
                service.granularity = mask
            service.persistence = service.persistence or DEFAULT_PERSISTENCE
            service.persistence_where = service.persistence_where or s.where
        elif key == "quorum":
            service.quorum = self.values.integer(s, 1, 2**32 - 1)
            service.quorum_where = s.where
        elif key in _VS_WARNINGS:
            self.report.warn(s.where, _VS_WARNINGS[key])
        elif key in _VS_NOTES:
            self.report.note(s.where, _VS_NOTES[key])
        elif key == "sorry_server":
            self.report.warn(
                s.where,
                f"sorry_server {' '.join(s.args)}: xlb has no fallback server for a VIP whose "
                'reals are all down (all_down = "keep" keeps sending to the last reals, '
                '"drop" drops, and with [bgp] the VIP is withdrawn); not carried over',
            )
        elif key == "warmup":
            self.report.note(s.where, COMMON_NOTES["warmup"])
        else:
            self.report.error(s.where, f"unknown keyword {key!r} in virtual_server")

    def _forwarding(self, s: Statement) -> Forwarding | None:
        words = self.values.words(s, 1, 6)
        if not words:
            return None
        method = words[0].upper()
        if method not in ("DR", "TUN", "NAT"):
            self.report.error(s.where, f"{s.keyword} {words[0]!r}: DR, TUN or NAT")
            return None
        tunnel, port = "ipip", None
        rest = iter(words[1:])
        for word in rest:
            if word == "type":
                tunnel = next(rest, "")
                if tunnel not in ("ipip", "gue", "gre"):
                    self.report.error(s.where, f"tunnel type {tunnel!r}: ipip, gue or gre")
                    return None
            elif word == "port":
                port = self.values.port(s, next(rest, ""), "GUE")
            elif word in ("nocsum", "csum", "remcsum"):
                self.report.note(s.where, f"{word}: xlb's GUE and IPIP carry no tunnel checksum")
            else:
                self.report.error(s.where, f"{s.keyword}: unknown option {word!r}")
                return None
        if method != "TUN" and len(words) > 1:
            self.report.error(s.where, f"{s.keyword} {method} takes no tunnel options")
            return None
        if (tunnel == "gue") != (port is not None):
            self.report.error(s.where, "a GUE tunnel needs its port (type gue port N), others none")
            return None
        return Forwarding(method, tunnel, port)  # type: ignore[arg-type]

    def _real_server(
        self,
        s: Statement,
        service: VirtualService,
        vs_inherited: Inherited,
        default_weight: int,
        forwarding: Forwarding | None,
        vports: set[int],
    ) -> tuple[RealServer, Candidate | None, bool | None] | None:
        words = self.values.words(s, 1, 2)
        if not words:
            return None
        address = self.values.address(s, words[0], "real server")
        port = self.values.port(s, words[1], "real server") if len(words) == 2 else None
        is_fwmark = any(e.fwmark is not None for e in service.endpoints)
        if len(words) == 1 and not is_fwmark:
            self.report.error(
                s.where, f"real_server {words[0]} has no port (real_server ADDRESS PORT)"
            )
            return None
        if address is None or (len(words) == 2 and port is None):
            return None
        real = RealServer(
            address, port or None, default_weight, forwarding or Forwarding("NAT"), s.where
        )
        inherited = Inherited()
        checkers: list[Statement] = []
        for item in s.block or []:
            key = item.keyword
            changed = inherit(item, self.values, inherited)
            if changed is not None:
                inherited = changed
            elif key in CHECKERS:
                checkers.append(item)
            elif key == "weight":
                self.values.no_block(item)
                weight = self.values.integer(item, 0, MAX_WEIGHT)
                if weight is not None:
                    real.weight = weight
            elif key == "inhibit_on_failure":
                self.values.no_block(item)
                inherited = replace(inherited, inhibit=self.values.boolean(item))
            elif key == "lvs_method":
                real.forwarding = self._forwarding(item) or real.forwarding
            elif key in _RS_WARNINGS:
                self.report.warn(item.where, _RS_WARNINGS[key])
            elif key in _RS_NOTES or key == "warmup":
                self.report.note(item.where, {**_RS_NOTES, **COMMON_NOTES}[key])
            else:
                self.report.error(item.where, f"unknown keyword {key!r} in real_server")
        settings = inherited.over(vs_inherited)
        candidate = None
        for checker in checkers:
            converted = self.checkers.convert(checker, real, settings, vports)
            if candidate is None:
                candidate = converted
            else:
                self.report.warn(
                    checker.where,
                    f"a second checker on real {address}: xlb checks a real one way "
                    f"({candidate.describe} is the one carried over)",
                )
        return real, candidate, settings.inhibit

    # ----------------------------------------------------------- checks

    def _vip_check(
        self,
        service: VirtualService,
        reals: list[tuple[RealServer, Candidate | None, bool | None]],
    ) -> tuple[Check | None, OnFailure]:
        """One check for the VIP: the one most reals have; the others are
        reported. Reals that will not be carried over (NAT, listed twice)
        have no say."""
        kept: dict[IPAddress, tuple[RealServer, Candidate | None, bool | None]] = {}
        for entry in reals:
            if entry[0].forwarding.method != "NAT":
                kept.setdefault(entry[0].address, entry)
        reals = list(kept.values())
        if not reals:
            return None, "remove"
        on_failure = self._on_failure(reals)
        checked = [(real, c) for real, c, _ in reals if c is not None]
        if not checked:
            return None, on_failure
        counts = Counter(c.check for _, c in checked)
        chosen_check = counts.most_common(1)[0][0]
        chosen = next(c for _, c in checked if c.check == chosen_check)
        for real, candidate, _ in reals:
            if candidate is None:
                self.report.warn(
                    real.where,
                    f"real {real.address} has no checker (always up in keepalived): xlb checks "
                    f"every real of a VIP, this one with {chosen.describe}",
                )
            elif candidate.check != chosen_check:
                self.report.warn(
                    candidate.where,
                    f"real {real.address}: its {candidate.describe} differs from the check the "
                    f"other reals have ({chosen.describe}); xlb checks every real of a VIP "
                    "the same way, this one with that check",
                )
        self._timing_note(service, chosen)
        if not self.probe_note_given:
            self.probe_note_given = True
            self.report.note(
                None,
                "health checks probe the VIP's address and port through the tunnel to each real "
                "(the path clients take), not each real's own address as keepalived did; "
                "via_vip = false in a [vip.check] probes the real's address instead",
            )
        return chosen_check, on_failure

    def _timing_note(self, service: VirtualService, chosen: Candidate) -> None:
        timing = chosen.check.timing
        ours = timing.fall * timing.interval
        theirs = timing.interval + chosen.retry * chosen.delay_before_retry
        if ours > theirs:
            self.report.note(
                chosen.where,
                f"{chosen.retry_text}: keepalived took a dead real out after about {theirs:g} s; "
                f"xlb after fall = {timing.fall} failed probes {timing.interval:g} s apart, about "
                f"{ours:g} s (lower the interval to detect as fast)",
            )

    def _on_failure(
        self, reals: list[tuple[RealServer, Candidate | None, bool | None]]
    ) -> OnFailure:
        inhibit = [real for real, _, flag in reals if flag]
        others = [real for real, _, flag in reals if not flag]
        # The most reals' choice; keepalived's default (remove) on a tie.
        chosen: OnFailure = "drain" if len(inhibit) > len(others) else "remove"
        differing = others if chosen == "drain" else inhibit
        meaning = {
            "drain": "a failed real keeps its established connections (weight 0)",
            "remove": "a failed real leaves the ring",
        }[chosen]
        for real in differing:
            had = "has inhibit_on_failure" if chosen == "remove" else "has no inhibit_on_failure"
            self.report.warn(
                real.where,
                f"real {real.address} {had}, {len(differing)} of the {len(reals)} reals of its "
                f'VIP do: xlb sets on_failure per VIP, "{chosen}" here ({meaning})',
            )
        return chosen


_VS_WARNINGS = {
    "persistence_engine": "persistence_engine (SIP Call-ID persistence): not carried over",
    "hysteresis": "hysteresis: xlb's quorum (bgp.min_healthy) has none; not carried over",
    "quorum_up": "quorum_up script: xlb runs no script when a VIP's health changes (the "
    "xlb_vip_healthy metric and the VIP's BGP announcement follow it); not carried over",
    "quorum_down": "quorum_down script: xlb runs no script when a VIP's health changes (the "
    "xlb_vip_healthy metric and the VIP's BGP announcement follow it); not carried over",
    "smtp_alert": "smtp_alert: xlb sends no mail (it logs each change and exports metrics)",
    "alpha": "alpha: xlb starts every real up until its checks fail (not carried over)",
    "omega": "omega: xlb runs no scripts on shutdown (not carried over)",
}
_VS_NOTES = {
    "ha_suspend": "ha_suspend: xlb checks whether or not the VIP is on this node",
    "snmp_name": "snmp_name: xlb has no SNMP (metrics: docs/metrics.md)",
    "ip_family": "ip_family: the family comes from the addresses",
    "sorry_server_inhibit": "sorry_server_inhibit: belongs to the sorry server (not carried over)",
    "sorry_server_lvs_method": "sorry_server_lvs_method: belongs to the sorry server "
    "(not carried over)",
}
_RS_WARNINGS = {
    "uthreshold": "uthreshold: xlb has no per-real connection limits; not carried over",
    "lthreshold": "lthreshold: xlb has no per-real connection limits; not carried over",
    "notify_up": "notify_up script: xlb runs no script when a real changes state (it logs "
    "event=real_up and counts it in metrics); not carried over",
    "notify_down": "notify_down script: xlb runs no script when a real changes state (it logs "
    "event=real_down and counts it in metrics); not carried over",
    "smtp_alert": "smtp_alert: xlb sends no mail (it logs each change and exports metrics)",
    "alpha": "alpha: xlb starts every real up until its checks fail (not carried over)",
}
_RS_NOTES = {"snmp_name": "snmp_name: xlb has no SNMP (metrics: docs/metrics.md)"}


def iter_statements(statements: list[Statement]) -> Iterator[Statement]:
    """Every statement, depth first (for tests and tools)."""
    for s in statements:
        yield s
        if s.block:
            yield from iter_statements(s.block)


__all__ = ["NOT_LVS", "KeepalivedReader", "iter_statements"]
