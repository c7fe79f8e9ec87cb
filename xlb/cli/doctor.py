"""`xlb doctor`: check a balancer or real host end to end, in plain words.

Each check looks at one thing the kernel or the network must get right for
xlb to work and says, when it is wrong, what happens to packets and how to
fix it. A balancer host (a data plane is pinned for the interface, or the
balancer program is attached) is checked for:

- the XDP program: attached, ours, and in a mode that delivers (generic is
  slow; native on a veth loses XDP_TX frames unless the peer runs XDP);
- the checksum-offload trap: a veth peer with TX checksum offload hands
  packets with partial checksums to native XDP, which forwards them as
  they are, and the reals drop them;
- the MTU: the encapsulated packet must fit the interface (and the
  data plane's `mtu` setting must not promise more than the link carries);
- a next hop for every real (MAC, gateway MAC, or a FIB route out of the
  same interface, since XDP_TX can only send back out of it);
- rp_filter: replies from a VIP address (health-check answers) must pass
  reverse-path filtering on the interface.

A real host is checked for: the decap program (XDP or tc) and its
addresses, the VIPs on loopback, ARP settings, rp_filter and a route back
to clients, the MTU for encapsulated packets, and the same checksum trap.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .. import host, netns
from ..model import IPAddress
from ..pins import DECAP_PIN_ROOT, DEFAULT_PIN_ROOT, PIN_MARKER, pinned_interfaces
from .common import CliError

if TYPE_CHECKING:
    from ..balancer import Balancer

Status = Literal["ok", "warn", "fail", "info"]
T = TypeVar("T")

BALANCER_PROGRAM = "xlb_balancer"
DECAP_PROGRAMS = ("xlb_decap", "xlb_decap_tc")
DEFAULT_CLIENT = "198.51.100.1"  # TEST-NET-2: any client address, for route checks
ENCAP_OVERHEAD = {4: 20, 6: 40}  # outer IPv4 / IPv6 header
GUE_OVERHEAD = 8  # UDP (GUE variant 1: no GUE header) on top of the outer IP header


@dataclass(slots=True)
class Finding:
    status: Status
    check: str  # short id: xdp, mode, checksum, mtu, route, rp_filter, decap, ...
    message: str
    fix: str = ""


# ================================================================= probes


def conf_fix(interface: str, setting: str, value: int) -> str:
    """The sysctl(8) command that sets `setting` on all and on `interface`."""
    keys = (host.conf_key(interface, setting), host.conf_key("all", setting))
    return "sysctl -w " + " ".join(f"{key}={value}" for key in keys)


def _or_empty(query: Callable[[], list[T]]) -> list[T]:
    """A query's answer, or nothing where `ip` fails: the doctor reports, it does not stop."""
    try:
        return query()
    except host.IpError:
        return []


@dataclass(slots=True)
class Peer:
    name: str
    ns_path: str | None  # None: this namespace
    ns_name: str  # for messages
    link: dict[str, Any]


def veth_peer(link: dict[str, Any]) -> Peer | None:
    """The other end of a veth, wherever its namespace is (named ones and init)."""
    if link.get("linkinfo", {}).get("info_kind") != "veth":
        return None
    peer_index = link.get("link_index")
    nsid = link.get("link_netnsid")
    if nsid is None:
        name = link.get("link")
        if name:
            peer = host.link_info(name)
            return Peer(name, None, "this namespace", peer) if peer else None
        for other in _or_empty(host.links):
            if other.get("ifindex") == peer_index:
                return Peer(other["ifname"], None, "this namespace", other)
        return None
    candidates: list[tuple[str, str]] = []
    for entry in _or_empty(host.netns_ids):
        if entry.get("nsid") == nsid and entry.get("name"):
            candidates.append((str(netns.NETNS_DIR / entry["name"]), entry["name"]))
    candidates.append(("/proc/1/ns/net", "the host namespace"))
    for path, label in candidates:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.stat("/proc/thread-self/ns/net").st_ino:
                continue
        for other in _links_in(path):
            if (
                other.get("ifindex") == peer_index
                and other.get("linkinfo", {}).get("info_kind") == "veth"
            ):
                return Peer(other["ifname"], path, label, other)
    return None


def _links_in(ns_path: str) -> list[dict[str, Any]]:
    """The links of the namespace a file names; none where it cannot be entered."""
    try:
        with netns.enter_path(ns_path):
            return _or_empty(host.links)
    except OSError:
        return []


def tx_checksum_offload(interface: str, ns_path: str | None = None) -> bool | None:
    """`ethtool -k IFACE` tx-checksumming, in a namespace; None if unknown."""
    try:
        with netns.enter_path(ns_path):
            return host.get_offload(interface, "tx")
    except OSError:
        return None


# ================================================================= checks


class Doctor:
    def __init__(self, interface: str, client_mtu: int = 1500) -> None:
        self.interface = interface
        self.client_mtu = client_mtu
        self.findings: list[Finding] = []
        self.link = host.link_info(interface)

    def add(self, status: Status, check: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(status, check, message, fix))

    # ------------------------------------------------------------- shared

    def check_interface(self) -> bool:
        if self.link is None:
            self.add(
                "fail",
                "interface",
                f"there is no interface {self.interface} in this network namespace",
                "name the right one with -i (run the doctor in the namespace that has it: "
                "nsenter --net=/run/netns/NAME xlb doctor)",
            )
            return False
        kind = self.link.get("linkinfo", {}).get("info_kind", "device")
        up = "UP" in self.link.get("flags", []) and "LOWER_UP" in self.link.get("flags", [])
        if not up:
            self.add(
                "fail",
                "interface",
                f"{self.interface} is down (flags {','.join(self.link.get('flags', []))})",
                f"ip link set {self.interface} up (and its peer/cable)",
            )
        else:
            self.add(
                "ok", "interface", f"{self.interface} is up ({kind}, MTU {self.link.get('mtu')})"
            )
        return True

    def check_checksum_trap(self, xdp: host.XdpProgram | None) -> None:
        """TX checksum offload on the veth peer of an interface running native XDP."""
        if self.link is None or xdp is None or xdp.mode != "native":
            return
        peer = veth_peer(self.link)
        if self.link.get("linkinfo", {}).get("info_kind") != "veth":
            return
        if peer is None:
            self.add(
                "info",
                "checksum",
                f"the veth peer of {self.interface} is in a namespace without a name; "
                "its TX checksum offload was not checked",
            )
            return
        offload = tx_checksum_offload(peer.name, peer.ns_path)
        if offload:
            self.add(
                "fail",
                "checksum",
                f"checksum offload trap: {peer.name} (the veth peer of {self.interface}, in "
                f"{peer.ns_name}) has TX checksum offload on, and {self.interface} runs native "
                "XDP: packets sent through the peer carry partial checksums that native XDP "
                "forwards as they are, so the other side drops them as corrupt",
                f"ethtool -K {peer.name} tx off (in {peer.ns_name})",
            )
        elif offload is False:
            self.add("ok", "checksum", f"TX checksum offload is off on the veth peer {peer.name}")

    # ----------------------------------------------------------- balancer

    def balancer(self, pin_dir: Path) -> None:
        if not self.check_interface():
            return
        assert self.link is not None
        xdp = host.xdp_of(self.link)
        lb = self._open(pin_dir)
        self.check_xdp(xdp)
        self.check_mode(xdp)
        self.check_checksum_trap(xdp)
        if lb is None:
            return
        try:
            self.check_mtu(lb)
            self.check_next_hops(lb)
            self.check_rp_filter(lb)
            self.check_counters(lb)
        finally:
            lb.close(detach=False)

    def _open(self, pin_dir: Path) -> Balancer | None:
        if not (pin_dir / "vips").exists():
            self.add(
                "fail",
                "pinned",
                f"no xlb data plane is pinned at {pin_dir}",
                "start the balancer: xlb serve CONFIG (or name the pin dir with --pin-dir)",
            )
            return None
        from ..balancer import Balancer

        lb = Balancer(pin_dir=pin_dir)
        reals = sum(len(lb.reals(v)) for v in lb.vips())
        self.add(
            "ok", "pinned", f"data plane pinned at {pin_dir}: {len(lb.vips())} VIPs, {reals} reals"
        )
        return lb

    def check_xdp(self, xdp: host.XdpProgram | None) -> None:
        if xdp is None:
            self.add(
                "fail",
                "xdp",
                f"no XDP program is attached to {self.interface}: packets to the VIPs go to "
                "the host's own stack, nothing is balanced",
                "start the balancer on it: xlb serve CONFIG",
            )
        elif xdp.name != BALANCER_PROGRAM:
            self.add(
                "fail",
                "xdp",
                f"{self.interface} runs XDP program {xdp.name!r} (id {xdp.id}), "
                f"not xlb's {BALANCER_PROGRAM}",
                "detach it (ip link set dev IFACE xdp off) and start xlb serve",
            )
        else:
            self.add(
                "ok",
                "xdp",
                f"{BALANCER_PROGRAM} (id {xdp.id}) is attached in {xdp.mode} mode",
            )

    def check_mode(self, xdp: host.XdpProgram | None) -> None:
        if xdp is None or self.link is None:
            return
        kind = self.link.get("linkinfo", {}).get("info_kind")
        if xdp.mode == "generic":
            self.add(
                "warn",
                "mode",
                f"XDP runs in generic (skb) mode on {self.interface}: it works, but every packet "
                "first becomes an skb, so it forwards several times fewer packets per core",
                'use xdp_mode = "native" if the driver supports it (veth, mlx5, ice, i40e, ...)',
            )
            return
        if xdp.mode == "native" and kind == "veth":
            peer = veth_peer(self.link)
            if peer is None:
                return
            if host.xdp_of(peer.link) is None:
                self.add(
                    "fail",
                    "mode",
                    f"wrong mode: {self.interface} is a veth in native XDP mode but its peer "
                    f"{peer.name} (in {peer.ns_name}) runs no XDP program: frames the balancer "
                    "sends with XDP_TX are dropped by the peer",
                    f"attach an XDP program (even one that only passes) to {peer.name}, or run "
                    "the balancer in generic mode",
                )
            else:
                self.add("ok", "mode", f"native XDP on a veth whose peer {peer.name} runs XDP too")

    def check_mtu(self, lb: Balancer) -> None:
        assert self.link is not None
        mtu = int(self.link.get("mtu", 1500))
        configured = int(lb.config.mtu)
        gue = lb.config.gue_all or any("gue" in lb.vip_flags(v).names() for v in lb.vips())
        families = {r.address.version for v in lb.vips() for r in lb.reals(v)} or {4}
        overhead = max(ENCAP_OVERHEAD[f] for f in families) + (GUE_OVERHEAD if gue else 0)
        needed = self.client_mtu + overhead
        if configured and configured > mtu:
            self.add(
                "fail",
                "mtu",
                f"MTU too small for the encapsulation: the data plane sends outer packets up to "
                f"{configured} bytes (its mtu setting) but {self.interface} carries {mtu}: "
                f"encapsulated packets of {mtu + 1}-{configured} bytes are dropped without a trace",
                f"raise the MTU of {self.interface} and of the path to the reals to {needed} "
                f"(ip link set {self.interface} mtu {needed}), or set mtu = {mtu} in the config",
            )
        elif not configured and mtu < needed:
            self.add(
                "fail",
                "mtu",
                f"MTU too small for the encapsulation: {self.client_mtu}-byte client packets grow "
                f"by {overhead} bytes to {needed}, more than {self.interface}'s MTU {mtu}, and the "
                "data plane's MTU check is off (mtu = 0): they are dropped without a trace",
                f"raise the path MTU to {needed}, or set mtu = {mtu} so clients get "
                "'fragmentation needed' and send smaller packets",
            )
        elif min(configured, mtu) < needed:
            self.add(
                "warn",
                "mtu",
                f"the path to the reals carries {min(configured, mtu)} bytes, less than "
                f"{needed} ({self.client_mtu}-byte client packets + {overhead} bytes of "
                "encapsulation): full-size packets are answered with 'fragmentation needed' and "
                "clients depend on path MTU discovery (broken where ICMP is filtered)",
                f"raise the MTU of {self.interface} and the path to the reals to {needed}, "
                "then set mtu to match",
            )
        else:
            self.add(
                "ok",
                "mtu",
                f"MTU {mtu} (data plane mtu {configured}) fits {needed}-byte encapsulated packets",
            )

    def check_forwarding_for_fib(self) -> int:
        """bpf_fib_lookup answers only on a device that forwards."""
        key = host.conf_key(self.interface, "forwarding")
        if host.read_int(key) in (None, 1):
            return 0
        self.add(
            "fail",
            "forwarding",
            f"fib_lookup is on but IPv4 forwarding is off on {self.interface}: the kernel's "
            "FIB lookup refuses, so reals without a MAC are dropped (drop_no_route)",
            f"sysctl -w {key}=1",
        )
        return 1

    def check_next_hops(self, lb: Balancer) -> None:
        cfg = lb.config
        neighbours = _or_empty(lambda: host.neighbours(self.interface))
        macs = {str(n.get("lladdr", "")).lower() for n in neighbours}
        problems = 0
        if cfg.fib_lookup:
            problems += self.check_forwarding_for_fib()
        for vip in lb.vips():
            for real in lb.reals(vip):
                if real.mac:
                    continue
                if cfg.gateway_mac:
                    continue
                if not cfg.fib_lookup:
                    problems += 1
                    self.add(
                        "fail",
                        "route",
                        f"no route to real {real.address} (VIP {vip}): it has no MAC and the "
                        "data plane has neither gateway_mac nor fib_lookup, so its packets are "
                        "dropped (drop_no_route)",
                        "set gateway_mac (routed) or fib_lookup = true, or give the real a mac",
                    )
                    continue
                route, error = host.route_get(str(real.address))
                if route is None:
                    problems += 1
                    self.add(
                        "fail",
                        "route",
                        f"no route to real {real.address} (VIP {vip}): {error}; the data plane's "
                        "FIB lookup fails and drops its packets (drop_no_route)",
                        f"add a route to {real.address} via {self.interface}",
                    )
                elif route.get("dev") != self.interface:
                    problems += 1
                    self.add(
                        "fail",
                        "route",
                        f"the route to real {real.address} leaves through {route.get('dev')}, "
                        f"but XDP_TX can only send back out of {self.interface}: its packets "
                        "are dropped (drop_no_route)",
                        f"route {real.address} via a next hop on {self.interface}",
                    )
        if cfg.gateway_mac and cfg.gateway_mac.lower() not in macs:
            self.add(
                "warn",
                "route",
                f"gateway_mac {cfg.gateway_mac} is not among the neighbours of {self.interface}: "
                "if it is wrong, every encapsulated packet goes nowhere",
                "check the router's MAC (ip neigh) against gateway_mac",
            )
        elif problems == 0 and any(lb.reals(v) for v in lb.vips()):
            how = f"via gateway {cfg.gateway_mac}" if cfg.gateway_mac else "FIB/MAC"
            self.add("ok", "route", f"every real has a next hop out of {self.interface} ({how})")

    def check_rp_filter(self, lb: Balancer) -> None:
        own = host.addresses(self.interface, 4)
        vips = sorted({v.address for v in lb.vips() if v.family == 4})
        if not vips:
            return
        if not own:
            self.add(
                "info", "rp_filter", f"{self.interface} has no IPv4 address: rp_filter not checked"
            )
            return
        local = str(own[0].ip)
        dropped = []
        for vip in vips:
            route, error = host.route_get(local, "from", str(vip), "iif", self.interface)
            if route is None:
                dropped.append(f"{vip} ({error})")
        mode = host.conf_in_force(self.interface, "rp_filter")
        if dropped:
            self.add(
                "fail",
                "rp_filter",
                f"rp_filter (mode {mode}) on {self.interface} drops replies from "
                f"{', '.join(dropped)}: health-check answers, which the reals send from the VIP "
                "to this host, never arrive, so every real looks down",
                f"{conf_fix(self.interface, 'rp_filter', 2)} (or add a route to the VIPs via "
                f"{self.interface})",
            )
        else:
            self.add(
                "ok",
                "rp_filter",
                f"replies from the VIPs pass reverse-path filtering (mode {mode})",
            )

    def check_counters(self, lb: Balancer) -> None:
        counters = lb.counters()
        drops = {k: v for k, v in counters.items() if k.startswith("drop_") and v}
        if "drop_no_route" in drops:
            self.add(
                "warn",
                "counters",
                f"the data plane has dropped {drops['drop_no_route']} packets for lack of a next "
                "hop (drop_no_route)",
                "see the route checks above; xlb counters shows the totals",
            )
        if "drop_no_real" in drops:
            self.add(
                "warn",
                "counters",
                f"{drops['drop_no_real']} packets reached a VIP without usable reals "
                "(drop_no_real)",
                "xlb list: give every VIP a real with weight > 0",
            )

    # --------------------------------------------------------------- real

    def real(self, vips: list[IPAddress], client: str, pin_dir: Path | None) -> None:
        if not self.check_interface():
            return
        assert self.link is not None
        xdp = host.xdp_of(self.link)
        decap = self.check_decap(xdp, pin_dir)
        self.check_checksum_trap(xdp if decap == "xdp" else None)
        vips = self.check_vips_on_lo(vips)
        self.check_arp(vips)
        self.check_real_rp_filter(vips, client)
        self.check_real_mtu()

    def check_decap(self, xdp: host.XdpProgram | None, pin_dir: Path | None) -> str | None:
        if xdp is not None and xdp.name in DECAP_PROGRAMS:
            self.add("ok", "decap", f"decap program attached at XDP ({xdp.mode}, id {xdp.id})")
            self._check_decap_addresses(xdp.id, pin_dir)
            return "xdp"
        tc = [
            p for p in host.tc_ingress_programs(self.interface) if p.get("name") in DECAP_PROGRAMS
        ]
        if tc:
            self.add("ok", "decap", f"decap program attached at tc ingress (id {tc[0]['id']})")
            self._check_decap_addresses(tc[0]["id"], pin_dir)
            return "tc"
        other = f" (XDP program {xdp.name!r} is attached instead)" if xdp else ""
        self.add(
            "fail",
            "decap",
            f"missing decap: no xlb decap program on {self.interface}{other}: packets from the "
            "balancer arrive wrapped in an outer IP header and, without a tunnel device, the "
            "stack drops them",
            f"xlb real-setup -i {self.interface} --vip VIP",
        )
        return None

    def _check_decap_addresses(self, prog_id: int | None, pin_dir: Path | None) -> None:
        from .. import decap as decap_mod
        from .._bpf import Map

        decap_map: Map | None = None
        with contextlib.suppress(Exception):
            if pin_dir is not None and (pin_dir / "decap_addrs").exists():
                decap_map = Map.from_pin(pin_dir / "decap_addrs")
            elif prog_id is not None:
                for map_id in host.program_map_ids(prog_id):
                    m = Map.from_id(map_id)
                    if m.name == "decap_addrs":
                        decap_map = m
                        break
                    m.close()
        if decap_map is None:
            self.add("info", "decap", "the decap program's addresses could not be read")
            return
        try:
            stripped = {decap_mod._parse_addr_key(k) for k in decap_map.keys()}
        finally:
            decap_map.close()
        own = {a.ip for a in host.addresses(self.interface)}
        if not stripped & own:
            self.add(
                "fail",
                "decap",
                f"the decap program strips packets to {_join(stripped)}, none of which is on "
                f"{self.interface} ({_join(own)}): the balancer's packets pass undecapsulated",
                f"xlb real-setup -i {self.interface} (it uses the interface's addresses)",
            )
        else:
            self.add(
                "ok",
                "decap",
                f"decap strips packets addressed to {', '.join(sorted(map(str, stripped & own)))}",
            )

    def check_vips_on_lo(self, wanted: list[IPAddress]) -> list[IPAddress]:
        on_lo = {a.ip for a in host.addresses("lo") if not a.ip.is_loopback}
        if not wanted:
            if not on_lo:
                self.add(
                    "warn",
                    "vip",
                    "no VIP address is on lo: decapsulated packets to a VIP are not for this host "
                    "and are dropped",
                    "xlb real-setup --vip VIP (or name the VIPs to check with --vip)",
                )
            else:
                self.add("ok", "vip", f"on lo: {', '.join(sorted(map(str, on_lo)))}")
            return sorted(on_lo, key=lambda a: (a.version, a.packed))
        for vip in wanted:
            if vip in on_lo:
                self.add("ok", "vip", f"VIP {vip} is on lo")
            else:
                self.add(
                    "fail",
                    "vip",
                    f"VIP {vip} is not on lo: the stack drops decapsulated packets to it",
                    f"ip addr add {vip}/{32 if vip.version == 4 else 128} dev lo "
                    "(xlb real-setup does it)",
                )
        return list(wanted)

    def check_arp(self, vips: list[IPAddress]) -> None:
        if not any(v.version == 4 for v in vips):
            return
        ignore = host.conf_in_force(self.interface, "arp_ignore")
        announce = host.conf_in_force(self.interface, "arp_announce")
        if ignore < 1 or announce < 2:
            self.add(
                "warn",
                "arp",
                f"arp_ignore={ignore} arp_announce={announce}: this real answers ARP for the VIPs "
                "on its lo, and on a shared L2 segment it can steal the VIPs' traffic from the "
                "balancer",
                "sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2",
            )
        else:
            self.add("ok", "arp", "the VIPs on lo are not announced over ARP")

    def check_real_rp_filter(self, vips: list[IPAddress], client: str) -> None:
        version = ipaddress.ip_address(client).version
        for vip in [v for v in vips if v.version == version][:4]:
            route, error = host.route_get(str(vip), "from", client, "iif", self.interface)
            if route is None:
                mode = host.conf_in_force(self.interface, "rp_filter")
                self.add(
                    "fail",
                    "rp_filter",
                    f"rp_filter (mode {mode}) drops decapsulated packets from client {client} to "
                    f"{vip} arriving on {self.interface} ({error}): the client never gets replies",
                    f"{conf_fix(self.interface, 'rp_filter', 2)} (and a route back to the clients)",
                )
                continue
            back, error = host.route_get(client, "from", str(vip))
            if back is None:
                self.add(
                    "fail",
                    "route",
                    f"no route back to client {client} from {vip} ({error}): replies cannot leave",
                    "add a default route (replies go to clients directly, not via the balancer)",
                )
            else:
                self.add(
                    "ok",
                    "rp_filter",
                    f"packets from {client} to {vip} pass rp_filter; replies leave via "
                    f"{back.get('dev')}",
                )

    def check_real_mtu(self) -> None:
        assert self.link is not None
        mtu = int(self.link.get("mtu", 1500))
        v4 = self.client_mtu + ENCAP_OVERHEAD[4]
        if mtu < v4:
            self.add(
                "warn",
                "mtu",
                f"{self.interface}'s MTU {mtu} is smaller than a full-size client packet plus "
                f"encapsulation ({v4}): such packets are dropped here unless the balancer's mtu "
                f"setting is at most {mtu} (then clients are told to send smaller packets)",
                f"ip link set {self.interface} mtu {v4} (and the path), "
                f"or mtu = {mtu} on the balancer",
            )
        else:
            self.add("ok", "mtu", f"MTU {mtu} fits encapsulated full-size packets ({v4})")


def _join(items: Iterable[IPAddress]) -> str:
    return ", ".join(sorted(map(str, items))) or "no address"


# =================================================================== verb


def run_doctor(args: argparse.Namespace) -> int:
    interface: str | None = args.interface
    pin_dir: Path | None = args.pin_dir
    role: str = args.role
    if interface is None:
        if pin_dir is not None and pin_dir.parent == DEFAULT_PIN_ROOT:
            interface = pin_dir.name
        elif role != "real" and len(pinned_interfaces()) == 1:
            interface = pinned_interfaces()[0]
        else:
            interface = host.default_interface()
    if interface is None:
        raise CliError("cannot tell which interface to check: name it with -i IFACE")
    if role == "auto":
        xdp = host.xdp_program(interface)
        balancer_pins = pin_dir if pin_dir is not None else DEFAULT_PIN_ROOT / interface
        if (balancer_pins / PIN_MARKER).exists() or (xdp and xdp.name == BALANCER_PROGRAM):
            role = "balancer"
        else:
            role = "real"
    doctor = Doctor(interface, args.client_mtu)
    if role == "balancer":
        doctor.balancer(pin_dir if pin_dir is not None else DEFAULT_PIN_ROOT / interface)
    else:
        decap_pins = pin_dir if pin_dir is not None else DECAP_PIN_ROOT / interface
        doctor.real(list(args.vip), str(args.client or DEFAULT_CLIENT), decap_pins)
    problems = sum(1 for f in doctor.findings if f.status == "fail")
    warnings = sum(1 for f in doctor.findings if f.status == "warn")
    if args.json:
        print(
            json.dumps(
                {
                    "role": role,
                    "interface": interface,
                    "problems": problems,
                    "warnings": warnings,
                    "findings": [asdict(f) for f in doctor.findings],
                },
                indent=2,
            )
        )
        return 1 if problems else 0
    print(f"xlb doctor: {role} on {interface}")
    for f in doctor.findings:
        print(f"  {f.status.upper():<5} {f.message}")
        if f.fix and f.status in ("fail", "warn"):
            print(f"        fix: {f.fix}")
    if problems or warnings:
        print(f"{problems} problem(s), {warnings} warning(s)")
    else:
        print("no problems found")
    return 1 if problems else 0


__all__ = ["Doctor", "Finding", "run_doctor", "veth_peer"]
