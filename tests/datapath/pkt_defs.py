"""Packet definitions shared by the data-plane tests (after Cilium's
`bpf/tests/scapy/*_pkt_defs.py`).

Three parts:

* named constants: MACs, client and router addresses, the VIPs and reals
  of the test services, and the balancer configuration they run under;
* builders of the packets a client (or a router) sends, as scapy layers:
  `tcp4(...)`, `udp6(...)`, `frame(l3, vlan=...)`, ...;
* builders of the packets the data plane must send back, written from the
  rules in bpf/encap.h, bpf/icmp.h and bpf/decap.h (outer fields per those
  rules, inner = the original bytes), never copied from the program's output:
  `encapsulated(...)`, `echo_reply(...)`, `frag_needed(...)`,
  `packet_too_big(...)`, `decapsulated(...)`.

`assert_packet(got, want)` compares bytes exactly and, on a mismatch, prints
both frames as scapy `show()` and `command()` output.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from xlb import Balancer, BalancerConfig, Real, Vip, VipFlags
from xlb.flowhash import flow_hash, gue_source_port, outer_source_v4, outer_source_v6

# ------------------------------------------------------------------ MACs

CLIENT_MAC = "02:00:00:00:00:01"  # the router/client in front of the balancer
LB_MAC = "02:00:00:00:00:02"  # the balancer's interface
GATEWAY_MAC = "02:00:00:00:00:fe"  # next hop towards reals without a MAC
REAL_MAC = "02:00:00:00:10:01"  # reals on the balancer's L2 segment
REAL_MAC6 = "02:00:00:00:10:06"

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_LLDP = 0x88CC

# ------------------------------------------------------------- addresses

CLIENT4 = "198.51.100.7"
CLIENT4_B = "203.0.113.9"
CLIENT6 = "2001:db8:c::7"
CLIENT6_B = "2001:db8:c::99"
ROUTER4 = "203.0.113.1"  # sends ICMP errors about the reals' replies
ROUTER6 = "2001:db8:ff::1"
NOT_VIP4 = "192.0.2.99"
NOT_VIP6 = "2001:db8::99"

# ------------------------------------------------------------- the config

SEED = 0x5EED_1234
SRC_V4 = "172.16.0.0"  # outer IPv4 source prefix: low 16 bits = flow hash
SRC_V6 = "fd00:7862::"  # outer IPv6 source prefix: low 32 bits = flow hash
GUE_PORT = 6080
MTU = 1500
TTL = 64  # outer TTL / hop limit and the TTL of every reply

CONFIG = BalancerConfig(
    gateway_mac=GATEWAY_MAC,
    src_v4=SRC_V4,
    src_v6=SRC_V6,
    mtu=MTU,
    gue_port=GUE_PORT,
    hash_seed=SEED,
    # The SYN-flood guard counts SYNs per second: a test sends them faster than
    # clients do, which must not decide what it sees (tests/datapath/test_synflood.py).
    syn_flood_threshold=0,
)

# ------------------------------------------------------------------ reals

REAL4 = Real("10.0.0.1", mac=REAL_MAC)  # IPIP
REAL4_GUE = Real("10.0.0.2", mac=REAL_MAC)  # GUE over IPv4
REAL4_NOMAC = Real("10.0.0.5")  # next hop = gateway MAC (or none)
REAL6 = Real("fd00::1", mac=REAL_MAC6)  # IP6IP6
REAL6_4IN6 = Real("fd00::2", mac=REAL_MAC6)  # IPv4 VIP, IPv6 real
REAL6_GUE = Real("fd00::3", mac=REAL_MAC6)  # GUE over IPv6
REAL6_NOMAC = Real("fd00::5")

# ------------------------------------------------------------------- VIPs

VIP4 = Vip("192.0.2.10", 80, "tcp")  # port-specific only: vip_addrs makes it pingable
VIP4_ANY_UDP = Vip("192.0.2.20", 0, "udp")  # any port, IPv6 real (4in6)
VIP4_GUE = Vip("192.0.2.30", 53, "udp")  # VipFlags.GUE, IPv4 real
VIP4_GUE6 = Vip("192.0.2.31", 53, "udp")  # VipFlags.GUE, IPv6 real
VIP4_ANY_TCP = Vip("192.0.2.40", 0, "tcp")
VIP4_NOMAC = Vip("192.0.2.50", 80, "tcp")
VIP4_EMPTY = Vip("192.0.2.60", 80, "tcp")  # no reals
VIP4_NO_SPORT = Vip("192.0.2.71", 80, "tcp")
VIP4_DPORT_ONLY = Vip("192.0.2.72", 0, "udp")
VIP4_NO_CONN = Vip("192.0.2.73", 80, "tcp")
VIP6 = Vip("2001:db8::10", 443, "tcp")
VIP6_GUE = Vip("2001:db8::30", 53, "udp")
VIP6_ANY_TCP = Vip("2001:db8::40", 0, "tcp")
VIP6_NOMAC = Vip("2001:db8::50", 80, "tcp")

SMALL_RING = 13  # single-real test services: a tiny prime ring keeps setup fast


@dataclass(frozen=True)
class Service:
    """A VIP, its flags and its reals."""

    vip: Vip
    reals: tuple[Real, ...] = ()
    flags: VipFlags = VipFlags.NONE
    ring_size: int = SMALL_RING


@dataclass(frozen=True)
class Setup:
    """What the balancer is programmed with before a packet is run."""

    services: tuple[Service, ...]
    config: BalancerConfig = CONFIG
    description: str = ""


STD_SERVICES = (
    Service(VIP4, (REAL4,)),
    Service(VIP4_ANY_UDP, (REAL6_4IN6,)),
    Service(VIP4_GUE, (REAL4_GUE,), VipFlags.GUE),
    Service(VIP4_GUE6, (REAL6_GUE,), VipFlags.GUE),
    Service(VIP4_ANY_TCP, (REAL4,)),
    Service(VIP4_NOMAC, (REAL4_NOMAC,)),
    Service(VIP4_EMPTY, ()),
    Service(VIP4_NO_SPORT, (REAL4,), VipFlags.NO_SPORT),
    Service(VIP4_DPORT_ONLY, (REAL4,), VipFlags.DPORT_ONLY),
    Service(VIP4_NO_CONN, (REAL4,), VipFlags.NO_CONN_TABLE),
    Service(VIP6, (REAL6,)),
    Service(VIP6_GUE, (REAL6_GUE,), VipFlags.GUE),
    Service(VIP6_ANY_TCP, (REAL6,)),
    Service(VIP6_NOMAC, (REAL6_NOMAC,)),
)


def config_with(**changes: object) -> BalancerConfig:
    """CONFIG with some fields changed."""
    values = {f: getattr(CONFIG, f) for f in CONFIG.__dataclass_fields__}
    values.update(changes)
    return BalancerConfig(**values)


CONFIG_NO_GATEWAY = config_with(gateway_mac=None)
CONFIG_GUE_ALL = config_with(gue_all=True, gue_port=9999)
CONFIG_MTU_1000 = config_with(mtu=1000)
CONFIG_NO_MTU = config_with(mtu=0)

SETUPS: dict[str, Setup] = {
    "std": Setup(STD_SERVICES, CONFIG, "every test service, gateway MAC, MTU 1500"),
    "no_gw": Setup(STD_SERVICES, CONFIG_NO_GATEWAY, "no gateway MAC, no FIB lookup"),
    "gue_all": Setup(STD_SERVICES, CONFIG_GUE_ALL, "GUE for every VIP, GUE port 9999"),
    "mtu1000": Setup(STD_SERVICES, CONFIG_MTU_1000, "config.mtu 1000"),
    "no_mtu": Setup(STD_SERVICES, CONFIG_NO_MTU, "config.mtu 0: no size check"),
}


def clear_conn_tables(lb: Balancer) -> None:
    """The connection tables (and the CPUs' cached copies of their entries),
    and the fragments' (a case's first fragment must not be another case's)."""
    lb.clear_flows()
    frags = lb.map("frags")
    for key in list(frags.keys()):
        frags.delete(key)


def reset(lb: Balancer, config: BalancerConfig = CONFIG) -> None:
    """Empty the balancer: no VIPs, empty connection tables, `config`."""
    for vip in lb.vips():
        lb.remove_vip(vip)
    clear_conn_tables(lb)
    lb.configure(config)


def _has_services(lb: Balancer, services: tuple[Service, ...]) -> bool:
    if sorted(map(str, lb.vips())) != sorted(str(s.vip) for s in services):
        return False
    for s in services:
        wanted = sorted(s.reals, key=lambda r: (r.address.version, r.address.packed))
        if lb.vip_flags(s.vip) != s.flags or lb.ring_size(s.vip) != s.ring_size:
            return False
        if lb.reals(s.vip) != wanted:
            return False
    return True


ProgramLb = Callable[[Setup], Balancer]  # the `packet_lb` fixture


def apply(lb: Balancer, setup: Setup) -> Balancer:
    """Program `setup` into the balancer, with empty connection tables.

    Swapping a Maglev ring waits for an RCU grace period (~10 ms), so when
    the balancer already serves exactly these services (the table cases
    mostly share STD_SERVICES) they are kept and only the config is set.
    """
    if _has_services(lb, setup.services):
        clear_conn_tables(lb)
        lb.configure(setup.config)
        return lb
    reset(lb, setup.config)
    for service in setup.services:
        lb.add_vip(service.vip, service.flags, ring_size=service.ring_size)
        if service.reals:
            lb.set_reals(service.vip, list(service.reals))
    return lb


# ====================================================== packets sent to us


def _addr(value: object) -> str:
    return str(value.address) if isinstance(value, Vip) else str(value)


def ipv4(
    src: object = CLIENT4,
    dst: object = VIP4,
    *,
    tos: int = 0,
    df: bool = True,
    ttl: int = 57,
    ip_id: int = 0x1234,
    **fields: Any,
) -> Packet:
    """An IPv4 header from a client (DF set, TTL 57 unless told)."""
    flags = fields.pop("flags", "DF" if df else 0)
    return IP(src=_addr(src), dst=_addr(dst), tos=tos, ttl=ttl, id=ip_id, flags=flags, **fields)


def ipv6(
    src: object = CLIENT6, dst: object = VIP6, *, tc: int = 0, fl: int = 0, **fields: Any
) -> Packet:
    """An IPv6 header from a client (hop limit 57 unless told)."""
    fields.setdefault("hlim", 57)
    return IPv6(src=_addr(src), dst=_addr(dst), tc=tc, fl=fl, **fields)


def _port(dst: object, dport: int | None, default: int) -> int:
    if dport is not None:
        return dport
    if isinstance(dst, Vip) and dst.port:
        return dst.port
    return default


def tcp4(
    dst: object = VIP4,
    dport: int | None = None,
    *,
    src: object = CLIENT4,
    sport: int = 40000,
    flags: str = "A",
    payload: bytes = b"GET / HTTP/1.0\r\n\r\n",
    **ip: Any,
) -> Packet:
    """A client's TCP segment to `dst` (a Vip: its port unless `dport`)."""
    return (
        ipv4(src, dst, **ip)
        / TCP(sport=sport, dport=_port(dst, dport, 80), flags=flags, seq=1000, ack=2000)
        / Raw(payload)
    )


def udp4(
    dst: object = VIP4_ANY_UDP,
    dport: int | None = None,
    *,
    src: object = CLIENT4,
    sport: int = 40000,
    payload: bytes = b"query",
    **ip: Any,
) -> Packet:
    return ipv4(src, dst, **ip) / UDP(sport=sport, dport=_port(dst, dport, 9999)) / Raw(payload)


def tcp6(
    dst: object = VIP6,
    dport: int | None = None,
    *,
    src: object = CLIENT6,
    sport: int = 40000,
    flags: str = "A",
    payload: bytes = b"GET / HTTP/1.0\r\n\r\n",
    **ip: Any,
) -> Packet:
    return (
        ipv6(src, dst, **ip)
        / TCP(sport=sport, dport=_port(dst, dport, 443), flags=flags, seq=1000, ack=2000)
        / Raw(payload)
    )


def udp6(
    dst: object = VIP6_GUE,
    dport: int | None = None,
    *,
    src: object = CLIENT6,
    sport: int = 40000,
    payload: bytes = b"query",
    **ip: Any,
) -> Packet:
    return ipv6(src, dst, **ip) / UDP(sport=sport, dport=_port(dst, dport, 53)) / Raw(payload)


def echo4(
    dst: object = VIP4,
    *,
    src: object = CLIENT4,
    payload: bytes = b"ping!",
    ident: int = 0x77,
    seq: int = 3,
) -> Packet:
    return ipv4(src, dst, df=False) / ICMP(type=8, id=ident, seq=seq) / Raw(payload)


def echo6(
    dst: object = VIP6,
    *,
    src: object = CLIENT6,
    payload: bytes = b"ping6!",
    ext: Packet | None = None,
) -> Packet:
    """An ICMPv6 echo request; `ext`: extension headers between the IPv6
    header and the ICMPv6 header."""
    ip = ipv6(src, dst)
    if ext is not None:
        ip = ip / ext
    return ip / ICMPv6EchoRequest(id=0x66, seq=4, data=payload)


def reply_of(request: Packet) -> Packet:
    """What a real sends back for a client's TCP/UDP packet (from the VIP)."""
    l4 = request.payload.copy()
    l4.remove_payload()
    l4.sport, l4.dport = request.payload.dport, request.payload.sport
    back: Packet
    if isinstance(request, IP):
        back = IP(src=request.dst, dst=request.src, flags="DF", ttl=64, id=7)
    else:
        back = IPv6(src=request.dst, dst=request.src, hlim=64)
    if isinstance(l4, TCP):
        l4.flags = "A"
    return back / l4 / Raw(b"R" * 1400)


def frag_needed4(
    quoted: Packet,
    *,
    mtu: int = 1400,
    src: object = ROUTER4,
    dst: object = None,
    quote_len: int = 28,
) -> Packet:
    """ICMP 3/4 from a router about `quoted` (a packet the real sent), to
    the quoted packet's source unless `dst`."""
    return (
        ipv4(src, quoted.src if dst is None else dst, df=False, tos=0xC0)
        / ICMP(type=3, code=4, nexthopmtu=mtu)
        / Raw(bytes(quoted)[:quote_len])
    )


def packet_too_big6(
    quoted: Packet,
    *,
    mtu: int = 1280,
    src: object = ROUTER6,
    dst: object = None,
    quote_len: int = 1232,
) -> Packet:
    """ICMPv6 packet too big from a router about `quoted`, to the quoted
    packet's source unless `dst`."""
    return (
        ipv6(src, quoted.src if dst is None else dst)
        / ICMPv6PacketTooBig(mtu=mtu)
        / Raw(bytes(quoted)[:quote_len])
    )


def frame(
    l3: Packet | bytes,
    *,
    vlan: int | tuple[int, ...] | None = None,
    src: str = CLIENT_MAC,
    dst: str = LB_MAC,
    ethertype: int | None = None,
    padding: bytes = b"",
) -> bytes:
    """Ethernet (optionally 802.1Q-tagged, possibly twice) around `l3`."""
    raw = bytes(l3)
    if ethertype is None:
        version = raw[0] >> 4 if raw else 0
        ethertype = {4: ETH_P_IP, 6: ETH_P_IPV6}.get(version, ETH_P_IP)
    tags = (vlan,) if isinstance(vlan, int) else tuple(vlan or ())
    types = [ETH_P_8021Q] * len(tags) + [ethertype]
    out = Ether(src=src, dst=dst, type=types[0])
    for tag, inner_type in zip(tags, types[1:], strict=True):
        out = out / Dot1Q(vlan=tag, type=inner_type)
    return bytes(out) + raw + padding


def flow_of(l3: Packet) -> tuple[str, str, int, int, int]:
    """(src, dst, sport, dport, proto) of a client's TCP/UDP packet."""
    l4 = l3[TCP] if TCP in l3 else l3[UDP]
    proto = 6 if isinstance(l4, TCP) else 17
    return str(l3.src), str(l3.dst), int(l4.sport), int(l4.dport), proto


def hash_of(
    flow: tuple[str, str, int, int, int],
    flags: VipFlags = VipFlags.NONE,
    config: BalancerConfig = CONFIG,
) -> int:
    src, dst, sport, dport, proto = flow
    return flow_hash(
        ipaddress.ip_address(src).packed,
        ipaddress.ip_address(dst).packed,
        sport,
        dport,
        proto,
        config.hash_seed,
        int(flags),
    )


# ================================================= packets we expect back


def encapsulated(
    inner: Packet | bytes,
    real: Real,
    *,
    flags: VipFlags = VipFlags.NONE,
    config: BalancerConfig = CONFIG,
    flow: tuple[str, str, int, int, int] | None = None,
    flow_hash: int | None = None,
    dmac: str | None = None,
    smac: str = LB_MAC,
    padding: bytes = b"",
    alternate: str | None = None,
    carrier_flags: int = 0,
    ttl: int = TTL,
) -> bytes:
    """The balancer's output for `inner` sent to `real` (bpf/encap.h).

    Outer IPv4: ihl 5, TOS = inner TOS/traffic class, id 0, DF copied from
    the inner IPv4 header, TTL 64,
    proto 4 (or 17 for GUE), src = config.src_v4 with its low 16 bits
    replaced by the flow hash, dst = the real. Outer IPv6: traffic class =
    inner TOS, flow label = hash & 0xfffff, hop limit 64, next header 41
    (IPv6 inner) / 4 (IPv4 inner) / 17 (GUE), src = config.src_v6 with its
    low 32 bits = the hash. GUE: UDP src 0xc000 | (hash >> 16 & 0x3fff),
    dst config.gue_port, length 8 + inner, checksum 0. Then the inner IP
    packet byte for byte, then any Ethernet padding it arrived with.
    `flow` (default: the inner packet's own 5-tuple) is what is hashed;
    `flow_hash` gives the hash itself (a QUIC VIP hashes the connection ID).
    `alternate`: the second-chance carrier (xlb_abi.h, enum xlb_carrier) of
    that address, with `carrier_flags`: see carrier_bytes(). `ttl`: of the
    outer header (a real that hands a packet on takes one off).
    """
    raw = bytes(inner)
    inner_v4 = raw[0] >> 4 == 4
    tos = raw[1] if inner_v4 else ((raw[0] & 0x0F) << 4) | (raw[1] >> 4)
    if flow is None:
        flow = flow_of(IP(raw) if inner_v4 else IPv6(raw))
    h = hash_of(flow, flags, config) if flow_hash is None else flow_hash
    gue = VipFlags.GUE in flags or config.gue_all
    if dmac is None:
        dmac = real.mac or config.gateway_mac
    carrier = b"" if alternate is None else carrier_bytes(alternate, gue, inner_v4, carrier_flags)
    opt = carrier if alternate is not None and not gue and real.address.version == 4 else b""
    ext = carrier if alternate is not None and not gue and real.address.version == 6 else b""
    in_gue = carrier if gue else b""
    udp_len = 8 + len(in_gue) + len(raw)
    gue_hdr = UDP(sport=gue_source_port(h), dport=config.gue_port, len=udp_len, chksum=0)
    if real.address.version == 4:
        outer: Packet = IP(
            version=4,
            ihl=5 + len(opt) // 4,
            options=[IPOption(opt)] if opt else [],
            tos=tos,
            len=20 + len(opt) + (udp_len if gue else len(raw)),
            id=0,
            flags="DF" if inner_v4 and raw[6] & 0x40 else 0,
            frag=0,
            ttl=ttl,
            proto=17 if gue else 4,
            src=str(ipaddress.IPv4Address(outer_source_v4(_packed(config.src_v4), h))),
            dst=str(real.address),
        )
        ethertype = ETH_P_IP
    else:
        outer = IPv6(
            tc=tos,
            fl=h & 0xFFFFF,
            plen=len(ext) + (udp_len if gue else len(raw)),
            nh=17 if gue else 60 if ext else (4 if inner_v4 else 41),
            hlim=ttl,
            src=str(ipaddress.IPv6Address(outer_source_v6(_packed(config.src_v6), h))),
            dst=str(real.address),
        )
        ethertype = ETH_P_IPV6
    if gue:
        outer = outer / gue_hdr
    return bytes(
        Ether(dst=dmac, src=smac, type=ethertype) / outer / Raw(ext + in_gue + raw + padding)
    )


CARRIER_TYPE = 0x1E  # RFC 4727 experimental: IPv4 option 30, IPv6 option 0x1e


def carrier_bytes(alternate: str, gue: bool, inner_v4: bool, flags: int = 0) -> bytes:
    """The carrier of `alternate` as xlb_abi.h lays it out: a word {0x1e,
    length, flags, 0} and the address, as an IPv4 option (length 8), in a
    24-byte IPv6 destination-options header (next header, hdrlen 2, Pad2,
    the option with 18 data bytes), or as a GUE variant 0 header (hlen 2 or
    5 words, proto 4 or 41, flags 0) whose private data is the word (length
    8 or 20) and the address."""
    addr = ipaddress.ip_address(alternate).packed
    if gue:
        priv = 4 + len(addr)
        return bytes([priv // 4, 4 if inner_v4 else 41, 0, 0, CARRIER_TYPE, priv, flags, 0]) + addr
    if len(addr) == 4:
        return bytes([CARRIER_TYPE, 8, flags, 0]) + addr
    nh = 4 if inner_v4 else 41
    return bytes([nh, 2, 1, 0, CARRIER_TYPE, 18, flags, 0]) + addr


def _packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def echo_reply(request: Packet) -> bytes:
    """The balancer's answer to an echo request (bpf/icmp.h): untagged
    Ethernet back to the sender, addresses swapped, TTL/hop limit 64,
    type 0 / 129, everything else as it came."""
    if isinstance(request, IP):
        icmp = request[ICMP]
        reply: Packet = IP(
            version=4,
            ihl=5,
            tos=request.tos,
            id=request.id,
            flags=request.flags,
            frag=request.frag,
            ttl=TTL,
            proto=1,
            src=request.dst,
            dst=request.src,
        ) / ICMP(type=0, code=0, id=icmp.id, seq=icmp.seq)
        reply = reply / Raw(bytes(icmp.payload))
        ethertype = ETH_P_IP
    else:
        echo = request[ICMPv6EchoRequest]
        reply = IPv6(
            tc=request.tc, fl=request.fl, hlim=TTL, src=request.dst, dst=request.src
        ) / ICMPv6EchoReply(id=echo.id, seq=echo.seq, data=echo.data)
        ethertype = ETH_P_IPV6
    return bytes(Ether(dst=CLIENT_MAC, src=LB_MAC, type=ethertype) / reply)


V4_QUOTE_MAX = 576 - 20 - 8
V6_QUOTE_MAX = 1280 - 40 - 8


def frag_needed(original: Packet, mtu: int) -> bytes:
    """ICMP 3/4 to the client (bpf/icmp.h): TOS 0xc0, id 0, no DF, TTL 64,
    from the VIP, quoting the original IP packet up to 548 bytes."""
    raw = bytes(original)
    reply = (
        IP(tos=0xC0, id=0, flags=0, ttl=TTL, proto=1, src=original.dst, dst=original.src)
        / ICMP(type=3, code=4, nexthopmtu=max(mtu, 68))
        / Raw(raw[:V4_QUOTE_MAX])
    )
    return bytes(Ether(dst=CLIENT_MAC, src=LB_MAC, type=ETH_P_IP) / reply)


def packet_too_big(original: Packet, mtu: int) -> bytes:
    """ICMPv6 2/0 to the client: traffic class and flow label 0, hop limit
    64, from the VIP, quoting up to 1232 bytes (MTU at least 1280)."""
    raw = bytes(original)
    reply = (
        IPv6(tc=0, fl=0, hlim=TTL, src=original.dst, dst=original.src)
        / ICMPv6PacketTooBig(code=0, mtu=max(mtu, 1280))
        / Raw(raw[:V6_QUOTE_MAX])
    )
    return bytes(Ether(dst=CLIENT_MAC, src=LB_MAC, type=ETH_P_IPV6) / reply)


def decapsulated(
    inner: Packet | bytes,
    *,
    dst: str,
    src: str = LB_MAC,
    vlan: int | None = None,
    padding: bytes = b"",
) -> bytes:
    """What the real's decap program hands the stack (bpf/decap.bpf.c): the
    same MACs (and VLAN tag) in front of the inner packet, ethertype of the
    inner family."""
    return frame(inner, vlan=vlan, src=src, dst=dst, padding=padding)


# ============================================================== asserting


def describe(data: bytes) -> str:
    """A frame as scapy show() and command() text."""
    pkt = Ether(data)
    return f"{pkt.show(dump=True)}\ncommand: {pkt.command()}\nhex: {data.hex()}"


def packet_diff(got: bytes, want: bytes) -> str:
    first = next(
        (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
        min(len(got), len(want)),
    )
    return (
        f"packets differ: got {len(got)} bytes, want {len(want)} bytes, "
        f"first difference at offset {first}\n"
        f"----- want -----\n{describe(want)}\n"
        f"----- got ------\n{describe(got)}"
    )


def assert_packet(got: bytes, want: bytes, what: str = "output") -> None:
    """Exact byte comparison; on mismatch both frames are printed by scapy."""
    if got != want:
        raise AssertionError(f"{what}: {packet_diff(got, want)}")
