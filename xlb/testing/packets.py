"""Scapy packet builders and a decoder for what the balancer sends out.

Frames are built as a client's packets arrive at the balancer: Ethernet
from CLIENT_MAC to LB_MAC. `decode_encapsulated` takes the bytes the
program returned and says where they were sent and what they carry.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from ..flowhash import flow_hash, outer_source_v4, outer_source_v6
from ..model import (
    IPPROTO,
    AddressLike,
    BalancerConfig,
    Flow,
    IPAddress,
    VipFlags,
    parse_address,
)

CLIENT_MAC = "02:00:00:00:00:01"
LB_MAC = "02:00:00:00:00:02"
GATEWAY_MAC = "02:00:00:00:00:fe"


class _Frames(threading.local):
    """One scapy frame per shape (IP version, L4 protocol) and thread,
    refilled for each packet: composing the layers anew costs more than
    twice what setting their fields and serializing again does (~1.5
    against ~0.6 ms here), and the packet tests build tens of thousands.
    Every field a builder takes is set on each use, so nothing carries
    over."""

    def __init__(self) -> None:
        self.by_shape: dict[tuple[int, str], Packet] = {}

    def get(self, version: int, proto: str) -> Packet:
        frame = self.by_shape.get((version, proto))
        if frame is None:
            ip = IP(flags="DF", id=1) if version == 4 else IPv6()
            l4 = TCP(seq=1000, window=8192) if proto == "tcp" else UDP()
            frame = self.by_shape[version, proto] = (
                Ether(src=CLIENT_MAC, dst=LB_MAC) / ip / l4 / Raw()
            )
        return frame


_FRAMES = _Frames()


def _filled_frame(src: AddressLike, dst: AddressLike, tos: int, proto: str) -> Packet:
    """The shape's frame with the IP layer's addresses and TOS set."""
    s, d = parse_address(src), parse_address(dst)
    if s.version != d.version:
        raise ValueError(f"mixed address families: {s} -> {d}")
    frame = _FRAMES.get(s.version, proto)
    if s.version == 4:
        ip = frame[IP]
        ip.tos = tos
    else:
        ip = frame[IPv6]
        ip.tc = tos
    ip.src, ip.dst = str(s), str(d)
    return frame


def tcp_packet(
    src: AddressLike,
    dst: AddressLike,
    sport: int = 40000,
    dport: int = 80,
    flags: str = "A",
    payload: bytes = b"xlb",
    tos: int = 0,
) -> bytes:
    """A client's TCP segment as bytes on the wire (Ethernet included)."""
    frame = _filled_frame(src, dst, tos, "tcp")
    tcp = frame[TCP]
    tcp.sport, tcp.dport, tcp.flags = sport, dport, flags
    frame[Raw].load = payload
    return bytes(frame)


def udp_packet(
    src: AddressLike,
    dst: AddressLike,
    sport: int = 40000,
    dport: int = 53,
    payload: bytes = b"xlb",
    tos: int = 0,
) -> bytes:
    """A client's UDP datagram as bytes on the wire (Ethernet included)."""
    frame = _filled_frame(src, dst, tos, "udp")
    udp = frame[UDP]
    udp.sport, udp.dport = sport, dport
    frame[Raw].load = payload
    return bytes(frame)


# QUIC long-header packet types (RFC 9000 17.2, version 1).
QUIC_INITIAL, QUIC_0RTT, QUIC_HANDSHAKE = 0, 1, 2


def quic_short_header(dcid: bytes, payload: bytes = bytes(24)) -> bytes:
    """A QUIC 1-RTT packet (short header) as a UDP payload: fixed bit, `dcid`,
    a 2-octet packet number, then `payload` standing for the protected part."""
    return bytes([0x41]) + dcid + b"\x00\x01" + payload


def quic_long_header(
    packet_type: int, dcid: bytes, scid: bytes = bytes(8), *, size: int = 0, version: int = 1
) -> bytes:
    """A QUIC long-header packet as a UDP payload (RFC 9000 17.2): `dcid`
    and `scid` with their lengths, no token (Initial), a 2-octet packet
    number; padded to `size` octets (a client's Initial is at least 1200)."""
    head = bytes([0xC1 | (packet_type & 3) << 4]) + version.to_bytes(4, "big")
    head += bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    if packet_type == QUIC_INITIAL:
        head += b"\x00"  # token length
    body_len = max(20, size - len(head) - 2)
    return head + (0x4000 | body_len).to_bytes(2, "big") + b"\x00\x01" + bytes(body_len - 2)


def outer_destination(frame: bytes) -> IPAddress:
    """The outer destination of an encapsulated frame, read straight from the
    bytes (fast enough for streams of thousands of packets)."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800:
        return ipaddress.IPv4Address(frame[30:34])
    if ethertype == 0x86DD:
        return ipaddress.IPv6Address(frame[38:54])
    raise ValueError(f"not an IP frame (ethertype 0x{ethertype:04x})")


@dataclass(frozen=True)
class Encapsulated:
    """An encapsulated packet taken apart."""

    eth_dst: str
    eth_src: str
    outer_src: IPAddress
    outer_dst: IPAddress
    gue: bool
    inner: bytes  # the inner IP packet, byte for byte


def decode_encapsulated(frame: bytes) -> Encapsulated:
    """Split an IPIP / IP6IP6 / 4in6 / GUE frame into outer fields and inner bytes."""
    eth = Ether(frame)
    outer = eth.payload
    if isinstance(outer, IP):
        header_len, proto = outer.ihl * 4, outer.proto
    elif isinstance(outer, IPv6):
        header_len, proto = 40, outer.nh
    else:
        raise ValueError(f"not an IP frame: {eth.summary()}")
    rest = bytes(outer)[header_len:]
    gue = proto == 17
    if gue:
        rest = rest[8:]
    elif proto not in (4, 41):
        raise ValueError(f"outer protocol {proto} is not IP-in-IP or GUE: {eth.summary()}")
    return Encapsulated(
        eth_dst=eth.dst,
        eth_src=eth.src,
        outer_src=ipaddress.ip_address(outer.src),
        outer_dst=ipaddress.ip_address(outer.dst),
        gue=gue,
        inner=rest,
    )


def flow_hash_of(flow: Flow, config: BalancerConfig, flags: VipFlags = VipFlags.NONE) -> int:
    """The data plane's 32-bit hash of `flow` under `config` and the VIP's `flags`."""
    return flow_hash(
        flow.src.packed,
        flow.dst.packed,
        flow.sport,
        flow.dport,
        IPPROTO[flow.proto],
        config.hash_seed,
        int(flags),
    )


def outer_source(
    flow: Flow, real_family: int, config: BalancerConfig, flags: VipFlags = VipFlags.NONE
) -> IPAddress:
    """The outer source address the balancer gives `flow` towards a real of
    `real_family`: config.src_v4 / src_v6 with its low 16 / 32 bits from the hash."""
    h = flow_hash_of(flow, config, flags)
    if real_family == 4:
        return ipaddress.IPv4Address(outer_source_v4(parse_address(config.src_v4).packed, h))
    return ipaddress.IPv6Address(outer_source_v6(parse_address(config.src_v6).packed, h))
