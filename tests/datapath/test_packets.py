"""The balancer's packet behaviour, one named case per behaviour.

Every case runs one frame through the real xlb.bpf.o with BPF_PROG_TEST_RUN
and checks the verdict, the output bytes exactly (expected frames are built
with scapy from the rules in bpf/encap.h and bpf/icmp.h, see pkt_defs.py),
and that the counters moved by exactly one action and one reason.

After the table come the behaviours that need more than one packet:
connection-table stickiness across ring changes, the hash flags, routed
PMTU errors after a ring change, per-flow outer sources and distribution.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pkt_defs import (
    CLIENT4,
    CLIENT6,
    CLIENT6_B,
    CLIENT_MAC,
    ETH_P_8021Q,
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_P_LLDP,
    NOT_VIP4,
    NOT_VIP6,
    REAL4,
    REAL4_GUE,
    REAL4_NOMAC,
    REAL6,
    REAL6_4IN6,
    REAL6_GUE,
    REAL6_NOMAC,
    REAL_MAC,
    REAL_MAC6,
    ROUTER4,
    SETUPS,
    VIP4,
    VIP4_ANY_TCP,
    VIP4_ANY_UDP,
    VIP4_DPORT_ONLY,
    VIP4_EMPTY,
    VIP4_GUE,
    VIP4_GUE6,
    VIP4_NO_CONN,
    VIP4_NO_SPORT,
    VIP4_NOMAC,
    VIP6,
    VIP6_ANY_TCP,
    VIP6_GUE,
    VIP6_NOMAC,
    ProgramLb,
    Service,
    Setup,
    assert_packet,
    config_with,
    echo4,
    echo6,
    echo_reply,
    encapsulated,
    flow_of,
    frag_needed,
    frag_needed4,
    frame,
    hash_of,
    ipv4,
    ipv6,
    packet_too_big,
    packet_too_big6,
    reply_of,
    tcp4,
    tcp6,
    udp4,
    udp6,
)
from scapy.layers.inet import ICMP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6ND_NS,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from xlb import Balancer, BpfError, Flow, Real, Vip, VipFlags
from xlb.model import IPAddress
from xlb.testing import outer_destination

TX, PASS, DROP = "XDP_TX", "XDP_PASS", "XDP_DROP"
GUE = VipFlags.GUE


@dataclass(frozen=True)
class Case:
    """One row of the table.

    setup: a key of pkt_defs.SETUPS (which VIPs, reals, flags, config).
    expected: the exact output frame, or None for "unchanged" (the output
        bytes must equal the input).
    reason: the counter (Balancer.counters() name) that must go up by one.
    vip: for forwarded packets, the VIP whose stats count the frame.
    """

    id: str
    setup: str
    packet: bytes
    verdict: str
    expected: bytes | None
    reason: str
    vip: Vip | None = None


def forward(
    id: str,
    l3: Packet,
    vip: Vip,
    real: Real,
    *,
    setup: str = "std",
    flags: VipFlags = VipFlags.NONE,
    vlan: int | None = None,
    padding: bytes = b"",
) -> Case:
    """A client packet that must come out encapsulated to `real`."""
    config = SETUPS[setup].config
    return Case(
        id,
        setup,
        frame(l3, vlan=vlan, padding=padding),
        TX,
        encapsulated(l3, real, flags=flags, config=config, padding=padding),
        "forward",
        vip,
    )


def untouched(id: str, packet: bytes, verdict: str, reason: str, setup: str = "std") -> Case:
    """A frame passed or dropped as it came."""
    return Case(id, setup, packet, verdict, None, reason)


def echoed(id: str, request: Packet, *, vlan: int | None = None) -> Case:
    """An echo request the balancer answers itself (untagged reply)."""
    return Case(id, "std", frame(request, vlan=vlan), TX, echo_reply(request), "tx_icmp_echo")


def too_big(id: str, l3: Packet, mtu: int, *, vlan: int | None = None, setup: str = "std") -> Case:
    """A packet too big for config.mtu once encapsulated: the client gets ICMP
    frag-needed / ICMPv6 packet-too-big announcing `mtu`."""
    reply = frag_needed(l3, mtu) if l3.version == 4 else packet_too_big(l3, mtu)
    return Case(id, setup, frame(l3, vlan=vlan), TX, reply, "tx_icmp_too_big")


def routed_error(
    id: str,
    error: Packet,
    vip: Vip,
    real: Real,
    client_packet: Packet,
    *,
    setup: str = "std",
    flags: VipFlags = VipFlags.NONE,
) -> Case:
    """An ICMP PMTU error that must reach the real owning the quoted flow:
    encapsulated whole, hashed as the client -> VIP flow it is about."""
    config = SETUPS[setup].config
    return Case(
        id,
        setup,
        frame(error),
        TX,
        encapsulated(error, real, flags=flags, config=config, flow=flow_of(client_packet)),
        "forward_icmp_error",
        vip,
    )


def sized(builder: Callable[..., Packet], l3_len: int, *args: object, **kwargs: object) -> Packet:
    """A packet from `builder` padded with payload to an IP length of l3_len."""
    bare = len(builder(*args, payload=b"", **kwargs))
    payload = bytes(i & 0xFF for i in range(l3_len - bare))
    packet = builder(*args, payload=payload, **kwargs)
    assert len(packet) == l3_len
    return packet


def patched(packet: Packet, offset: int, value: bytes) -> bytes:
    """The IP packet's bytes with `value` written at `offset` (malformed cases)."""
    raw = bytearray(bytes(packet))
    raw[offset : offset + len(value)] = value
    return bytes(raw)


# ---------------------------------------------------------------- the table

CASES: list[Case] = [
    # -- each encapsulation, both families
    forward("v4_tcp_ipip", tcp4(), VIP4, REAL4),
    forward("v4_tcp_syn_ipip", tcp4(flags="S", payload=b""), VIP4, REAL4),
    forward("v4_udp_4in6", udp4(), VIP4_ANY_UDP, REAL6_4IN6),
    forward("v4_gue_over_v4", udp4(VIP4_GUE), VIP4_GUE, REAL4_GUE, flags=GUE),
    forward("v4_gue_over_v6", udp4(VIP4_GUE6), VIP4_GUE6, REAL6_GUE, flags=GUE),
    forward("v6_tcp_ip6ip6", tcp6(), VIP6, REAL6),
    forward("v6_gue_over_v6", udp6(VIP6_GUE), VIP6_GUE, REAL6_GUE, flags=GUE),
    forward("gue_all_v4", tcp4(), VIP4, REAL4, setup="gue_all"),
    forward("gue_all_v6", tcp6(), VIP6, REAL6, setup="gue_all"),
    forward("gue_all_4in6", udp4(), VIP4_ANY_UDP, REAL6_4IN6, setup="gue_all"),
    # -- any-port VIPs
    forward("v4_any_port_udp_port_1", udp4(VIP4_ANY_UDP, 1), VIP4_ANY_UDP, REAL6_4IN6),
    forward("v4_any_port_tcp_port_22", tcp4(VIP4_ANY_TCP, 22), VIP4_ANY_TCP, REAL4),
    forward("v6_any_port_tcp_port_8443", tcp6(VIP6_ANY_TCP, 8443), VIP6_ANY_TCP, REAL6),
    # -- VIP flags (the hash, hence the outer source, follows them)
    forward(
        "flag_no_sport",
        tcp4(VIP4_NO_SPORT, sport=40000),
        VIP4_NO_SPORT,
        REAL4,
        flags=VipFlags.NO_SPORT,
    ),
    forward(
        "flag_no_sport_other_sport",
        tcp4(VIP4_NO_SPORT, sport=61000),
        VIP4_NO_SPORT,
        REAL4,
        flags=VipFlags.NO_SPORT,
    ),
    forward(
        "flag_dport_only",
        udp4(VIP4_DPORT_ONLY, 5353),
        VIP4_DPORT_ONLY,
        REAL4,
        flags=VipFlags.DPORT_ONLY,
    ),
    forward(
        "flag_dport_only_other_client",
        udp4(VIP4_DPORT_ONLY, 5353, src="203.0.113.77", sport=1),
        VIP4_DPORT_ONLY,
        REAL4,
        flags=VipFlags.DPORT_ONLY,
    ),
    forward(
        "flag_no_conn_table", tcp4(VIP4_NO_CONN), VIP4_NO_CONN, REAL4, flags=VipFlags.NO_CONN_TABLE
    ),
    # -- ToS / traffic class carried to the outer header
    forward("v4_tos_carried", tcp4(tos=0xB9), VIP4, REAL4),
    forward("v6_tclass_carried", tcp6(tc=0xB8, fl=0xABCDE), VIP6, REAL6),
    forward("v4_tos_into_v6_tclass", udp4(tos=0x4A), VIP4_ANY_UDP, REAL6_4IN6),
    forward("v4_gue_tos_carried", udp4(VIP4_GUE, tos=0x2E), VIP4_GUE, REAL4_GUE, flags=GUE),
    # -- VLAN in, untagged out; Ethernet padding kept after the inner packet
    forward("v4_vlan_tag_removed", tcp4(), VIP4, REAL4, vlan=5),
    forward("v6_vlan_tag_removed", tcp6(), VIP6, REAL6, vlan=4094),
    forward(
        "v4_ethernet_padding_kept", udp4(payload=b"q"), VIP4_ANY_UDP, REAL6_4IN6, padding=bytes(17)
    ),
    forward("v4_no_df_forwarded", tcp4(df=False), VIP4, REAL4),
    # -- outer MAC: the real's, else the gateway's, else no route
    forward("v4_gateway_mac", tcp4(VIP4_NOMAC), VIP4_NOMAC, REAL4_NOMAC),
    forward("v6_gateway_mac", tcp6(VIP6_NOMAC), VIP6_NOMAC, REAL6_NOMAC),
    forward("v4_real_mac_without_gateway", tcp4(), VIP4, REAL4, setup="no_gw"),
    forward("v6_real_mac_without_gateway", tcp6(), VIP6, REAL6, setup="no_gw"),
    untouched(
        "v4_no_mac_no_gateway_no_route",
        frame(tcp4(VIP4_NOMAC)),
        DROP,
        "drop_no_route",
        setup="no_gw",
    ),
    untouched(
        "v6_no_mac_no_gateway_no_route",
        frame(tcp6(VIP6_NOMAC)),
        DROP,
        "drop_no_route",
        setup="no_gw",
    ),
    untouched("vip_without_reals", frame(tcp4(VIP4_EMPTY)), DROP, "drop_no_real"),
    # -- ICMP echo to VIP addresses (port-specific VIPs too, via vip_addrs)
    echoed("v4_echo_port_specific_vip", echo4(VIP4)),
    echoed("v4_echo_any_port_vip", echo4(VIP4_ANY_UDP)),
    echoed("v4_echo_vlan_untagged_reply", echo4(VIP4), vlan=9),
    echoed("v6_echo_port_specific_vip", echo6(VIP6)),
    echoed("v6_echo_any_port_vip", echo6(VIP6_ANY_TCP)),
    echoed("v6_echo_vlan_untagged_reply", echo6(VIP6), vlan=9),
    # data summing to zero: the reply's checksum is 0xffff, never 0x0000 (RFC 1624)
    echoed("v4_echo_zero_sum_checksum_ffff", echo4(VIP4, ident=0, seq=0, payload=b"")),
    # extension headers of the request are not copied into the reply
    echoed("v6_echo_hop_by_hop_removed", echo6(VIP6, ext=IPv6ExtHdrHopByHop())),
    echoed("v6_echo_dest_opts_removed", echo6(VIP6, ext=IPv6ExtHdrDestOpt(), payload=b"x" * 33)),
    echoed("v6_echo_routing_done_removed", echo6(VIP6_ANY_TCP, ext=IPv6ExtHdrRouting())),
    echoed(
        "v6_echo_three_ext_headers_removed_vlan",
        echo6(VIP6, ext=IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()),
        vlan=7,
    ),
    # segments left: the VIP is a waypoint, not the destination
    untouched(
        "v6_echo_routing_segments_left_not_answered",
        frame(echo6(VIP6, ext=IPv6ExtHdrRouting(addresses=[CLIENT6_B]))),
        PASS,
        "pass_icmp",
    ),
    untouched("v4_echo_not_vip", frame(echo4(NOT_VIP4)), PASS, "pass_not_vip"),
    untouched("v6_echo_not_vip", frame(echo6(NOT_VIP6)), PASS, "pass_not_vip"),
    untouched("v4_icmp_timestamp_to_vip", frame(ipv4(dst=VIP4) / ICMP(type=13)), PASS, "pass_icmp"),
    untouched("v4_echo_reply_to_vip", frame(ipv4(dst=VIP4) / ICMP(type=0)), PASS, "pass_icmp"),
    untouched(
        "v6_neighbour_solicitation_to_vip",
        frame(ipv6(dst=VIP6, hlim=255) / ICMPv6ND_NS(tgt=str(VIP6.address))),
        PASS,
        "pass_icmp",
    ),
    untouched("v6_echo_reply_to_vip", frame(ipv6(dst=VIP6) / ICMPv6EchoReply()), PASS, "pass_icmp"),
    # -- PMTU errors about a VIP flow go to the real owning the flow
    routed_error("v4_frag_needed_to_real", frag_needed4(reply_of(tcp4())), VIP4, REAL4, tcp4()),
    routed_error(
        "v4_frag_needed_gue",
        frag_needed4(reply_of(udp4(VIP4_GUE))),
        VIP4_GUE,
        REAL4_GUE,
        udp4(VIP4_GUE),
        flags=GUE,
    ),
    routed_error(
        "v4_frag_needed_4in6_any_port",
        frag_needed4(reply_of(udp4(VIP4_ANY_UDP, 5000))),
        VIP4_ANY_UDP,
        REAL6_4IN6,
        udp4(VIP4_ANY_UDP, 5000),
    ),
    # a real's reply too big for the path, cut in fragments by the real: the
    # error about the first fragment (which has the ports) goes to that real
    routed_error(
        "v4_frag_needed_quoting_a_first_fragment",
        frag_needed4(
            ipv4(VIP4, CLIENT4, flags="MF") / TCP(sport=80, dport=40000, flags="A"), quote_len=28
        ),
        VIP4,
        REAL4,
        tcp4(),
    ),
    untouched(
        "v4_frag_needed_quoting_a_later_fragment",
        frame(frag_needed4(ipv4(VIP4, CLIENT4, frag=100, proto=6) / Raw(b"R" * 64))),
        PASS,
        "pass_icmp",
    ),
    routed_error(
        "v6_too_big_quoting_a_first_fragment",
        packet_too_big6(
            ipv6(VIP6, CLIENT6)
            / IPv6ExtHdrFragment(m=1, id=5)
            / TCP(sport=443, dport=40000, flags="A")
            / Raw(b"R" * 1300)
        ),
        VIP6,
        REAL6,
        tcp6(),
    ),
    untouched(
        "v6_too_big_quoting_a_later_fragment",
        frame(
            packet_too_big6(
                ipv6(VIP6, CLIENT6) / IPv6ExtHdrFragment(offset=100, nh=6, id=5) / Raw(b"R" * 64)
            )
        ),
        PASS,
        "pass_icmp",
    ),
    untouched(
        "v6_too_big_quoting_a_cut_fragment_header",
        frame(packet_too_big6(ipv6(VIP6, CLIENT6, nh=44) / Raw(b"\x06\x00\x00\x00"))),
        PASS,
        "pass_icmp",
    ),
    routed_error(
        "v4_frag_needed_no_sport_vip",
        frag_needed4(reply_of(tcp4(VIP4_NO_SPORT))),
        VIP4_NO_SPORT,
        REAL4,
        tcp4(VIP4_NO_SPORT),
        flags=VipFlags.NO_SPORT,
    ),
    routed_error(
        "v6_packet_too_big_to_real", packet_too_big6(reply_of(tcp6())), VIP6, REAL6, tcp6()
    ),
    routed_error(
        "v6_packet_too_big_gue",
        packet_too_big6(reply_of(udp6(VIP6_GUE))),
        VIP6_GUE,
        REAL6_GUE,
        udp6(VIP6_GUE),
        flags=GUE,
    ),
    routed_error(
        "v6_packet_too_big_over_mtu_still_routed",
        packet_too_big6(reply_of(tcp6())),
        VIP6,
        REAL6,
        tcp6(),
        setup="mtu1000",
    ),
    # a PMTU error is ours only when sent to the VIP that sent the quoted packet
    untouched(
        "v4_frag_needed_to_other_host_quoting_vip_flow",
        frame(frag_needed4(reply_of(tcp4()), dst=NOT_VIP4)),
        PASS,
        "pass_not_vip",
    ),
    untouched(
        "v4_frag_needed_to_other_vip_quoting_vip_flow",
        frame(frag_needed4(reply_of(tcp4()), dst=VIP4_ANY_TCP)),
        PASS,
        "pass_icmp",
    ),
    untouched(
        "v6_packet_too_big_to_other_host_quoting_vip_flow",
        frame(packet_too_big6(reply_of(tcp6()), dst=NOT_VIP6)),
        PASS,
        "pass_not_vip",
    ),
    untouched(
        "v6_packet_too_big_to_a_real_quoting_vip_flow",
        frame(packet_too_big6(reply_of(tcp6()), dst=REAL6.address)),
        PASS,
        "pass_not_vip",
    ),
    untouched(
        "v4_frag_needed_quoting_non_vip_port",
        frame(frag_needed4(reply_of(tcp4(VIP4, 22)))),
        PASS,
        "pass_icmp",
    ),
    untouched(
        "v4_frag_needed_not_vip",
        frame(frag_needed4(reply_of(tcp4(NOT_VIP4, 80)))),
        PASS,
        "pass_not_vip",
    ),
    untouched(
        "v4_port_unreachable_about_vip_flow",
        frame(
            ipv4(ROUTER4, VIP4, df=False) / ICMP(type=3, code=3) / Raw(bytes(reply_of(tcp4()))[:28])
        ),
        PASS,
        "pass_icmp",
    ),
    untouched(
        "v4_frag_needed_quote_without_ports",
        frame(frag_needed4(reply_of(tcp4()), quote_len=20)),
        PASS,
        "pass_icmp",
    ),
    # the quote must lie within the error's IP packet, not in bytes after it
    untouched(
        "v4_frag_needed_ports_beyond_ip_length",
        frame(patched(frag_needed4(reply_of(tcp4())), 2, (20 + 8 + 20).to_bytes(2, "big"))),
        PASS,
        "pass_icmp",
    ),
    untouched(
        "v6_packet_too_big_ports_beyond_payload_length",
        frame(
            patched(packet_too_big6(reply_of(tcp6()), quote_len=64), 4, (8 + 40).to_bytes(2, "big"))
        ),
        PASS,
        "pass_icmp",
    ),
    untouched(
        "v6_packet_too_big_quoting_icmp",
        frame(packet_too_big6(ipv6(VIP6, CLIENT6) / ICMPv6EchoReply(data=b"x" * 64))),
        PASS,
        "pass_icmp",
    ),
    # -- too big for config.mtu after encapsulation
    too_big("v4_df_too_big_frag_needed", sized(tcp4, 1481), 1480),
    too_big("v4_df_too_big_vlan_untagged_reply", sized(tcp4, 1500), 1480, vlan=3),
    too_big("v4_gue_df_too_big", sized(udp4, 1473, VIP4_GUE), 1472),
    too_big("v4_4in6_df_too_big", sized(udp4, 1461), 1460),
    # an IPv6 outer header is never fragmented: no DF is answered like DF
    too_big("v4_4in6_no_df_too_big", sized(udp4, 1461, df=False), 1460),
    too_big("v4_df_too_big_mtu_1000", sized(tcp4, 981), 980, setup="mtu1000"),
    forward("v4_df_fits_exactly", sized(tcp4, 1480), VIP4, REAL4),
    forward("v4_no_df_too_big_still_encapsulated", sized(tcp4, 1481, df=False), VIP4, REAL4),
    forward("v4_df_no_mtu_check", sized(tcp4, 1481), VIP4, REAL4, setup="no_mtu"),
    too_big("v6_too_big", sized(tcp6, 1461), 1460),
    too_big("v6_gue_too_big", sized(udp6, 1453), 1452),
    too_big("v6_too_big_odd_quote_mtu_clamped_1280", sized(tcp6, 1001), 1280, setup="mtu1000"),
    # the checksum sums 8 bytes a step and the last 1-7 apart (csum.h): every remainder
    *(
        too_big(f"v6_too_big_quote_{size}", sized(tcp6, size), 1280, setup="mtu1000")
        for size in range(1002, 1009)
    ),
    too_big("v6_too_big_vlan_untagged_reply", sized(tcp6, 1500), 1460, vlan=3),
    forward("v6_fits_exactly", sized(tcp6, 1460), VIP6, REAL6),
    # -- IPv4 options, fragments, IPv6 extension headers
    untouched("v4_ip_options", frame(tcp4(options=b"\x01\x01\x01\x00")), PASS, "pass_ip_options"),
    # fragments (bpf/frag.h): a first one as its 5-tuple; more in test_fragments.py
    forward("v4_fragment_first", ipv4(flags="MF") / TCP(dport=80) / Raw(b"x" * 16), VIP4, REAL4),
    forward(
        "v4_fragment_first_udp_length_of_the_datagram",
        ipv4(dst=VIP4_GUE, flags="MF") / UDP(dport=53, len=3000) / Raw(b"x" * 32),
        VIP4_GUE,
        REAL4_GUE,
        flags=GUE,
    ),
    untouched(
        "v4_fragment_first_tcp_header_cut",
        frame(ipv4(flags="MF", proto=6) / Raw(b"x" * 16)),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v4_fragment_first_udp_header_cut",
        frame(ipv4(dst=VIP4_GUE, flags="MF", proto=17) / Raw(b"x" * 7)),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v4_fragment_first_to_no_vip",
        frame(ipv4(dst=NOT_VIP4, flags="MF") / TCP(dport=80) / Raw(b"x" * 16)),
        PASS,
        "pass_not_vip",
    ),
    untouched(
        "v4_fragment_later_first_unseen",
        frame(ipv4(frag=185, proto=6) / Raw(b"x" * 24)),
        DROP,
        "drop_frag_not_found",
    ),
    untouched(
        "v4_fragment_later_to_no_vip",
        frame(ipv4(dst=NOT_VIP4, frag=185, proto=6) / Raw(b"x" * 24)),
        PASS,
        "pass_fragment",
    ),
    untouched(
        "v4_fragment_icmp", frame(ipv4(flags="MF") / ICMP() / Raw(b"x" * 16)), PASS, "pass_fragment"
    ),
    forward(
        "v6_fragment_first",
        ipv6() / IPv6ExtHdrFragment(m=1, id=9) / TCP(dport=443) / Raw(b"x" * 16),
        VIP6,
        REAL6,
    ),
    forward(
        "v6_fragment_first_after_dest_opts",
        ipv6() / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(m=1, id=9) / TCP(dport=443),
        VIP6,
        REAL6,
    ),
    forward(
        "v6_atomic_fragment",
        ipv6() / IPv6ExtHdrFragment(m=0, id=9) / TCP(dport=443) / Raw(b"x" * 16),
        VIP6,
        REAL6,
    ),
    untouched(
        "v6_fragment_later_first_unseen",
        frame(ipv6() / IPv6ExtHdrFragment(offset=100, nh=6, id=9) / Raw(b"x" * 24)),
        DROP,
        "drop_frag_not_found",
    ),
    untouched(
        "v6_fragment_of_dest_opts",
        frame(ipv6() / IPv6ExtHdrFragment(m=1, id=9) / IPv6ExtHdrDestOpt() / TCP(dport=443)),
        PASS,
        "pass_fragment",
    ),
    untouched(
        "v6_fragment_header_cut",
        frame(ipv6(nh=44) / Raw(b"\x06\x00\x00\x01")),
        DROP,
        "drop_malformed",
    ),
    forward(
        "v6_two_dest_opts_walked",
        ipv6() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / TCP(sport=9, dport=443),
        VIP6,
        REAL6,
    ),
    forward(
        "v6_four_ext_headers_walked",
        ipv6()
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting()
        / IPv6ExtHdrDestOpt()
        / TCP(sport=9, dport=443),
        VIP6,
        REAL6,
    ),
    untouched(
        "v6_five_ext_headers",
        frame(
            ipv6()
            / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrRouting()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / TCP(sport=9, dport=443)
        ),
        PASS,
        "pass_ext_hdrs",
    ),
    untouched("v6_ah", frame(ipv6() / AH(nh=6) / TCP(dport=443)), PASS, "pass_ext_hdrs"),
    untouched(
        "v6_ext_header_beyond_payload",
        frame(ipv6() / IPv6ExtHdrDestOpt(len=5, nh=6) / TCP(dport=443)),
        DROP,
        "drop_malformed",
    ),
    # -- truncated and malformed, layer by layer
    untouched("eth_header_only_ipv4", frame(b"", ethertype=ETH_P_IP), DROP, "drop_malformed"),
    untouched("eth_header_only_ipv6", frame(b"", ethertype=ETH_P_IPV6), DROP, "drop_malformed"),
    untouched("vlan_tag_truncated", frame(b"\x00\x05", ethertype=ETH_P_8021Q), PASS, "pass_not_ip"),
    untouched("double_vlan_tag", frame(tcp4(), vlan=(1, 2)), PASS, "pass_not_ip"),
    untouched(
        "v4_header_truncated", frame(bytes(tcp4())[:19], ethertype=ETH_P_IP), DROP, "drop_malformed"
    ),
    untouched(
        "v4_ihl_4", frame(patched(tcp4(), 0, b"\x44"), ethertype=ETH_P_IP), DROP, "drop_malformed"
    ),
    untouched(
        "v4_version_6_in_ipv4_frame",
        frame(patched(tcp4(), 0, b"\x65"), ethertype=ETH_P_IP),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v4_tot_len_beyond_frame",
        frame(patched(tcp4(), 2, (len(tcp4()) + 1).to_bytes(2, "big"))),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v4_tot_len_below_header",
        frame(patched(tcp4(), 2, (19).to_bytes(2, "big"))),
        DROP,
        "drop_malformed",
    ),
    untouched("v4_tcp_doff_4", frame(patched(tcp4(), 32, b"\x40")), DROP, "drop_malformed"),
    untouched(
        "v4_tcp_options_beyond_packet",
        frame(patched(tcp4(payload=b""), 32, b"\xf0")),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v4_tcp_truncated",
        frame(ipv4(proto=6) / Raw(b"\x9c\x40\x00\x50" + bytes(8))),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v4_tcp_cut_by_tot_len",
        frame(
            patched(tcp4(payload=b""), 2, (30).to_bytes(2, "big"))[:30] + bytes(10)
        ),  # header says 30 bytes: TCP beyond the packet
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v4_udp_truncated",
        frame(ipv4(dst=VIP4_ANY_UDP, proto=17) / Raw(b"\x9c\x40")),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v4_udp_len_below_8",
        frame(ipv4(dst=VIP4_ANY_UDP) / UDP(dport=53, len=7)),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v4_udp_len_beyond_packet",
        frame(ipv4(dst=VIP4_ANY_UDP) / UDP(dport=53, len=100) / Raw(b"abcd")),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v4_icmp_truncated",
        frame(ipv4(dst=VIP4, proto=1) / Raw(b"\x08\x00\xf7\xff")),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v6_header_truncated",
        frame(bytes(tcp6())[:39], ethertype=ETH_P_IPV6),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v6_version_4_in_ipv6_frame",
        frame(patched(tcp6(), 0, b"\x40"), ethertype=ETH_P_IPV6),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v6_payload_len_beyond_frame",
        frame(ipv6(plen=100) / TCP(dport=443)),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v6_tcp_truncated",
        frame(ipv6(nh=6) / Raw(b"\x9c\x40\x01\xbb" + bytes(8))),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v6_udp_len_beyond_packet",
        frame(ipv6(dst=VIP6_GUE) / UDP(dport=53, len=200) / Raw(b"abcd")),
        DROP,
        "drop_malformed",
    ),
    untouched(
        "v6_icmp_truncated", frame(ipv6(nh=58) / Raw(b"\x80\x00\x00\x00")), DROP, "drop_malformed"
    ),
    # -- not for the balancer: passed untouched
    untouched(
        "arp",
        bytes(
            Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC)
            / ARP(psrc=CLIENT4, pdst=str(VIP4.address))
        ),
        PASS,
        "pass_not_ip",
    ),
    untouched(
        "lldp",
        frame(b"\x02\x07\x04" + bytes(40), ethertype=ETH_P_LLDP, dst="01:80:c2:00:00:0e"),
        PASS,
        "pass_not_ip",
    ),
    untouched("v4_tcp_not_vip", frame(tcp4(NOT_VIP4, 80)), PASS, "pass_not_vip"),
    untouched("v4_tcp_other_port_of_vip", frame(tcp4(VIP4, 81)), PASS, "pass_not_vip"),
    untouched("v4_udp_to_tcp_vip", frame(udp4(VIP4, 80)), PASS, "pass_not_vip"),
    untouched("v4_tcp_to_udp_any_port_vip", frame(tcp4(VIP4_ANY_UDP, 80)), PASS, "pass_not_vip"),
    untouched("v6_tcp_not_vip", frame(tcp6(NOT_VIP6, 443)), PASS, "pass_not_vip"),
    untouched("v6_tcp_other_port_of_vip", frame(tcp6(VIP6, 444)), PASS, "pass_not_vip"),
    untouched(
        "v4_gre_to_vip_address",
        frame(ipv4(dst=VIP4, proto=47) / Raw(bytes(24))),
        PASS,
        "pass_proto",
    ),
    untouched(
        "v4_gre_not_vip", frame(ipv4(dst=NOT_VIP4, proto=47) / Raw(bytes(24))), PASS, "pass_not_vip"
    ),
    untouched(
        "v6_icmpv4_protocol_to_vip", frame(ipv6(dst=VIP6, nh=1) / Raw(bytes(8))), PASS, "pass_proto"
    ),
]

ACTIONS = ("xdp_aborted", "xdp_drop", "xdp_pass", "xdp_tx", "xdp_redirect")


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_runt_frames_never_reach_the_program(packet_lb: ProgramLb) -> None:
    """BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header
    (EINVAL), as a NIC never delivers them; the shortest frames the program
    sees are in the table (eth_header_only_*, vlan_tag_truncated)."""
    lb: Balancer = packet_lb(SETUPS["std"])
    for size in (0, 1, 13):
        with pytest.raises(BpfError):
            lb.run(frame(tcp4())[:size])


def test_table_is_big_and_ids_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 50
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_packet(packet_lb: ProgramLb, case: Case) -> None:
    lb: Balancer = packet_lb(SETUPS[case.setup])
    before = lb.counters()
    stats_before = lb.stats(case.vip) if case.vip is not None else None
    result = lb.run(case.packet)
    delta = counter_delta(before, lb.counters())

    assert result.action == case.verdict, f"{case.id}: counters moved: {delta}"
    want = case.packet if case.expected is None else case.expected
    assert_packet(result.packet, want, case.id)
    # exactly one action and one reason, nothing else but the conn and
    # fragment counters (test_fragments.py counts those)
    counted = {k: v for k, v in delta.items() if not k.startswith(("conn_", "frag_"))}
    assert counted == {case.verdict.lower(): 1, case.reason: 1}
    if case.vip is not None and stats_before is not None:
        stats = lb.stats(case.vip)
        assert stats.packets - stats_before.packets == 1
        assert stats.bytes - stats_before.bytes == len(case.packet)


# ------------------------------------------------------- connection table

V4_POOL = [Real(f"10.1.0.{i}", mac=REAL_MAC) for i in range(1, 7)]
V6_POOL = [Real(f"fd00:1::{i}", mac=REAL_MAC6) for i in range(1, 7)]


def random_flows(n: int, vip: Vip, seed: int, proto: str | None = None) -> list[Flow]:
    rng = random.Random(seed)
    flows = []
    for _ in range(n):
        if vip.family == 4:
            src = f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        else:
            src = f"2001:db8:c:{rng.randrange(65536):x}::{rng.randrange(1, 65535):x}"
        dport = vip.port or rng.randrange(1, 65536)
        flows.append(Flow(src, vip.address, rng.randrange(1024, 65536), dport, proto or vip.proto))
    return flows


def l3_of(flow: Flow, flags: str = "A") -> Packet:
    if flow.dst.version == 4:
        builder = tcp4 if flow.proto == "tcp" else udp4
    else:
        builder = tcp6 if flow.proto == "tcp" else udp6
    extra: dict[str, Any] = {"flags": flags, "payload": b"data"} if flow.proto == "tcp" else {}
    return builder(str(flow.dst), flow.dport, src=str(flow.src), sport=flow.sport, **extra)


def real_by_address(reals: list[Real]) -> dict[str, Real]:
    return {str(r.address): r for r in reals}


def run_flow(
    lb: Balancer,
    flow: Flow,
    flags: str = "A",
    vip_flags: VipFlags = VipFlags.NONE,
    alternate: IPAddress | None = None,
) -> str:
    """Send one packet of `flow`; check it came out encapsulated exactly as
    the spec says for the real it went to (with second chance's carrier of
    `alternate`, if given); return that real's address."""
    l3 = l3_of(flow, flags)
    result = lb.run(frame(l3))
    assert result.action == TX
    dst = str(outer_destination(result.packet))
    pool = real_by_address(V4_POOL + V6_POOL)
    carried = None if alternate is None else str(alternate)
    assert_packet(result.packet, encapsulated(l3, pool[dst], flags=vip_flags, alternate=carried))
    return dst


@pytest.mark.parametrize(
    ("vip", "pool"),
    [
        (Vip("192.0.2.110", 80, "tcp"), V4_POOL),
        (Vip("2001:db8::110", 80, "tcp"), V6_POOL),
        (Vip("192.0.2.111", 0, "udp"), V4_POOL),
        (Vip("2001:db8::111", 0, "udp"), V6_POOL),
    ],
    ids=["v4_tcp", "v6_tcp", "v4_udp", "v6_udp"],
)
def test_conn_table_keeps_flows_across_a_ring_change(
    packet_lb: ProgramLb, vip: Vip, pool: list[Real]
) -> None:
    lb: Balancer = packet_lb(Setup((Service(vip, tuple(pool[:2]), ring_size=1009),)))
    flows = random_flows(120, vip, seed=21)
    owner = {f: run_flow(lb, f, "S") for f in flows}
    lb.set_reals(vip, pool)  # 2 -> 6 reals: about 2/3 of the flows' slots move
    moved = [f for f in flows if str(lb.predict(f)) != owner[f]]
    assert len(moved) > 40

    before = lb.counters()
    for f in flows:  # established: the connection table wins over the new ring
        assert run_flow(lb, f, "A") == owner[f]
    delta = counter_delta(before, lb.counters())
    assert delta.get("conn_hit") == len(flows)
    assert "conn_miss" not in delta

    if vip.proto == "tcp":  # a new SYN on the same 5-tuple re-selects from the ring
        before = lb.counters()
        for f in moved:
            assert run_flow(lb, f, "S") == str(lb.predict(f))
        delta = counter_delta(before, lb.counters())
        assert delta.get("conn_syn_reset") == len(moved)
        assert delta.get("conn_miss") == len(moved)
        for f in moved:  # ...and the connection follows the new real from then on
            assert run_flow(lb, f, "A") == str(lb.predict(f))


def test_removed_real_is_a_conn_table_miss(packet_lb: ProgramLb) -> None:
    vip = Vip("192.0.2.112", 80, "tcp")
    lb: Balancer = packet_lb(Setup((Service(vip, tuple(V4_POOL[:3]), ring_size=1009),)))
    flows = random_flows(100, vip, seed=22)
    owner = {f: run_flow(lb, f, "S") for f in flows}
    gone = str(V4_POOL[0].address)
    lb.remove_real(vip, gone)
    for f in flows:
        # a miss: the ring, and second chance carries the removed real
        alternate = lb.alternate(f) if owner[f] == gone else None
        assert alternate == (V4_POOL[0].address if owner[f] == gone else None)
        now = run_flow(lb, f, "A", alternate=alternate)
        assert now == (str(lb.predict(f)) if owner[f] == gone else owner[f])


def test_no_conn_table_flag_follows_the_ring(packet_lb: ProgramLb) -> None:
    vip = Vip("192.0.2.113", 80, "tcp")
    flags = VipFlags.NO_CONN_TABLE
    lb: Balancer = packet_lb(Setup((Service(vip, tuple(V4_POOL[:2]), flags, 1009),)))
    flows = random_flows(100, vip, seed=23)
    owner = {f: run_flow(lb, f, "S", flags) for f in flows}
    lb.set_reals(vip, V4_POOL)
    before = lb.counters()
    now = {f: run_flow(lb, f, "A", flags, alternate=lb.alternate(f)) for f in flows}
    delta = counter_delta(before, lb.counters())
    assert all(now[f] == str(lb.predict(f)) for f in flows)
    assert sum(now[f] != owner[f] for f in flows) > 30
    assert not any(k.startswith("conn_") for k in delta)  # the table is not consulted
    # second chance names the real each moved flow had
    assert delta["sc_carried"] == sum(now[f] != owner[f] for f in flows)
    assert list(lb.map("conn_v4").keys()) == []


def test_udp_conn_entry_expires_after_udp_ttl(packet_lb: ProgramLb) -> None:
    """The data plane's clock cannot be injected: a hit is checked on two
    packets sent well within the TTL (retried if the machine stalled that
    long), expiry after sleeping past it (time only moves forward)."""
    ttl = 0.5
    vip = Vip("192.0.2.114", 0, "udp")
    config = config_with(udp_ttl_s=ttl)
    lb: Balancer = packet_lb(Setup((Service(vip, (V4_POOL[0],)),), config))
    packet = frame(udp4(vip, 53))
    for _ in range(5):
        started = time.monotonic()
        lb.run(packet)
        before = lb.counters()
        lb.run(packet)
        if time.monotonic() - started < ttl / 2:
            break
    assert counter_delta(before, lb.counters()) == {"conn_hit": 1, "forward": 1, "xdp_tx": 1}
    time.sleep(ttl + 0.1)  # past the TTL: a lower bound, whatever the load
    before = lb.counters()
    lb.run(packet)
    delta = counter_delta(before, lb.counters())
    assert delta == {"conn_expired": 1, "conn_miss": 1, "forward": 1, "xdp_tx": 1}


# ------------------------------------------------------------ hash flags


def outer_source(packet: bytes) -> str:
    ethertype = int.from_bytes(packet[12:14], "big")
    if ethertype == ETH_P_IP:
        return str(ipaddress.IPv4Address(packet[26:30]))
    return str(ipaddress.IPv6Address(packet[22:38]))


def test_no_sport_keeps_a_client_on_one_real(packet_lb: ProgramLb) -> None:
    vip = Vip("192.0.2.115", 80, "tcp")
    flags = VipFlags.NO_SPORT
    lb: Balancer = packet_lb(Setup((Service(vip, tuple(V4_POOL), flags, 1009),)))
    rng = random.Random(5)
    for client in ("198.18.0.1", "198.18.0.2", "198.18.7.9"):
        flows = [Flow(client, vip.address, rng.randrange(1024, 65536), 80) for _ in range(30)]
        reals = {run_flow(lb, f, "S", flags) for f in flows}
        sources = {outer_source(lb.run(frame(l3_of(f))).packet) for f in flows}
        assert len(reals) == 1 and len(sources) == 1


def test_dport_only_sends_every_client_of_a_port_to_one_real(packet_lb: ProgramLb) -> None:
    vip = Vip("192.0.2.116", 0, "udp")
    flags = VipFlags.DPORT_ONLY
    lb: Balancer = packet_lb(Setup((Service(vip, tuple(V4_POOL), flags, 1009),)))
    rng = random.Random(6)
    seen_by_port = {}
    for dport in (53, 123, 5353, 8080, 9999, 40000):
        flows = [
            Flow(
                f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                vip.address,
                rng.randrange(1024, 65536),
                dport,
                "udp",
            )
            for _ in range(20)
        ]
        reals = {run_flow(lb, f, "A", flags) for f in flows}
        assert len(reals) == 1
        seen_by_port[dport] = reals.pop()
    assert len(set(seen_by_port.values())) > 1  # different ports, different reals


# ---------------------------------------------------------- PMTU routing


@pytest.mark.parametrize("family", [4, 6])
def test_pmtu_error_follows_the_connection_not_the_new_ring(
    packet_lb: ProgramLb, family: int
) -> None:
    vip = Vip("192.0.2.117" if family == 4 else "2001:db8::117", 443, "tcp")
    pool = V4_POOL if family == 4 else V6_POOL
    lb: Balancer = packet_lb(Setup((Service(vip, tuple(pool[:2]), ring_size=1009),)))
    flows = random_flows(100, vip, seed=30)
    owner = {f: run_flow(lb, f, "S") for f in flows}
    lb.set_reals(vip, pool)
    moved = [f for f in flows if str(lb.predict(f)) != owner[f]][:10]
    assert moved
    by_addr = real_by_address(pool)
    for f in moved:
        reply = reply_of(l3_of(f))
        error = frag_needed4(reply) if family == 4 else packet_too_big6(reply)
        result = lb.run(frame(error))
        assert result.action == TX
        assert_packet(result.packet, encapsulated(error, by_addr[owner[f]], flow=flow_of(l3_of(f))))


def test_pmtu_error_for_unknown_flow_uses_the_ring_and_learns_nothing(packet_lb: ProgramLb) -> None:
    vip = Vip("192.0.2.118", 443, "tcp")
    lb: Balancer = packet_lb(Setup((Service(vip, tuple(V4_POOL), ring_size=1009),)))
    by_addr = real_by_address(V4_POOL)
    for f in random_flows(40, vip, seed=31):
        error = frag_needed4(reply_of(l3_of(f)))
        result = lb.run(frame(error))
        assert result.action == TX
        want = by_addr[str(lb.predict(f))]
        assert_packet(result.packet, encapsulated(error, want, flow=flow_of(l3_of(f))))
    assert list(lb.map("conn_v4").keys()) == []


# --------------------------------------------------------- ICMP echo / vip_addrs


def test_echo_answered_only_while_the_address_has_a_vip(packet_lb: ProgramLb) -> None:
    web, dns = Vip("192.0.2.119", 443, "tcp"), Vip("192.0.2.119", 53, "udp")
    lb: Balancer = packet_lb(Setup((Service(web, (REAL4,)), Service(dns, (REAL4,)))))
    request = frame(echo4(web))
    assert lb.run(request).action == TX
    lb.remove_vip(web)
    assert_packet(lb.run(request).packet, echo_reply(echo4(web)))  # dns still lives there
    lb.remove_vip(dns)
    result = lb.run(request)
    assert (result.action, result.packet) == (PASS, request)


# ---------------------------------------------- outer source per flow (hash)


@pytest.mark.parametrize("seed", [0, 0xFFFFFFFF, 0x5EED1234])
def test_outer_source_carries_the_flow_hash(packet_lb: ProgramLb, seed: int) -> None:
    """Low 16 (v4) / 32 (v6) bits of the outer source, the v6 flow label and
    the GUE source port are the flow hash: flows spread over the real's
    queues, and the hash equals xlb.flowhash for every seed."""
    config = config_with(hash_seed=seed)
    v4, v6 = Vip("192.0.2.120", 0, "tcp"), Vip("2001:db8::120", 0, "udp")
    lb: Balancer = packet_lb(
        Setup((Service(v4, (REAL4,)), Service(v6, (REAL6_GUE,), VipFlags.GUE)), config)
    )
    sources: dict[int, set[str]] = {4: set(), 6: set()}
    for vip, real, flags in ((v4, REAL4, VipFlags.NONE), (v6, REAL6_GUE, VipFlags.GUE)):
        for f in random_flows(120, vip, seed=seed & 0xFFFF):
            l3 = l3_of(f)
            result = lb.run(frame(l3))
            assert_packet(result.packet, encapsulated(l3, real, flags=flags, config=config))
            sources[vip.family].add(outer_source(result.packet))
            h = hash_of(flow_of(l3), flags, config)
            low = ipaddress.ip_address(outer_source(result.packet)).packed[-4:]
            if vip.family == 4:
                assert int.from_bytes(low[2:], "big") == h & 0xFFFF
            else:
                assert int.from_bytes(low, "big") == h
    assert len(sources[4]) >= 118 and len(sources[6]) == 120  # 16-bit v4: rare collisions


# ------------------------------------------------------------ distribution


def fast_frames(vip: Vip, n: int, seed: int) -> list[bytes]:
    """n frames of distinct random flows to `vip`, built by patching one
    scapy template (addresses and ports only; checksums are left stale,
    which the balancer does not look at): 10,000 packets in milliseconds."""
    rng = random.Random(seed)
    template = bytearray(
        frame(tcp4(vip, payload=b"") if vip.family == 4 else tcp6(vip, payload=b""))
    )
    if vip.family == 4:
        src_at, addr_len, l4_at = 26, 4, 34
    else:
        src_at, addr_len, l4_at = 22, 16, 54
    out = []
    for _ in range(n):
        data = bytearray(template)
        data[src_at : src_at + addr_len] = rng.randbytes(addr_len)
        data[l4_at : l4_at + 2] = rng.randrange(1024, 65536).to_bytes(2, "big")
        out.append(bytes(data))
    return out


@pytest.mark.parametrize(
    ("vip", "reals"),
    [
        (Vip("192.0.2.121", 80, "tcp"), [Real(f"10.2.0.{i}", mac=REAL_MAC) for i in range(1, 6)]),
        (
            Vip("2001:db8::121", 80, "tcp"),
            [Real(f"fd00:2::{i}", mac=REAL_MAC6) for i in range(1, 6)],
        ),
        (
            Vip("2001:db8::122", 80, "tcp"),
            [Real(f"fd00:3::{i}", weight=i, mac=REAL_MAC6) for i in range(1, 4)],
        ),
    ],
    ids=["v4_equal", "v6_equal", "v6_weights_1_2_3"],
)
def test_distribution_over_10000_flows(packet_lb: ProgramLb, vip: Vip, reals: list[Real]) -> None:
    """(v4 weights are covered by test_control_plane.test_flows_spread_as_the_ring_says.)"""
    lb: Balancer = packet_lb(Setup((Service(vip, tuple(reals), ring_size=65537),)))
    counts = {str(r.address): 0 for r in reals}
    frames = fast_frames(vip, 10_000, seed=vip.family * 1000 + len(reals))
    for data in frames:
        result = lb.run(data)
        assert result.action == TX
        counts[str(outer_destination(result.packet))] += 1
    total_weight = sum(r.weight for r in reals)
    for r in reals:
        share = counts[str(r.address)] / len(frames)
        assert abs(share - r.weight / total_weight) < 0.03, counts
