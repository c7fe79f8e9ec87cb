"""Encapsulation as it crosses real links, captured with scapy.

One packet per case is crafted with scapy and sent from the client's
interface (an AF_PACKET socket opened inside the client namespace); every
hub port that matters is captured in the router/switch namespace:

  lb port    the balancer's link: the client's packet on its way in (the
             router has forwarded it: TTL - 1 in routed mode) and the
             encapsulated packet exactly as the balancer XDP_TXed it;
  real ports the links to the reals (the reals' own eth0 runs the decap XDP
             program, which strips the outer header before AF_PACKET sees
             it): which real the encapsulated packet is delivered to.

On the balancer's link each case checks the outer Ethernet addresses
(routed: to the gateway, the router's port; bridged: to the real's MAC;
from the balancer), the outer header field by field (destination = the
real `Balancer.predict()` names, source = config.src_v4/src_v6 with the low
bits from `xlb.flowhash`, a valid IPv4 header checksum, TTL, DF, flow
label, GUE ports) and that the inner packet is byte for byte what the
client sent (less the router's TTL decrement). On the reals' links: the
packet reaches the predicted real and (routed) no other.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from xlb import Flow, Real, Vip, VipFlags
from xlb.flowhash import gue_source_port
from xlb.lab import Lab
from xlb.model import IPAddress
from xlb.testing import (
    Capture,
    Captured,
    client_next_hop_mac,
    flow_hash_of,
    outer_source,
    send_frames,
)

TTL = 64  # the balancer's outer TTL / hop limit, and what the client sends with
FIRST_PORT = 21000  # VIP ports (one per case) and client source ports


@dataclass(frozen=True)
class WireCase:
    """One encapsulation: the VIP's family and flags, the reals' family."""

    id: str
    vip_family: int
    real_family: int
    proto: str
    flags: VipFlags = VipFlags.NONE

    @property
    def gue(self) -> bool:
        return VipFlags.GUE in self.flags


CASES = [
    WireCase("ipip-tcp", 4, 4, "tcp"),
    WireCase("ipip-udp", 4, 4, "udp"),
    WireCase("ip6ip6-tcp", 6, 6, "tcp"),
    WireCase("ip6ip6-udp", 6, 6, "udp"),
    WireCase("4in6-tcp", 4, 6, "tcp"),
    WireCase("4in6-udp", 4, 6, "udp"),
    WireCase("gue4-udp", 4, 4, "udp", VipFlags.GUE),
    WireCase("gue4-tcp", 4, 4, "tcp", VipFlags.GUE),
    WireCase("gue6-tcp", 6, 6, "tcp", VipFlags.GUE),
    WireCase("gue-4in6-udp", 4, 6, "udp", VipFlags.GUE),
]


@pytest.fixture(scope="module", params=["routed", "bridged"])
def wire_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A 3-real lab with no services: each case adds its own VIP."""
    with Lab(reals=3, topology=request.param) as lab:
        yield lab


@dataclass(frozen=True)
class Sent:
    """What a case sent and the flow the balancer sees."""

    vip: Vip
    flow: Flow
    frame: bytes  # as it left the client, Ethernet header included
    token: bytes  # unique payload: finds this case's frames in a capture


@pytest.fixture
def service(wire_lab: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[WireCase, Vip]]:
    """The case's VIP (its own port) on the lab's VIP address, every real."""
    case: WireCase = request.param
    port = FIRST_PORT + CASES.index(case)
    vip = Vip(wire_lab.vip_address(case.vip_family), port, case.proto)
    wire_lab.balancer.add_vip(vip, case.flags)
    try:
        wire_lab.balancer.set_reals(vip, wire_lab.backends(case.real_family))
        yield case, vip
    finally:
        wire_lab.balancer.remove_vip(vip)


# ---------------------------------------------------------------- packets


def client_frame(lab: Lab, vip: Vip, sport: int, token: bytes) -> bytes:
    """A client's first packet of a flow to `vip` (TCP: a SYN) as raw Ethernet."""
    client = lab.client
    src = str(client.address(vip.family))
    ip: Packet = (
        IP(src=src, dst=str(vip.address), ttl=TTL, flags="DF", id=4242, tos=0x10)
        if vip.family == 4
        else IPv6(src=src, dst=str(vip.address), hlim=TTL, tc=0x10, fl=0x12345)
    )
    l4: Packet = (
        TCP(sport=sport, dport=vip.port, flags="S", seq=7, window=8192)
        if vip.proto == "tcp"
        else UDP(sport=sport, dport=vip.port)
    )
    ether = Ether(src=client.mac, dst=client_next_hop_mac(lab, client))
    return bytes(ether / ip / l4 / Raw(token))


def forwarded(ip_packet: bytes, hops: int) -> bytes:
    """An IP packet after `hops` routers: TTL / hop limit lower (IPv4 checksum redone)."""
    if not hops:
        return ip_packet
    if ip_packet[0] >> 4 == 4:
        v4 = IP(ip_packet)
        v4.ttl -= hops
        del v4.chksum
        return bytes(v4)
    v6 = IPv6(ip_packet)
    v6.hlim -= hops
    return bytes(v6)


def ipv4_checksum_ok(header: bytes) -> bool:
    """The ones' complement sum of a whole IPv4 header (checksum included) is 0xffff."""
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, len(header), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def show(frame: bytes) -> str:
    return str(Ether(frame).show(dump=True))


def assert_same(got: bytes, want: bytes, what: str) -> None:
    assert got == want, f"{what} differs\n--- got:\n{show(got)}\n--- want:\n{show(want)}"


# ------------------------------------------------------------------ capture


def is_encapsulated(frame: bytes, vip: Vip) -> bool:
    """True for a balancer output, False for the client's own packet (to the VIP)."""
    outer = Ether(frame).payload
    return ipaddress.ip_address(outer.dst) != vip.address


def send_and_capture(lab: Lab, sent: Sent) -> list[Captured]:
    """Send the case's frame, capture it on the balancer's and the reals' links
    until the lb port saw both directions and the predicted real's port saw it."""
    lb_port = lab.balancers[0].hub_port
    predicted = lab.real_by_address(expect_real(lab, sent.flow)).hub_port
    ports = [lb_port, *(r.hub_port for r in lab.reals)]

    def done(got: list[Captured]) -> bool:
        on_lb = [is_encapsulated(c.frame, sent.vip) for c in got if c.interface == lb_port]
        return True in on_lb and False in on_lb and any(c.interface == predicted for c in got)

    with Capture(lab.hub, ports) as capture:
        send_frames(lab.client.netns, lab.client.interface, [sent.frame])
        return capture.collect(lambda c: sent.token in c.frame, until=done, timeout=3.0)


def expect_real(lab: Lab, flow: Flow) -> IPAddress:
    real = lab.balancer.predict(flow)
    assert real is not None, f"the ring has no real for {flow}"
    return real


# ------------------------------------------------------------------- checks


def check_outer_ethernet(lab: Lab, frame: bytes, real: Real) -> None:
    eth = Ether(frame)
    gateway = lab.balancers[0].hub_mac  # the router's port facing the balancer
    want_dst = real.mac if lab.topology == "bridged" else gateway
    assert eth.dst == want_dst, show(frame)
    assert eth.src == lab.balancers[0].mac, show(frame)
    assert eth.type == (0x0800 if real.address.version == 4 else 0x86DD), show(frame)


def check_outer_ip(lab: Lab, frame: bytes, case: WireCase, sent: Sent, real: Real) -> int:
    """Check the outer IP header; the length of the headers before the inner packet."""
    config = lab.balancer.config
    h = flow_hash_of(sent.flow, config, case.flags)
    outer = Ether(frame).payload
    raw = bytes(outer)
    assert ipaddress.ip_address(outer.dst) == real.address, show(frame)
    src = ipaddress.ip_address(outer.src)
    assert src == outer_source(sent.flow, real.address.version, config, case.flags)
    want_proto = 17 if case.gue else (4 if case.vip_family == 4 else 41)
    if real.address.version == 4:
        assert src in ipaddress.ip_network(f"{config.src_v4}/16")
        assert (outer.ihl, outer.ttl, outer.proto, outer.id) == (5, TTL, want_proto, 0)
        assert outer.len == len(raw), show(frame)
        assert ipv4_checksum_ok(raw[:20]), f"bad outer IPv4 checksum\n{show(frame)}"
        assert str(outer.flags) == "DF"  # copied from the inner IPv4 (RFC 2003)
        assert outer.tos == 0x10
        header = 20
    else:
        assert src in ipaddress.ip_network(f"{config.src_v6}/96")
        assert (outer.hlim, outer.nh, outer.fl) == (TTL, want_proto, h & 0xFFFFF)
        assert outer.plen == len(raw) - 40, show(frame)
        assert outer.tc == 0x10
        header = 40
    if case.gue:
        gue = UDP(raw[header : header + 8])
        assert (gue.sport, gue.dport) == (gue_source_port(h), config.gue_port)
        assert (gue.len, gue.chksum) == (len(raw) - header, 0)
        header += 8
    return header


def check_inner(lab: Lab, frame: bytes, header: int, sent: Sent, arrived: bytes) -> None:
    """The inner packet is the client's, as it arrived at the balancer."""
    inner = Ether(frame)
    inner_bytes = bytes(inner.payload)[header:]
    arrived_ip = bytes(Ether(arrived).payload)
    assert_same(inner_bytes, arrived_ip, "inner packet vs the packet that reached the balancer")
    hops = 1 if lab.topology == "routed" else 0
    sent_ip = bytes(Ether(sent.frame).payload)
    assert_same(inner_bytes, forwarded(sent_ip, hops), "inner packet vs what the client sent")


def check_delivery(lab: Lab, got: list[Captured], sent: Sent, real: Real, at_lb: bytes) -> None:
    """The encapsulated packet leaves the hub towards the predicted real."""
    node = lab.real_by_address(real.address)
    reals = {r.hub_port for r in lab.reals}
    copies = [c for c in got if c.interface in reals and is_encapsulated(c.frame, sent.vip)]
    ports = {c.interface for c in copies}
    assert node.hub_port in ports, f"nothing reached {node.role}; saw {ports}"
    delivered = next(c.frame for c in copies if c.interface == node.hub_port)
    if lab.topology == "bridged":  # switched: the very same frame (flooding allowed)
        assert_same(delivered, at_lb, f"frame at {node.role} vs at the balancer")
        return
    assert ports == {node.hub_port}, f"routed to {ports}, not only {node.role}"
    eth = Ether(delivered)
    assert (eth.src, eth.dst) == (node.hub_mac, node.mac), show(delivered)
    assert bytes(eth.payload) == forwarded(bytes(Ether(at_lb).payload), 1)


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("service", CASES, ids=[c.id for c in CASES], indirect=True)
def test_encapsulation_on_the_wire(wire_lab: Lab, service: tuple[WireCase, Vip]) -> None:
    case, vip = service
    sport = FIRST_PORT + CASES.index(case)
    token = f"xlb-wire-{case.id}-{secrets.token_hex(6)}".encode()
    flow = Flow(wire_lab.client.address(vip.family), vip.address, sport, vip.port, vip.proto)
    sent = Sent(vip, flow, client_frame(wire_lab, vip, sport, token), token)

    got = send_and_capture(wire_lab, sent)

    lb_port = wire_lab.balancers[0].hub_port
    at_lb = [c.frame for c in got if c.interface == lb_port]
    outputs = [f for f in at_lb if is_encapsulated(f, vip)]
    arrivals = [f for f in at_lb if not is_encapsulated(f, vip)]
    assert arrivals, "the client's packet never reached the balancer's link"
    assert len(outputs) == 1, f"{len(outputs)} encapsulated packets from the balancer: {got}"
    real = real_of(wire_lab, expect_real(wire_lab, flow), case.real_family)
    check_outer_ethernet(wire_lab, outputs[0], real)
    header = check_outer_ip(wire_lab, outputs[0], case, sent, real)
    check_inner(wire_lab, outputs[0], header, sent, arrivals[0])
    check_delivery(wire_lab, got, sent, real, outputs[0])


def test_capture_sockets_belong_to_the_namespace_they_were_made_in(wire_lab: Lab) -> None:
    """The premise of xlb.testing.wire: an AF_PACKET socket binds to an
    interface of the creating thread's namespace (the hub's ports do not
    exist in the test's own namespace)."""
    port = wire_lab.balancers[0].hub_port
    with pytest.raises(OSError):
        Capture(None, [port]).close()
    Capture(wire_lab.hub, [port]).close()


def real_of(lab: Lab, address: IPAddress, family: int) -> Real:
    """The lab's Real (with the MAC in bridged mode) for a predicted address."""
    node = lab.real_by_address(address)
    (real,) = lab.backends(family, [node.role])
    return real


def test_flows_spread_over_the_reals_on_the_wire(wire_lab: Lab) -> None:
    """Many flows to one VIP land, on the wire, on the reals the ring names."""
    vip = Vip(wire_lab.vip4, FIRST_PORT + len(CASES), "udp")
    wire_lab.balancer.add_vip(vip)
    try:
        wire_lab.balancer.set_reals(vip, wire_lab.backends(4))
        token = secrets.token_hex(6).encode()
        sports = range(30000, 30030)
        frames = [client_frame(wire_lab, vip, s, token + b"-%d" % s) for s in sports]
        ports = {r.hub_port: r for r in wire_lab.reals}
        with Capture(wire_lab.hub, list(ports)) as capture:
            send_frames(wire_lab.client.netns, wire_lab.client.interface, frames)
            got = capture.collect(
                lambda c: token in c.frame and Ether(c.frame).dst == ports[c.interface].mac,
                until=lambda got: len(got) >= len(frames),
            )
        seen = {_sport_of(c.frame, token): ports[c.interface].role for c in got}
        assert seen == wire_lab.predict(vip, sports)
        assert len(set(seen.values())) > 1
    finally:
        wire_lab.balancer.remove_vip(vip)


def _sport_of(frame: bytes, token: bytes) -> int:
    """The source port a spread-test frame carries after its token."""
    return int(frame[frame.index(token) + len(token) + 1 :])
