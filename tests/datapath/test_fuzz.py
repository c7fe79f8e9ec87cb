"""The balancer against a seeded corpus of over 100,000 frames.

The corpus (one seed, built in a few seconds, see `build_corpus`):

* scapy `fuzz()` renders of every header the program parses: Ethernet,
  802.1Q, IPv4, IPv6 and its extension headers (hop-by-hop, routing,
  destination options, fragment), TCP, UDP, ICMP, ICMPv6, and the IP and
  port headers quoted in ICMP errors (the balancer parses no GUE: only
  the real's decap program does, see test_decap.py);
* every truncation of valid packets to and about the test VIPs;
* bad lengths: IPv4 total length, IPv6 payload length, UDP length and TCP
  data offset set to the values around every boundary;
* random byte mutations of all of the above, mostly in the headers.

Each frame goes through the real xlb.bpf.o with BPF_PROG_TEST_RUN, and
`Model` (a reference written from the rules in the header comments of
bpf/xlb.bpf.c, parse.h, encap.h and icmp.h, never from the program's
output) says what must happen to it:

* the verdict, for every frame: XDP_TX only for the cases the header
  comment of bpf/xlb.bpf.c lists (TCP/UDP to a VIP with a real, an echo
  request to a VIP address, a PMTU error sent to the VIP it is about);
* every XDP_TX output, byte for byte: the encapsulation (outer lengths and
  checksum, outer source from the flow hash, the real, inner = the input
  IP packet), or the ICMP reply (echo replies: every byte but the two
  checksums, which must verify exactly when the request's did);
* XDP_PASS and XDP_DROP frames come back unchanged;
* the counters: one action and one reason per frame, the reasons in
  exactly the numbers the model gives them.

The model is itself checked against the packet table (test_packets.py),
whose expectations were written by hand. A failure names the frame's index
in the corpus: build_corpus() gives the same frames for the same seed.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from pkt_defs import (
    CLIENT4,
    CLIENT6,
    CLIENT_MAC,
    CONFIG,
    LB_MAC,
    NOT_VIP4,
    NOT_VIP6,
    REAL6,
    ROUTER4,
    ROUTER6,
    STD_SERVICES,
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
    Service,
    Setup,
    apply,
    config_with,
    describe,
    echo4,
    echo6,
    frag_needed4,
    frame,
    ipv4,
    ipv6,
    packet_too_big6,
    reply_of,
    tcp4,
    tcp6,
    udp4,
    udp6,
)
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw, fuzz

from xlb import Balancer, BalancerConfig, Real, Vip, VipFlags
from xlb.flowhash import flow_hash, gue_source_port, outer_source_v4, outer_source_v6

SEED = 0xF0CC_2024
CORPUS_SIZE = 110_000
TIME_BUDGET_S = 60.0

TX, PASS, DROP = "XDP_TX", "XDP_PASS", "XDP_DROP"
# what the setup below can give a frame: the corpus must reach each of them
EVERY_STD_REASON = (
    *("forward", "forward_icmp_error", "tx_icmp_echo", "tx_icmp_too_big"),
    *("pass_not_ip", "pass_not_vip", "pass_proto", "pass_ip_options", "pass_fragment"),
    *("pass_ext_hdrs", "pass_icmp", "drop_malformed", "drop_no_real"),
    *("drop_frag_not_found", "drop_frag_too_big"),
)
ACTIONS = ("xdp_aborted", "xdp_drop", "xdp_pass", "xdp_tx", "xdp_redirect")

VIP6_ANY_UDP = Vip("2001:db8::60", 0, "udp")
FUZZ_SERVICES = (*STD_SERVICES, Service(VIP6_ANY_UDP, (REAL6,)))
FUZZ_SETUP = Setup(FUZZ_SERVICES, CONFIG, "the packet-table services and a v6 any-port UDP VIP")

ETH_HLEN = 14
ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q = 0x0800, 0x86DD, 0x8100
IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS = 0, 43, 44, 60
IPPROTO_ICMP, IPPROTO_IPIP, IPPROTO_TCP, IPPROTO_UDP = 1, 4, 6, 17
IPPROTO_IPV6, IPPROTO_AH, IPPROTO_ICMPV6 = 41, 51, 58
V6_EXT_HDRS = (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS)
MAX_V6_EXT_HDRS = 4
TTL = 64
V4_QUOTE_MAX, V6_QUOTE_MAX = 576 - 28, 1280 - 48


# ============================================================ checksums
#
# Sums are taken over 16-bit words in the machine's order, as bpf/csum.h
# does: a ones' complement sum is byte-order independent, so the folded
# complement stored back in the same order is the checksum.


def fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ones_sum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    return fold(sum(memoryview(data).cast("H")))


def checksum(data: bytes, pseudo: int = 0) -> bytes:
    """The Internet checksum of `data` (check field zero) plus a pseudo-header sum."""
    return (~fold(ones_sum(data) + pseudo) & 0xFFFF).to_bytes(2, sys.byteorder)


def verifies(data: bytes, pseudo: int = 0) -> bool:
    """Does `data`, check field included, carry a correct checksum?"""
    return fold(ones_sum(data) + pseudo) == 0xFFFF


def v6_pseudo(src: bytes, dst: bytes, length: int, proto: int) -> int:
    return ones_sum(src + dst + length.to_bytes(4, "big") + proto.to_bytes(4, "big"))


def mac(text: str | None) -> bytes:
    return bytes.fromhex((text or "00:00:00:00:00:00").replace(":", ""))


def u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "big")


def eth(dst: bytes, src: bytes, ethertype: int) -> bytes:
    return dst + src + ethertype.to_bytes(2, "big")


# ========================================================= the reference


@dataclass(frozen=True, slots=True)
class Target:
    """A VIP the model knows: its one real (None: no reals) and flags."""

    vip: Vip
    real: Real | None
    flags: VipFlags


@dataclass(frozen=True, slots=True)
class Headers:
    """What bpf/parse.h found: offsets from the frame start, `end` = the IP
    packet's end (the cursor's limit), addresses packed."""

    family: int
    l3_off: int
    l4_off: int
    end: int
    src: bytes
    dst: bytes
    proto: int
    tos: int
    df: bool
    frag: str | None = None  # a fragment: "first" (offset 0) or "later"
    frag_id: int = 0  # its IPv4 id or IPv6 identification

    @property
    def l3_len(self) -> int:
        return self.end - self.l3_off


@dataclass(frozen=True, slots=True)
class Sum:
    """A 2-byte checksum field of an expected output the model does not
    predict bit for bit (RFC 1624 updates carry a request's error into the
    reply): the output's field is taken, and the output's bytes
    [start, end) plus `pseudo` must verify exactly when `verified`."""

    field: int
    start: int
    end: int
    pseudo: int
    verified: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """What must happen to a frame. output: the exact frame out (None: the
    input unchanged); sums: fields of it checked by Sum's rule instead."""

    action: str
    reason: str
    output: bytes | None = None
    sums: tuple[Sum, ...] = ()


def passed(reason: str) -> Verdict:
    return Verdict(PASS, reason)


def dropped(reason: str) -> Verdict:
    return Verdict(DROP, reason)


MALFORMED = dropped("drop_malformed")


def parse(data: bytes) -> Headers | Verdict:
    """parse.h: Ethernet + at most one 802.1Q tag, then IPv4 / IPv6, then L4."""
    ethertype, l3_off = u16(data, 12), ETH_HLEN
    if ethertype == ETH_P_8021Q:
        if len(data) < ETH_HLEN + 4:
            return passed("pass_not_ip")
        ethertype, l3_off = u16(data, 16), ETH_HLEN + 4
    if ethertype == ETH_P_IP:
        found = parse_v4(data, l3_off)
    elif ethertype == ETH_P_IPV6:
        found = parse_v6(data, l3_off)
    else:
        return passed("pass_not_ip")
    if isinstance(found, Verdict):
        return found
    if found.frag is not None:
        return parse_fragment(data, found)
    return parse_l4(data, found) or found


def parse_fragment(data: bytes, h: Headers) -> Headers | Verdict:
    """frag.h: TCP/UDP fragments only; a first one must hold its L4 header
    (a UDP length is the datagram's, not checked), a later one has none."""
    if h.proto not in (IPPROTO_TCP, IPPROTO_UDP):
        return passed("pass_fragment")
    if h.frag == "later":
        return h
    l4 = h.l4_off
    if h.proto == IPPROTO_TCP:
        return parse_l4(data, h) or h
    return MALFORMED if l4 + 8 > h.end else h


def parse_v4(data: bytes, off: int) -> Headers | Verdict:
    if len(data) < off + 20:
        return MALFORMED
    version, ihl = data[off] >> 4, (data[off] & 0xF) * 4
    tot_len = u16(data, off + 2)
    if version != 4 or ihl < 20 or tot_len < ihl or off + tot_len > len(data):
        return MALFORMED
    if ihl != 20:
        return passed("pass_ip_options")
    frag = None
    if u16(data, off + 6) & 0x3FFF:
        frag = "later" if u16(data, off + 6) & 0x1FFF else "first"
    return Headers(
        family=4,
        l3_off=off,
        l4_off=off + 20,
        end=off + tot_len,
        src=data[off + 12 : off + 16],
        dst=data[off + 16 : off + 20],
        proto=data[off + 9],
        tos=data[off + 1],
        df=bool(data[off + 6] & 0x40),
        frag=frag,
        frag_id=u16(data, off + 4),
    )


def parse_v6(data: bytes, off: int) -> Headers | Verdict:
    if len(data) < off + 40 or data[off] >> 4 != 6:
        return MALFORMED
    end = off + 40 + u16(data, off + 4)
    if end > len(data):
        return MALFORMED
    nexthdr, pos = data[off + 6], off + 40
    for _ in range(MAX_V6_EXT_HDRS):
        if nexthdr not in V6_EXT_HDRS:
            break
        if pos + 8 > end:
            return MALFORMED
        nexthdr, pos = data[pos], pos + (data[pos + 1] + 1) * 8
        if pos > end:
            return MALFORMED
    frag, frag_id = None, 0
    if nexthdr == IPPROTO_FRAGMENT:
        if pos + 8 > end:
            return MALFORMED
        frag = "later" if u16(data, pos + 2) & 0xFFF8 else "first"
        nexthdr, frag_id, pos = data[pos], int.from_bytes(data[pos + 4 : pos + 8], "big"), pos + 8
    elif nexthdr in V6_EXT_HDRS or nexthdr == IPPROTO_AH:
        return passed("pass_ext_hdrs")
    return Headers(
        family=6,
        l3_off=off,
        l4_off=pos,
        end=end,
        src=data[off + 8 : off + 24],
        dst=data[off + 24 : off + 40],
        proto=nexthdr,
        tos=((data[off] & 0xF) << 4) | (data[off + 1] >> 4),
        df=False,
        frag=frag,
        frag_id=frag_id,
    )


def is_icmp(h: Headers) -> bool:
    return h.proto == (IPPROTO_ICMP if h.family == 4 else IPPROTO_ICMPV6)


def parse_l4(data: bytes, h: Headers) -> Verdict | None:
    """TCP header and options, UDP header and length, ICMP's 8 bytes: all
    within the IP packet, or DROP_MALFORMED."""
    l4 = h.l4_off
    if h.proto == IPPROTO_TCP:
        if l4 + 20 > h.end or data[l4 + 12] >> 4 < 5 or l4 + (data[l4 + 12] >> 4) * 4 > h.end:
            return MALFORMED
    elif h.proto == IPPROTO_UDP:
        if l4 + 8 > h.end or not 8 <= u16(data, l4 + 4) <= h.end - l4:
            return MALFORMED
    elif is_icmp(h) and l4 + 8 > h.end:
        return MALFORMED
    return None


Flow = tuple[bytes, bytes, int, int, int]  # client addr, VIP addr, sport, dport, proto


class Model:
    """What the balancer programmed with `setup` does to any frame."""

    def __init__(self, setup: Setup) -> None:
        self.config: BalancerConfig = setup.config
        self.targets: dict[tuple[bytes, int, int], Target] = {}
        for s in setup.services:
            key = (s.vip.address.packed, s.vip.port, 6 if s.vip.proto == "tcp" else 17)
            assert len(s.reals) <= 1, "the model knows single-real VIPs only"
            self.targets[key] = Target(s.vip, s.reals[0] if s.reals else None, s.flags)
        self.vip_addrs = {addr for addr, _, _ in self.targets}
        self.src_v4 = ipaddress.ip_address(self.config.src_v4).packed
        self.src_v6 = ipaddress.ip_address(self.config.src_v6).packed
        self.gateway = mac(self.config.gateway_mac) if self.config.gateway_mac else None
        # frag.h's `frags`: a first fragment's ports, for the later ones. The
        # model sees the frames in the program's order, so it keeps the same.
        self.first_ports: dict[tuple[bytes, bytes, int, int], tuple[int, int]] = {}

    def predict(self, data: bytes) -> Verdict:
        found = parse(data)
        if isinstance(found, Verdict):
            return found
        h = found
        if h.frag is not None:
            return self.fragment(data, h)
        if h.proto in (IPPROTO_TCP, IPPROTO_UDP):
            return self.balance(data, h)
        if is_icmp(h):
            return self.icmp(data, h)
        return passed("pass_proto" if h.dst in self.vip_addrs else "pass_not_vip")

    def lookup(self, addr: bytes, port: int, proto: int) -> Target | None:
        """vip.h lookup_vip: the exact port, then port 0."""
        target = self.targets.get((addr, port, proto))
        if target is None and port:
            target = self.targets.get((addr, 0, proto))
        return target

    def fragment(self, data: bytes, h: Headers) -> Verdict:
        """frag.h: a first fragment keeps its ports (whatever its VIP),
        a later one is balanced with them, or decided without."""
        key = (h.src, h.dst, h.frag_id, h.proto)
        if h.frag == "first":
            self.first_ports[key] = (u16(data, h.l4_off), u16(data, h.l4_off + 2))
            return self.balance(data, h)
        ports = self.first_ports.get(key)
        if ports is None:
            return (
                dropped("drop_frag_not_found")
                if h.dst in self.vip_addrs
                else passed("pass_fragment")
            )
        return self.balance(data, h, ports)

    def balance(self, data: bytes, h: Headers, ports: tuple[int, int] | None = None) -> Verdict:
        sport, dport = ports or (u16(data, h.l4_off), u16(data, h.l4_off + 2))
        target = self.lookup(h.dst, dport, h.proto)
        if target is None:
            return passed("pass_not_vip")
        flow = (h.src, h.dst, sport, dport, h.proto)
        return self.forward(data, h, target, flow, "forward")

    def forward(self, data: bytes, h: Headers, target: Target, flow: Flow, reason: str) -> Verdict:
        """xlb.bpf.c forward(): the MTU rule for client traffic, then encap."""
        real = target.real
        if real is None:
            return dropped("drop_no_real")
        if real.address.version == 4 and h.family == 6:
            return dropped("drop_encap")
        gue = VipFlags.GUE in target.flags or self.config.gue_all
        hdr_len = (20 if real.address.version == 4 else 40) + (8 if gue else 0)
        mtu = self.config.mtu
        if reason == "forward" and mtu and h.l3_len + hdr_len > mtu:
            room = max(mtu - hdr_len, 0)
            if h.family == 6:
                return self.packet_too_big(data, h, room)
            if h.df or real.address.version == 6:
                if h.frag == "later":  # no ICMP error about a later IPv4 fragment
                    return dropped("drop_frag_too_big")
                return self.frag_needed(data, h, room)
        dmac = mac(real.mac) if real.mac else self.gateway
        if dmac is None:
            return dropped("drop_no_route")
        return Verdict(TX, reason, self.encapsulated(data, h, target, flow, dmac, gue))

    def encapsulated(
        self, data: bytes, h: Headers, target: Target, flow: Flow, dmac: bytes, gue: bool
    ) -> bytes:
        """encap.h: outer header(s), then the IP packet as it came (any
        Ethernet padding after it stays after it)."""
        assert target.real is not None
        real = target.real.address.packed
        hsh = flow_hash(*flow, self.config.hash_seed, int(target.flags))
        inner = data[h.l3_off :]
        hdr_len = (20 if len(real) == 4 else 40) + (8 if gue else 0)
        udp = b""
        if gue:
            udp = struct.pack("!HHHH", gue_source_port(hsh), self.config.gue_port, h.l3_len + 8, 0)
        if len(real) == 4:
            frag = 0x4000 if h.df else 0  # DF copied from the inner IPv4 header
            proto = IPPROTO_UDP if gue else IPPROTO_IPIP
            src = outer_source_v4(self.src_v4, hsh)
            outer = v4_header(h.tos, h.l3_len + hdr_len, frag, proto, src, real)
            return eth(dmac, data[0:6], ETH_P_IP) + outer + udp + inner
        first = (6 << 28) | (h.tos << 20) | (hsh & 0xFFFFF)
        outer = (
            struct.pack("!IHBB", first, h.l3_len + hdr_len - 40, v6_next_header(h, gue), TTL)
            + outer_source_v6(self.src_v6, hsh)
            + real
        )
        return eth(dmac, data[0:6], ETH_P_IPV6) + outer + udp + inner

    def frag_needed(self, data: bytes, h: Headers, mtu: int) -> Verdict:
        """icmp.h v4_reply_too_big: ICMP 3/4 from the VIP, quote <= 548 bytes."""
        quote = data[h.l3_off : h.l3_off + min(h.l3_len, V4_QUOTE_MAX)]
        ip = v4_header(0xC0, 28 + len(quote), 0, IPPROTO_ICMP, h.dst, h.src)
        icmp = struct.pack("!BBHHH", 3, 4, 0, 0, max(mtu, 68)) + quote
        icmp = icmp[:2] + checksum(icmp) + icmp[4:]
        out = eth(data[6:12], data[0:6], ETH_P_IP) + ip + icmp
        return Verdict(TX, "tx_icmp_too_big", out)

    def packet_too_big(self, data: bytes, h: Headers, mtu: int) -> Verdict:
        """icmp.h v6_reply_too_big: ICMPv6 2/0 from the VIP, quote <= 1232 bytes."""
        quote = data[h.l3_off : h.l3_off + min(h.l3_len, V6_QUOTE_MAX)]
        icmp = struct.pack("!BBHI", 2, 0, 0, max(mtu, 1280)) + quote
        icmp = icmp[:2] + checksum(icmp, v6_pseudo(h.dst, h.src, len(icmp), 58)) + icmp[4:]
        ip = struct.pack("!IHBB", 6 << 28, len(icmp), IPPROTO_ICMPV6, TTL) + h.dst + h.src
        out = eth(data[6:12], data[0:6], ETH_P_IPV6) + ip + icmp
        return Verdict(TX, "tx_icmp_too_big", out)

    def icmp(self, data: bytes, h: Headers) -> Verdict:
        """xlb.bpf.c handle_icmp()."""
        kind, code = data[h.l4_off], data[h.l4_off + 1]
        to_vip = h.dst in self.vip_addrs
        if (h.family, kind) in ((4, 8), (6, 128)):
            if not to_vip:
                return passed("pass_not_vip")
            return self.echo_reply(data, h)
        if (h.family, kind, code) == (4, 3, 4) or (h.family, kind) == (6, 2):
            routed = self.route_icmp_error(data, h)
            if routed is not None:
                return routed
        return passed("pass_icmp" if to_vip else "pass_not_vip")

    def route_icmp_error(self, data: bytes, h: Headers) -> Verdict | None:
        """A PMTU error sent to a VIP, quoting a TCP/UDP packet from that
        VIP, goes to the real of the reversed (client -> VIP) flow. None:
        not one of ours."""
        quote = quoted_header(data, h)
        if quote is None:
            return None
        proto, qsrc, qdst, ports = quote
        if proto not in (IPPROTO_TCP, IPPROTO_UDP) or qsrc != h.dst:
            return None
        sport, dport = u16(data, ports + 2), u16(data, ports)
        target = self.lookup(qsrc, dport, proto)
        if target is None:
            return None
        flow = (qdst, qsrc, sport, dport, proto)
        return self.forward(data, h, target, flow, "forward_icmp_error")

    def echo_reply(self, data: bytes, h: Headers) -> Verdict:
        """icmp.h: untagged, MACs and addresses swapped, TTL 64, type 0/129;
        ICMPv6 without the request's extension headers, and no reply when a
        routing header has segments left."""
        back = eth(data[6:12], data[0:6], ETH_P_IP if h.family == 4 else ETH_P_IPV6)
        message = data[h.l4_off : h.end]
        if h.family == 4:
            header = bytearray(data[h.l3_off : h.l4_off])
            header[8] = TTL
            header[12:20] = h.dst + h.src
            rest = bytearray(data[h.l4_off :])
            rest[0] = 0
            ip_sum = Sum(
                ETH_HLEN + 10, ETH_HLEN, ETH_HLEN + 20, 0, verifies(data[h.l3_off : h.l4_off])
            )
            icmp_sum = Sum(ETH_HLEN + 22, ETH_HLEN + 20, ETH_HLEN + h.l3_len, 0, verifies(message))
            return Verdict(TX, "tx_icmp_echo", back + header + rest, (ip_sum, icmp_sum))
        if self.routing_pending(data, h):
            return passed("pass_icmp")
        pseudo = v6_pseudo(h.src, h.dst, len(message), IPPROTO_ICMPV6)
        ip = (
            data[h.l3_off : h.l3_off + 4]
            + struct.pack("!HBB", len(message), IPPROTO_ICMPV6, TTL)
            + h.dst
            + h.src
        )
        rest = bytearray(data[h.l4_off :])
        rest[0] = 129
        verified = verifies(message, pseudo)
        icmp_sum = Sum(ETH_HLEN + 42, ETH_HLEN + 40, ETH_HLEN + 40 + len(message), pseudo, verified)
        return Verdict(TX, "tx_icmp_echo", back + ip + rest, (icmp_sum,))

    @staticmethod
    def routing_pending(data: bytes, h: Headers) -> bool:
        nexthdr, pos = data[h.l3_off + 6], h.l3_off + 40
        while pos < h.l4_off:
            if nexthdr == IPPROTO_ROUTING and data[pos + 3]:
                return True
            nexthdr, pos = data[pos], pos + (data[pos + 1] + 1) * 8
        return False


def v6_next_header(h: Headers, gue: bool) -> int:
    if gue:
        return IPPROTO_UDP
    return IPPROTO_IPIP if h.family == 4 else IPPROTO_IPV6


def quoted_header(data: bytes, h: Headers) -> tuple[int, bytes, bytes, int] | None:
    """(protocol, source, destination, offset of the ports) of the packet an
    ICMP error quotes: IPv4 without options or IPv6, its header and ports
    within the error's IP packet; else None."""
    q = h.l4_off + 8
    if h.family == 4:
        if q + 24 > h.end or data[q] != 0x45 or u16(data, q + 6) & 0x1FFF:
            return None  # a later fragment (offset > 0) quotes no ports
        return data[q + 9], data[q + 12 : q + 16], data[q + 16 : q + 20], q + 20
    if q + 44 > h.end or data[q] >> 4 != 6:
        return None
    proto, ports = data[q + 6], q + 40
    if proto == IPPROTO_FRAGMENT:  # a first fragment: the ports follow its header
        if q + 52 > h.end or u16(data, q + 42) & 0xFFF8:
            return None
        proto, ports = data[q + 40], q + 48
    return proto, data[q + 8 : q + 24], data[q + 24 : q + 40], ports


def v4_header(tos: int, tot_len: int, frag: int, proto: int, src: bytes, dst: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH", 0x45, tos, tot_len, 0, frag, TTL, proto, 0) + src + dst
    return header[:10] + checksum(header) + header[12:]


# =============================================================== checking


def mismatch(data: bytes, action: str, out: bytes, want: Verdict) -> str | None:
    """Why the program's (action, out) is not `want`, or None."""
    if action != want.action:
        return f"verdict {action}, want {want.action} ({want.reason})"
    expected = data if want.output is None else want.output
    if want.sums:
        patched = bytearray(expected)
        for s in want.sums:
            patched[s.field : s.field + 2] = out[s.field : s.field + 2]
            if verifies(out[s.start : s.end], s.pseudo) != s.verified:
                return f"checksum at {s.field}: verifies={not s.verified}, want {s.verified}"
        expected = bytes(patched)
    if out != expected:
        first = next(
            (i for i, (a, b) in enumerate(zip(out, expected, strict=False)) if a != b), None
        )
        return (
            f"output differs ({want.reason}) at byte {first}, lengths {len(out)}/{len(expected)}"
            f"\n--- want:\n{describe(expected)}"
        )
    return None


# ================================================================= corpus


def addr(vip: Vip) -> str:
    return str(vip.address)


def ether(dst: str = LB_MAC) -> Packet:
    return Ether(dst=dst, src=CLIENT_MAC)


def sized(l3: Packet, l3_len: int) -> Packet:
    """`l3` with its last layer's payload grown to an IP length of l3_len."""
    grown = l3.copy()
    grown.lastlayer().add_payload(Raw(bytes(i & 0xFF for i in range(l3_len - len(l3)))))
    return grown


def valid_packets() -> list[Packet]:
    """IP packets the balancer forwards, answers, or passes on purpose."""
    ext_chain = IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
    return [
        tcp4(),
        tcp4(flags="S", payload=b""),
        tcp4(VIP4_ANY_TCP, 22),
        tcp4(VIP4_NOMAC),
        tcp4(VIP4_EMPTY),
        tcp4(VIP4_NO_SPORT),
        tcp4(VIP4_NO_CONN, df=False),
        udp4(),
        udp4(VIP4_ANY_UDP, 1, payload=b""),
        udp4(VIP4_GUE, tos=0x2E),
        udp4(VIP4_GUE6),
        udp4(VIP4_DPORT_ONLY, 5353),
        tcp6(),
        tcp6(VIP6_ANY_TCP, 8443, tc=0xB8, fl=0xABCDE),
        tcp6(VIP6_NOMAC),
        udp6(),
        udp6(VIP6_ANY_UDP, 4242),
        ipv6() / IPv6ExtHdrDestOpt() / TCP(sport=9, dport=443) / Raw(b"x"),
        ipv6(dst=VIP6_GUE) / ext_chain / UDP(sport=9, dport=53) / Raw(b"q"),
        echo4(VIP4),
        echo4(VIP4_ANY_UDP, ident=0, seq=0, payload=b""),
        echo6(VIP6),
        echo6(VIP6_ANY_UDP, ext=ext_chain),
        echo6(VIP6, ext=IPv6ExtHdrRouting(addresses=[CLIENT6])),
        frag_needed4(reply_of(tcp4())),
        frag_needed4(reply_of(udp4(VIP4_GUE)), quote_len=40),
        frag_needed4(reply_of(udp4(VIP4_ANY_UDP, 5000))),
        frag_needed4(reply_of(tcp4()), dst=NOT_VIP4),
        frag_needed4(reply_of(tcp4(VIP4_EMPTY))),
        packet_too_big6(reply_of(tcp6()), quote_len=64),
        packet_too_big6(reply_of(udp6(VIP6_GUE)), quote_len=48),
        packet_too_big6(reply_of(tcp6(VIP6_ANY_TCP, 22)), quote_len=44, dst=NOT_VIP6),
        tcp4(NOT_VIP4, 80),
        tcp6(NOT_VIP6, 443),
        ipv4(dst=VIP4) / ICMP(type=13),
        ipv4(dst=VIP4, proto=47) / Raw(bytes(24)),
        tcp4(options=b"\x01\x01\x01\x00"),
        # fragments: first ones, later ones of the same datagrams (after their
        # first, in corpus order), later ones whose first never comes
        ipv4(flags="MF") / TCP(dport=80) / Raw(b"x" * 16),
        ipv4(frag=2, proto=6) / Raw(b"y" * 16),
        ipv4(dst=VIP4_ANY_UDP, flags="MF", ip_id=7) / UDP(dport=5, len=900) / Raw(b"z" * 24),
        ipv4(dst=VIP4_ANY_UDP, frag=4, ip_id=7, proto=17) / Raw(b"w" * 24),
        ipv4(dst=VIP4_ANY_UDP, frag=9, ip_id=8, proto=17) / Raw(b"v" * 24),
        ipv4(dst=NOT_VIP4, frag=9, ip_id=8, proto=17) / Raw(b"v" * 24),
        ipv4(flags="MF") / ICMP() / Raw(b"i" * 16),
        ipv6() / IPv6ExtHdrFragment(m=1, id=9) / TCP(dport=443),
        ipv6() / IPv6ExtHdrFragment(offset=3, nh=6, id=9) / Raw(b"u" * 16),
        ipv6(dst=VIP6_ANY_UDP) / IPv6ExtHdrFragment(offset=3, nh=17, id=10) / Raw(b"t" * 16),
        ipv6() / AH(nh=6) / TCP(dport=443),
        ipv6() / ext_chain / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / TCP(dport=443),
    ]


def big_packets() -> list[Packet]:
    """Packets around config.mtu (1500) once encapsulated."""
    return [
        sized(tcp4(payload=b""), 1481),
        sized(tcp4(payload=b"", df=False), 1481),
        sized(udp4(VIP4_ANY_UDP, payload=b""), 1461),
        sized(udp4(VIP4_GUE, payload=b""), 1472),
        sized(tcp6(payload=b""), 1461),
        sized(udp6(VIP6_GUE, payload=b""), 1460),
        sized(tcp6(VIP6_ANY_TCP, 80, payload=b""), 1500),
        sized(ipv4(dst=VIP4_ANY_UDP, flags="MF", ip_id=11) / UDP(dport=5) / Raw(b""), 1461),
        sized(ipv4(dst=VIP4_ANY_UDP, frag=180, ip_id=11, proto=17) / Raw(b""), 1461),
        sized(ipv6(dst=VIP6_GUE) / IPv6ExtHdrFragment(m=1, id=12) / UDP(dport=53), 1461),
        sized(ipv6(dst=VIP6_GUE) / IPv6ExtHdrFragment(offset=180, id=12, nh=17) / Raw(b""), 1461),
    ]


def fuzzed_stacks() -> list[Callable[[], Packet]]:
    """Frames with one header (or a few) left to scapy's fuzz(); the others
    valid and addressed to VIPs, so that fuzzed fields meet the VIP paths."""
    v4, v6 = addr(VIP4), addr(VIP6)
    quote4 = bytes(reply_of(tcp4()))[:28]
    quote6 = bytes(reply_of(tcp6()))[:44]
    return [
        lambda: fuzz(Ether(dst=LB_MAC, src=CLIENT_MAC)) / tcp4(),
        lambda: ether() / fuzz(Dot1Q()) / tcp4(),
        lambda: ether() / fuzz(Dot1Q(type=ETH_P_IPV6)) / tcp6(),
        lambda: ether() / fuzz(IP(src=CLIENT4, dst=v4, proto=6)) / TCP(dport=80),
        lambda: ether() / fuzz(IP(src=CLIENT4, dst=v4, version=4, ihl=5, len=None)) / TCP(dport=80),
        lambda: ether() / fuzz(IP(src=CLIENT4, dst=addr(VIP4_ANY_UDP), version=4)) / UDP(),
        lambda: ether() / fuzz(IPv6(src=CLIENT6, dst=v6, nh=6)) / TCP(dport=443),
        lambda: ether() / fuzz(IPv6(src=CLIENT6, dst=v6, version=6, plen=None)) / TCP(dport=443),
        lambda: ether() / ipv6() / fuzz(IPv6ExtHdrHopByHop(nh=6)) / TCP(dport=443),
        lambda: ether() / ipv6() / fuzz(IPv6ExtHdrDestOpt()) / TCP(dport=443),
        lambda: ether() / ipv6() / fuzz(IPv6ExtHdrRouting(nh=6)) / TCP(dport=443),
        lambda: ether() / ipv6() / fuzz(IPv6ExtHdrFragment(nh=6)) / TCP(dport=443),
        lambda: ether() / ipv6(dst=VIP6) / fuzz(IPv6ExtHdrRouting(nh=58)) / ICMPv6EchoRequest(),
        lambda: ether() / ipv4() / fuzz(TCP(dport=80)),
        lambda: ether() / ipv4(dst=VIP4_ANY_TCP) / fuzz(TCP()),
        lambda: ether() / ipv6() / fuzz(TCP(dport=443)),
        lambda: ether() / ipv4(dst=VIP4_GUE) / fuzz(UDP(dport=53)),
        lambda: ether() / ipv4(dst=VIP4_ANY_UDP) / fuzz(UDP()),
        lambda: ether() / ipv6(dst=VIP6_ANY_UDP) / fuzz(UDP()),
        lambda: ether() / ipv4(dst=VIP4, df=False) / fuzz(ICMP()),
        lambda: ether() / ipv4(dst=VIP4, df=False) / fuzz(ICMP(type=8)) / Raw(b"ping"),
        lambda: ether() / ipv4(ROUTER4, VIP4) / fuzz(ICMP(type=3, code=4)) / Raw(quote4),
        lambda: ether() / ipv6(dst=VIP6) / fuzz(ICMPv6EchoRequest()),
        lambda: ether() / ipv6(ROUTER6, VIP6) / fuzz(ICMPv6PacketTooBig()) / Raw(quote6),
        # the quoted headers of PMTU errors
        lambda: (
            ether()
            / ipv4(ROUTER4, VIP4)
            / ICMP(type=3, code=4)
            / fuzz(IP(src=v4, dst=CLIENT4, version=4, ihl=5))
            / TCP(sport=80, dport=40000)
        ),
        lambda: (
            ether()
            / ipv4(ROUTER4, VIP4_ANY_UDP)
            / ICMP(type=3, code=4)
            / IP(src=addr(VIP4_ANY_UDP), dst=CLIENT4)
            / fuzz(UDP(dport=40000))
        ),
        lambda: (
            ether()
            / ipv6(ROUTER6, VIP6)
            / ICMPv6PacketTooBig()
            / fuzz(IPv6(src=v6, dst=CLIENT6))
            / TCP(sport=443, dport=40000)
        ),
        lambda: (
            ether()
            / ipv6(ROUTER6, VIP6_GUE)
            / ICMPv6PacketTooBig()
            / IPv6(src=addr(VIP6_GUE), dst=CLIENT6)
            / fuzz(UDP(dport=40000))
        ),
    ]


def fuzz_renders(rng: random.Random, per_stack: int) -> list[bytes]:
    """scapy draws fuzz() values from the `random` module: seed it from
    `rng` for the renders and give the module its state back afterwards."""
    saved = random.getstate()
    random.seed(rng.getrandbits(64))
    try:
        return [bytes(build()) for build in fuzzed_stacks() for _ in range(per_stack)]
    finally:
        random.setstate(saved)


def truncations(templates: list[bytes]) -> Iterator[bytes]:
    """Each template cut at every length from an Ethernet header on (shorter
    frames never reach a program: test_packets.test_runt_frames...), up to
    200 bytes and every 7th beyond."""
    for data in templates:
        for size in range(ETH_HLEN, len(data)):
            if size <= 200 or size % 7 == 0:
                yield data[:size]


def boundary_values(actual: int, header: int) -> set[int]:
    values = {0, 1, header - 1, header, header + 1, actual - 1, actual + 1, actual + 8}
    values |= {actual // 2, 0xFFFF, 0x8000, 7, 8, 19, 20, 39, 40}
    return {v for v in values if 0 <= v <= 0xFFFF and v != actual}


def bad_lengths(templates: list[bytes]) -> Iterator[bytes]:
    """IPv4 total length, IPv6 payload length, UDP length and TCP data
    offset of each template set around their boundaries."""
    for data in templates:
        h = parse(data)
        if isinstance(h, Verdict):
            continue
        fields = [(h.l3_off + 2, 20) if h.family == 4 else (h.l3_off + 4, 0)]
        if h.proto == IPPROTO_UDP:
            fields.append((h.l4_off + 4, 8))
        for at, header in fields:
            for value in boundary_values(u16(data, at), header):
                yield data[:at] + value.to_bytes(2, "big") + data[at + 2 :]
        if h.proto == IPPROTO_TCP:
            doff_at = h.l4_off + 12
            for doff in range(16):
                yield data[:doff_at] + bytes([doff << 4]) + data[doff_at + 1 :]


INTERESTING = (0x00, 0x01, 0x04, 0x06, 0x08, 0x11, 0x29, 0x2B, 0x3A, 0x3C, 0x45, 0x60, 0x7F, 0xFF)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random byte changes, three in four within the first 100 bytes
    (the headers); now and then a cut, an extension, or a byte inserted or
    removed (every length field after it goes wrong)."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        span = len(out) if rng.random() < 0.25 else min(len(out), 100)
        pos = rng.randrange(span)
        roll = rng.random()
        if roll < 0.4:
            out[pos] = rng.randrange(256)
        elif roll < 0.7:
            out[pos] ^= 1 << rng.randrange(8)
        else:
            out[pos] = rng.choice(INTERESTING)
    roll = rng.random()
    if roll < 0.05:
        del out[rng.randrange(ETH_HLEN, len(out) + 1) :]
    elif roll < 0.08:
        out += rng.randbytes(rng.randrange(1, 64))
    elif roll < 0.11:
        out.insert(rng.randrange(ETH_HLEN, len(out) + 1), rng.randrange(256))
    elif roll < 0.14 and len(out) > ETH_HLEN + 1:
        del out[rng.randrange(ETH_HLEN, len(out))]
    return bytes(out)


def build_corpus(size: int = CORPUS_SIZE, seed: int = SEED, per_stack: int = 40) -> list[bytes]:
    """`size` frames, the same for the same seed; `per_stack` fuzz() renders
    of each of fuzzed_stacks() (about a millisecond each)."""
    rng = random.Random(seed)
    l3s = valid_packets()
    templates = [frame(p) for p in l3s]
    templates += [frame(p, vlan=5) for p in l3s[::3]]
    templates += [frame(p, padding=bytes(rng.randrange(1, 20))) for p in l3s[::4]]
    big = [frame(p) for p in big_packets()] + [frame(p, vlan=7) for p in big_packets()[::2]]
    fuzzed = fuzz_renders(rng, per_stack)
    corpus = [*templates, *big, *fuzzed]
    corpus += truncations(templates)
    corpus += bad_lengths(templates + big)
    parents = templates + big + fuzzed
    while len(corpus) < size:
        corpus.append(mutate(rng, rng.choice(parents)))
    return [f if len(f) >= ETH_HLEN else f + bytes(ETH_HLEN - len(f)) for f in corpus[:size]]


# ================================================================== tests


@dataclass(frozen=True)
class FuzzRun:
    """One pass: the balancer programmed with `setup`, `size` frames from `seed`."""

    id: str
    setup: Setup
    size: int
    seed: int


FUZZ_RUNS = [
    FuzzRun("std", FUZZ_SETUP, CORPUS_SIZE, SEED),
    # every VIP in GUE, and an MTU low enough for the IPv6 minimum to apply
    FuzzRun(
        "gue_all_mtu_1000",
        Setup(FUZZ_SERVICES, config_with(gue_all=True, gue_port=9999, mtu=1000)),
        20_000,
        SEED + 1,
    ),
]


@pytest.fixture
def fresh_lb() -> Iterator[Balancer]:
    """A Balancer of its own: a run fills its connection tables."""
    balancer = Balancer()
    yield balancer
    balancer.close()


def test_corpus_is_big() -> None:
    assert sum(r.size for r in FUZZ_RUNS) >= 100_000


def test_corpus_is_seeded() -> None:
    """The same seed, the same frames (scapy's fuzz() included): a failure
    seen once is seen again."""
    a, b = build_corpus(20_000, per_stack=2), build_corpus(20_000, per_stack=2)
    assert a == b
    assert a != build_corpus(20_000, seed=SEED + 1, per_stack=2)
    assert all(len(f) >= ETH_HLEN for f in a)


def test_model_agrees_with_the_packet_table_cases() -> None:
    """The reference says of the packet-table frames what the table says:
    verdicts, reasons, and the outputs it predicts bit for bit."""
    from test_packets import CASES

    model = Model(FUZZ_SETUP)
    std_cases = [case for case in CASES if case.setup == "std"]
    assert len(std_cases) >= 100
    for case in std_cases:
        model.first_ports.clear()  # each case starts with empty tables (pkt_defs.apply)
        want = model.predict(case.packet)
        assert (want.action, want.reason) == (case.verdict, case.reason), case.id
        if case.expected is not None and not want.sums:
            assert want.output == case.expected, case.id


@pytest.mark.parametrize("run", FUZZ_RUNS, ids=[r.id for r in FUZZ_RUNS])
def test_fuzzed_frames(fresh_lb: Balancer, run: FuzzRun) -> None:
    started = time.monotonic()
    fuzz_lb = apply(fresh_lb, run.setup)
    corpus = build_corpus(run.size, run.seed)
    assert len(corpus) == run.size
    model = Model(run.setup)
    before = fuzz_lb.counters()
    reasons: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    failures: list[str] = []
    for index, data in enumerate(corpus):
        result = fuzz_lb.run(data)
        want = model.predict(data)
        reasons[want.reason] += 1
        actions[result.action.lower()] += 1
        problem = mismatch(data, result.action, result.packet, want)
        if problem is not None:
            failures.append(f"frame {index}: {problem}\n--- input:\n{describe(data)}")
            if len(failures) == 3:
                break
    assert not failures, "\n\n".join(failures)

    after = fuzz_lb.counters()
    delta = {k: after[k] - before[k] for k in after}
    assert sum(delta[a] for a in ACTIONS) == len(corpus)
    assert {a: delta[a] for a in ACTIONS if delta[a]} == dict(actions)
    counted = {
        k: v
        for k, v in delta.items()
        if v and k not in ACTIONS and not k.startswith(("conn_", "frag_"))
    }
    assert counted == dict(reasons)
    # the corpus reaches every path: each reason the std setup can give
    for reason in EVERY_STD_REASON:
        assert reasons[reason] >= len(corpus) // 1000, (reason, sorted(reasons.items()))
    assert actions["xdp_tx"] >= len(corpus) // 5, actions
    assert time.monotonic() - started < TIME_BUDGET_S
