"""xlb.testing's frame builders refill one scapy frame per shape: each
frame must be the one scapy composes layer by layer, whatever was built
before it (nothing carries over from one packet to the next)."""

from __future__ import annotations

import itertools

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from xlb.testing import tcp_packet, udp_packet
from xlb.testing.packets import CLIENT_MAC, LB_MAC

ADDRESSES = [("198.51.100.7", "10.200.0.1"), ("2001:db8:c::7", "2001:db8:200::1")]


def composed(src: str, dst: str, l4: TCP | UDP, payload: bytes, tos: int) -> bytes:
    """The frame as scapy builds it from fresh layers."""
    ip = (
        IP(src=src, dst=dst, tos=tos, flags="DF", id=1)
        if "." in src
        else IPv6(src=src, dst=dst, tc=tos)
    )
    return bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / ip / l4 / Raw(payload))


def test_each_frame_is_the_one_scapy_composes_whatever_came_before() -> None:
    variants = itertools.product(
        ADDRESSES,
        [(40000, 80), (1024, 443)],
        ["S", "A", "FA"],
        [b"xlb", b"", b"x" * 301],
        [0, 0xB8],
    )
    for (src, dst), (sport, dport), flags, payload, tos in variants:
        built = tcp_packet(src, dst, sport, dport, flags=flags, payload=payload, tos=tos)
        tcp = TCP(sport=sport, dport=dport, flags=flags, seq=1000, window=8192)
        assert built == composed(src, dst, tcp, payload, tos), (src, sport, flags, payload, tos)
        built = udp_packet(src, dst, sport, dport, payload=payload, tos=tos)
        udp = UDP(sport=sport, dport=dport)
        assert built == composed(src, dst, udp, payload, tos), (src, sport, payload, tos)


def test_the_defaults_are_the_documented_ones_after_other_packets() -> None:
    tcp_packet("2001:db8:c::7", "2001:db8:200::1", 1, 2, flags="S", payload=b"y" * 99, tos=4)
    udp_packet("198.51.100.7", "10.200.0.1", 1, 2, payload=b"", tos=4)
    frame = Ether(tcp_packet("198.51.100.9", "10.200.0.1"))
    assert (frame[TCP].sport, frame[TCP].dport, str(frame[TCP].flags)) == (40000, 80, "A")
    assert (frame[IP].tos, frame[Raw].load) == (0, b"xlb")
    frame = Ether(udp_packet("198.51.100.9", "10.200.0.1"))
    assert (frame[UDP].sport, frame[UDP].dport, frame[IP].tos, frame[Raw].load) == (
        40000,
        53,
        0,
        b"xlb",
    )
