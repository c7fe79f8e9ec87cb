"""The reals' decap program (bpf/decap.bpf.c), XDP and tc, on the real object.

Round trips: a client frame goes through the balancer, the balancer's output
goes through decap, and what comes out must be exactly the client's IP
packet behind the encapsulated frame's MACs with the inner family's
ethertype. Then everything decap must leave alone or refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pkt_defs import (
    ETH_P_IP,
    ETH_P_IPV6,
    GATEWAY_MAC,
    GUE_PORT,
    LB_MAC,
    REAL4,
    REAL4_GUE,
    REAL4_NOMAC,
    REAL6,
    REAL6_4IN6,
    REAL6_GUE,
    SETUPS,
    VIP4,
    VIP4_ANY_UDP,
    VIP4_GUE,
    VIP4_GUE6,
    VIP4_NOMAC,
    VIP6_GUE,
    ProgramLb,
    assert_packet,
    decapsulated,
    encapsulated,
    flow_of,
    frag_needed4,
    frame,
    packet_too_big6,
    reply_of,
    tcp4,
    tcp6,
    udp4,
    udp6,
)
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from xlb import Balancer, Real, VipFlags
from xlb.decap import Decap, DecapMode

# The reals' own addresses: outer destinations the decap program strips.
LOCAL = [REAL4, REAL4_GUE, REAL4_NOMAC, REAL6, REAL6_4IN6, REAL6_GUE]
FOREIGN4 = "10.0.0.99"
FOREIGN6 = "fd00::99"
OUTER_SRC4 = "172.16.1.2"
OUTER_SRC6 = "fd00:7862::1:2"
REAL_SIDE_MAC = "02:00:00:00:10:01"


@dataclass(frozen=True)
class Mode:
    name: str  # "xdp" | "tc"
    decap_mode: DecapMode
    passed: int  # XDP_PASS / TC_ACT_OK
    dropped: int  # XDP_DROP / TC_ACT_SHOT


MODES = [Mode("xdp", "native", 2, 1), Mode("tc", "tc", 0, 2)]
DecapUnderTest = tuple[Mode, Decap]  # the `decap` fixture


@pytest.fixture(scope="module", params=MODES, ids=[m.name for m in MODES])
def decap(request: pytest.FixtureRequest) -> Iterator[DecapUnderTest]:
    mode: Mode = request.param
    with Decap(
        addresses=[r.address for r in LOCAL],
        mode=mode.decap_mode,
        gue_port=GUE_PORT,
    ) as d:
        yield mode, d


def run_decap(d: Decap, data: bytes) -> tuple[int, bytes, dict[str, int]]:
    before = d.counters()
    result = d.program.test_run(data)
    after = d.counters()
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    return result.retval, result.data, delta


# ------------------------------------------------------------- round trips


@dataclass(frozen=True)
class RoundTrip:
    id: str
    inner: Packet  # what the client (or a router) sent, IP layer up
    real: Real
    counter: str
    flags: VipFlags = VipFlags.NONE
    flow_of: Packet | None = None  # the client packet, for routed ICMP errors
    padding: bytes = b""


ROUND_TRIPS = [
    RoundTrip("ipip", tcp4(), REAL4, "ipip"),
    RoundTrip("ip6ip6", tcp6(), REAL6, "ip6ip6"),
    RoundTrip("4in6", udp4(), REAL6_4IN6, "4in6"),
    RoundTrip("gue_v4_in_v4", udp4(VIP4_GUE), REAL4_GUE, "gue", VipFlags.GUE),
    RoundTrip("gue_v4_in_v6", udp4(VIP4_GUE6), REAL6_GUE, "gue", VipFlags.GUE),
    RoundTrip("gue_v6_in_v6", udp6(VIP6_GUE), REAL6_GUE, "gue", VipFlags.GUE),
    RoundTrip("ipip_via_gateway_mac", tcp4(VIP4_NOMAC), REAL4_NOMAC, "ipip"),
    RoundTrip("ipip_tos_and_payload", tcp4(tos=0xB9, payload=bytes(range(256)) * 4), REAL4, "ipip"),
    RoundTrip("4in6_ethernet_padding", udp4(payload=b"q"), REAL6_4IN6, "4in6", padding=bytes(17)),
    RoundTrip(
        "ipip_routed_frag_needed", frag_needed4(reply_of(tcp4())), REAL4, "ipip", flow_of=tcp4()
    ),
    RoundTrip(
        "ip6ip6_routed_packet_too_big",
        packet_too_big6(reply_of(tcp6())),
        REAL6,
        "ip6ip6",
        flow_of=tcp6(),
    ),
]


@pytest.mark.parametrize("trip", ROUND_TRIPS, ids=[t.id for t in ROUND_TRIPS])
def test_decap_returns_the_original_inner_packet(
    packet_lb: ProgramLb, decap: DecapUnderTest, trip: RoundTrip
) -> None:
    mode, d = decap
    lb: Balancer = packet_lb(SETUPS["std"])
    client_frame = frame(trip.inner, padding=trip.padding)
    encap = lb.run(client_frame)
    assert encap.action == "XDP_TX"
    dmac = trip.real.mac or GATEWAY_MAC
    flow = flow_of(trip.flow_of) if trip.flow_of is not None else None
    # what travels to the real is what the spec says (the table checks it too)
    want = encapsulated(trip.inner, trip.real, flags=trip.flags, flow=flow, padding=trip.padding)
    assert_packet(encap.packet, want, "balancer output")

    retval, out, delta = run_decap(d, encap.packet)
    assert retval == mode.passed
    assert_packet(
        out, decapsulated(trip.inner, dst=dmac, src=LB_MAC, padding=trip.padding), "decap output"
    )
    assert delta == {trip.counter: 1}


@pytest.mark.parametrize("trip", ROUND_TRIPS[:6], ids=[t.id for t in ROUND_TRIPS[:6]])
def test_xdp_decap_keeps_the_vlan_tag(packet_lb: ProgramLb, trip: RoundTrip) -> None:
    """XDP sees the tag in the frame and keeps it in front of the inner packet.
    (At tc ingress the kernel has already moved the tag out of the frame, see
    __netif_receive_skb_core(), which BPF_PROG_TEST_RUN cannot reproduce.)"""
    lb: Balancer = packet_lb(SETUPS["std"])
    encap = lb.run(frame(trip.inner)).packet
    tagged = encap[:12] + b"\x81\x00\x00\x07" + encap[12:]
    dmac = trip.real.mac or GATEWAY_MAC
    with Decap(addresses=[r.address for r in LOCAL], mode="native", gue_port=GUE_PORT) as d:
        retval, out, delta = run_decap(d, tagged)
    assert retval == 2
    assert_packet(out, decapsulated(trip.inner, dst=dmac, src=LB_MAC, vlan=7))
    assert delta == {trip.counter: 1}


# --------------------------------------------------- left alone or refused


def outer4(dst: str, inner: Packet | bytes, proto: int = 4, **fields: Any) -> bytes:
    fields.setdefault("flags", "DF")
    return frame(
        IP(src=OUTER_SRC4, dst=dst, proto=proto, ttl=64, **fields) / Raw(bytes(inner)),
        src=LB_MAC,
        dst=REAL_SIDE_MAC,
    )


def outer6(dst: str, inner: Packet | bytes, nh: int = 41) -> bytes:
    return frame(
        IPv6(src=OUTER_SRC6, dst=dst, nh=nh, hlim=64) / Raw(bytes(inner)),
        src=LB_MAC,
        dst=REAL_SIDE_MAC,
    )


def gue4(dst: str, inner: Packet | bytes, dport: int = GUE_PORT) -> bytes:
    return frame(
        IP(src=OUTER_SRC4, dst=dst, flags="DF", ttl=64)
        / UDP(sport=50000, dport=dport, chksum=0)
        / Raw(bytes(inner)),
        src=LB_MAC,
        dst=REAL_SIDE_MAC,
    )


def gue6(dst: str, inner: Packet | bytes, dport: int = GUE_PORT) -> bytes:
    return frame(
        IPv6(src=OUTER_SRC6, dst=dst, hlim=64)
        / UDP(sport=50000, dport=dport, chksum=0)
        / Raw(bytes(inner)),
        src=LB_MAC,
        dst=REAL_SIDE_MAC,
    )


R4, R6 = str(REAL4.address), str(REAL6.address)

# (id, frame, passed (True) or dropped (False), counter)
LEFT_ALONE = [
    ("ipip_foreign", outer4(FOREIGN4, tcp4()), True, "pass_foreign"),
    ("ip6ip6_foreign", outer6(FOREIGN6, tcp6()), True, "pass_foreign"),
    ("4in6_foreign", outer6(FOREIGN6, tcp4(), nh=4), True, "pass_foreign"),
    ("gue_v4_foreign", gue4(FOREIGN4, udp4(VIP4_GUE)), True, "pass_foreign"),
    ("gue_v6_foreign", gue6(FOREIGN6, udp6(VIP6_GUE)), True, "pass_foreign"),
    (
        "plain_tcp_to_real",
        frame(tcp4(R4, 22), src=LB_MAC, dst=REAL_SIDE_MAC),
        True,
        "pass_not_encap",
    ),
    (
        "plain_tcp6_to_real",
        frame(tcp6(R6, 22), src=LB_MAC, dst=REAL_SIDE_MAC),
        True,
        "pass_not_encap",
    ),
    (
        "arp",
        bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=LB_MAC) / ARP(pdst=R4)),
        True,
        "pass_not_encap",
    ),
    ("udp_other_port_to_real", gue4(R4, udp4(VIP4_GUE), dport=53), True, "pass_not_encap"),
    ("udp6_other_port_to_real", gue6(R6, udp6(VIP6_GUE), dport=53), True, "pass_not_encap"),
    ("ipv6_in_ipv4_not_decapsulated", outer4(R4, tcp6(), proto=41), True, "pass_not_encap"),
    ("ipip_outer_tot_len_beyond_frame", outer4(R4, tcp4())[:-4], True, "pass_not_encap"),
    ("ipip_outer_fragment", outer4(R4, tcp4(), flags="MF"), True, "pass_fragment"),
    (
        "ipip_outer_ip_options",
        outer4(R4, tcp4(), options=b"\x01\x01\x01\x00"),
        True,
        "pass_fragment",
    ),
    (
        "ip6ip6_outer_fragment",
        frame(
            IPv6(src=OUTER_SRC6, dst=R6) / IPv6ExtHdrFragment(m=1, nh=41) / Raw(bytes(tcp6())),
            src=LB_MAC,
            dst=REAL_SIDE_MAC,
        ),
        True,
        "pass_fragment",
    ),
    ("ipip_foreign_fragment", outer4(FOREIGN4, tcp4(), flags="MF"), True, "pass_not_encap"),
    ("ipip_inner_truncated", outer4(R4, bytes(tcp4())[:12]), False, "drop_malformed"),
    ("ipip_inner_is_ipv6", outer4(R4, tcp6()), False, "drop_malformed"),
    ("ip6ip6_inner_is_ipv4", outer6(R6, tcp4(), nh=41), False, "drop_malformed"),
    ("4in6_inner_is_ipv6", outer6(R6, tcp6(), nh=4), False, "drop_malformed"),
    ("gue_payload_not_ip", gue4(R4, bytes(30)), False, "drop_malformed"),
    ("gue_inner_ipv6_truncated", gue6(R6, bytes(tcp6())[:30]), False, "drop_malformed"),
    ("gue_empty_payload", gue4(R4, b""), False, "drop_malformed"),
]


@pytest.mark.parametrize(
    ("data", "passed", "counter"),
    [case[1:] for case in LEFT_ALONE],
    ids=[case[0] for case in LEFT_ALONE],
)
def test_decap_leaves_alone_or_refuses(
    decap: DecapUnderTest, data: bytes, passed: bool, counter: str
) -> None:
    mode, d = decap
    retval, out, delta = run_decap(d, data)
    assert retval == (mode.passed if passed else mode.dropped)
    if passed:
        assert_packet(out, data, "untouched frame")
    assert delta == {counter: 1}


def test_gue_port_zero_turns_gue_decap_off(decap: DecapUnderTest) -> None:
    mode, d = decap
    data = gue4(R4, udp4(VIP4_GUE))
    d.set_gue_port(0)
    try:
        retval, out, delta = run_decap(d, data)
    finally:
        d.set_gue_port(GUE_PORT)
    assert retval == mode.passed
    assert_packet(out, data)
    assert delta == {"pass_not_encap": 1}
    retval, out, delta = run_decap(d, data)
    assert_packet(out, decapsulated(udp4(VIP4_GUE), dst=REAL_SIDE_MAC))
    assert delta == {"gue": 1}


def test_removed_address_is_no_longer_decapsulated(decap: DecapUnderTest) -> None:
    mode, d = decap
    data = outer4(R4, tcp4(VIP4))
    d.remove_address(R4)
    try:
        retval, out, delta = run_decap(d, data)
    finally:
        d.add_address(R4)
    assert (retval, delta) == (mode.passed, {"pass_foreign": 1})
    assert_packet(out, data)
    retval, out, delta = run_decap(d, data)
    assert_packet(out, decapsulated(tcp4(VIP4), dst=REAL_SIDE_MAC))
    assert delta == {"ipip": 1}


def test_inner_ethertype_follows_the_inner_family(decap: DecapUnderTest) -> None:
    """GUE says nothing about the inner family: the version nibble decides."""
    mode, d = decap
    for inner, ethertype in ((udp4(VIP4_ANY_UDP), ETH_P_IP), (udp6(VIP6_GUE), ETH_P_IPV6)):
        for build in (gue4, gue6):
            dst = R4 if build is gue4 else R6
            retval, out, _ = run_decap(d, build(dst, inner))
            assert retval == mode.passed
            assert int.from_bytes(out[12:14], "big") == ethertype
            assert out[14:] == bytes(inner)
