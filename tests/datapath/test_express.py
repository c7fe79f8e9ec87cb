"""The express path (bpf/express.h) answers exactly as the general path.

Two balancers, programmed alike: this checkout's program, and the same
source built with the express path cut out (every packet then takes the
general path). Each step runs the same packet through both, one after
the other on the same CPU, and compares what they did: the action, the
frame they left, the counters, the per-VIP and per-real traffic, and how
many flow-cache looks the CPU counted (a packet the express path turns
back after asking the cache must not be counted twice). The scenarios
lead established flows into every condition the express path checks.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

import build
from bench.common import pinned
from xlb import Balancer, BalancerConfig, Real, Vip, VipFlags
from xlb._abi import u32
from xlb._bpf import ffi
from xlb.testing import CLIENT_MAC, GATEWAY_MAC, LB_MAC, tcp_packet, udp_packet

CPU = 0
CLIENT = "198.51.100.7"
VIP = Vip("10.200.0.1", 80, "tcp")
UDP_VIP = Vip("10.200.0.2", 53, "udp")
REALS = [Real(f"10.0.0.{i}") for i in range(1, 5)]
CLIENT6 = "2001:db8:c::7"
VIP6 = Vip("2001:db8:200::1", 80, "tcp")
REALS6 = [Real(f"2001:db8:1::{i}") for i in range(1, 5)]
SKIP_EXPRESS = ("\taction = express_forward(ctx, row, &look);\n", "\taction = XLB_CONTINUE;\n")

Step = bytes | Callable[[Balancer], None]


@pytest.fixture(scope="module")
def general_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The balancer's object built with the express path cut out."""
    source = tmp_path_factory.mktemp("general_only") / "bpf"
    shutil.copytree(build.BPF_SRC, source)
    main = source / "xlb.bpf.c"
    text = main.read_text()
    old, new = SKIP_EXPRESS
    assert text.count(old) == 1, "the express path's call changed: update SKIP_EXPRESS"
    main.write_text(text.replace(old, new))
    obj = source.parent / "general_only.bpf.o"
    build.compile_bpf(main, obj)
    return obj


@dataclass
class Pair:
    """The two balancers, stepped together."""

    express: Balancer
    general: Balancer
    looks_compared: int = 0
    actions: list[str] = field(default_factory=list)

    def apply(self, change: Callable[[Balancer], None]) -> None:
        change(self.express)
        change(self.general)

    def send(self, packet: bytes) -> None:
        with pinned(CPU):
            before = (tally(self.express), tally(self.general))
            got = self.express.run(packet)
            want = self.general.run(packet)
            after = (tally(self.express), tally(self.general))
        assert got.action == want.action, packet.hex()
        assert got.packet == want.packet, packet.hex()
        self.actions.append(got.action)
        ticks = {before[0][0], before[1][0], after[0][0], after[1][0]}
        if len(ticks) == 1:  # no tick began meanwhile (it resets the tally)
            looks = [(a[1] - b[1], a[2] - b[2]) for b, a in zip(before, after, strict=True)]
            assert looks[0] == looks[1], f"flow-cache looks (lookups, answered): {looks}"
            self.looks_compared += 1

    def assert_same_counts(self, vips: list[Vip]) -> None:
        assert self.express.counters() == self.general.counters()
        for vip in vips:
            assert self.express.stats(vip) == self.general.stats(vip)
            assert self.express.real_stats(vip) == self.general.real_stats(vip)


def tally(lb: Balancer) -> tuple[int, int, int]:
    """(tick, lookups, answered) of CPU's flow-cache tally."""
    raw = lb.map("stats").lookup(u32(CPU))
    assert raw is not None
    row = ffi.from_buffer("struct xlb_cpu_row *", bytearray(raw))
    use = row.flow_cache
    return int(use.jiffies), int(use.lookups), int(use.answered)


@pytest.fixture
def pair_of(general_only: Path) -> Iterator[Callable[[BalancerConfig], Pair]]:
    made: list[Balancer] = []

    def make(config: BalancerConfig) -> Pair:
        for path in (None, general_only):
            made.append(Balancer(config=config, object_path=path))
        return Pair(made[-2], made[-1])

    yield make
    for lb in made:
        lb.close()


def with_vip(
    vip: Vip, reals: list[Real], flags: VipFlags = VipFlags.NONE
) -> Callable[[Balancer], None]:
    def change(lb: Balancer) -> None:
        lb.add_vip(vip, flags=flags)
        lb.set_reals(vip, reals)

    return change


def segment(
    payload: bytes = b"xlb", flags: str = "A", sport: int = 40000, df: bool = False, tos: int = 0
) -> bytes:
    ip = IP(src=CLIENT, dst=VIP.address, flags="DF" if df else 0, tos=tos)
    tcp = TCP(sport=sport, dport=VIP.port, flags=flags, seq=1000, window=8192)
    return bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / ip / tcp / Raw(payload))


def established(sport: int = 40000) -> list[Step]:
    """A connection's SYN, then enough ACKs for the cache to hold it."""
    flags = ["S", "A", "A", "A", "A"]
    return [tcp_packet(CLIENT, VIP.address, sport, VIP.port, flag) for flag in flags]


def run(pair: Pair, steps: list[Step], vips: list[Vip]) -> None:
    for step in steps:
        if isinstance(step, bytes):
            pair.send(step)
        else:
            pair.apply(step)
    pair.assert_same_counts(vips)
    assert pair.looks_compared > 0, "every step crossed a tick: nothing compared"


ROUTED = BalancerConfig(gateway_mac=GATEWAY_MAC)


def test_established_tcp_flows(pair_of: Callable[[BalancerConfig], Pair]) -> None:
    pair = pair_of(ROUTED)
    steps: list[Step] = [with_vip(VIP, REALS)]
    for sport in (40000, 40001, 40002):
        steps += established(sport)
    steps += [segment(b"x" * 500), segment(flags="FA"), segment(flags="SA"), segment(flags="R")]
    steps += [segment(df=True), segment(tos=0xB8), segment(tos=0x03, df=True, sport=40001)]
    run(pair, steps, [VIP])
    assert pair.actions.count("XDP_TX") == len(pair.actions)


def test_established_udp_flows(pair_of: Callable[[BalancerConfig], Pair]) -> None:
    pair = pair_of(ROUTED)
    datagrams = [udp_packet(CLIENT, UDP_VIP.address, sport, UDP_VIP.port) for sport in (5000, 5001)]
    run(pair, [with_vip(UDP_VIP, REALS), *(datagrams * 5)], [UDP_VIP])


@pytest.mark.parametrize("gue", ["vip", "config"])
def test_gue(pair_of: Callable[[BalancerConfig], Pair], gue: str) -> None:
    config = BalancerConfig(gateway_mac=GATEWAY_MAC, gue_all=gue == "config")
    flags = VipFlags.GUE if gue == "vip" else VipFlags.NONE
    run(pair_of(config), [with_vip(VIP, REALS, flags), *established()], [VIP])


def test_packets_over_the_mtu_are_answered_by_the_general_path(
    pair_of: Callable[[BalancerConfig], Pair],
) -> None:
    pair = pair_of(BalancerConfig(gateway_mac=GATEWAY_MAC, mtu=576))
    big = [segment(b"x" * 560, df=True), segment(b"x" * 560, df=False), segment(b"x" * 535)]
    run(pair, [with_vip(VIP, REALS), *established(), *big, segment()], [VIP])
    assert "XDP_TX" in pair.actions


def test_ipv6_reals_of_an_ipv4_vip(pair_of: Callable[[BalancerConfig], Pair]) -> None:
    reals = [Real(f"2001:db8:1::{i}") for i in range(1, 4)]
    run(pair_of(ROUTED), [with_vip(VIP, reals), *established()], [VIP])


def test_next_hop_from_the_fib_or_none(pair_of: Callable[[BalancerConfig], Pair]) -> None:
    for config in (BalancerConfig(fib_lookup=True), BalancerConfig()):
        run(pair_of(config), [with_vip(VIP, REALS), *established()], [VIP])


def test_a_real_that_left_and_one_with_its_own_mac(
    pair_of: Callable[[BalancerConfig], Pair],
) -> None:
    with_mac = [Real(r.address, mac="02:00:00:00:00:0a") for r in REALS]
    steps: list[Step] = [with_vip(VIP, REALS), *established(), *established(40001)]
    steps += [lambda lb: lb.set_reals(VIP, REALS[:1]), *established()[1:], *established(40001)[1:]]
    steps += [lambda lb: lb.set_reals(VIP, with_mac), *established()[1:]]
    run(pair_of(ROUTED), steps, [VIP])


def test_other_frames_of_an_established_flow(pair_of: Callable[[BalancerConfig], Pair]) -> None:
    """Tagged, fragmented, malformed, with IP options, to another address."""
    base = Ether(src=CLIENT_MAC, dst=LB_MAC)
    tcp = TCP(sport=40000, dport=VIP.port, flags="A", seq=1000)
    ip = IP(src=CLIENT, dst=VIP.address)
    odd = [
        bytes(base / Dot1Q(vlan=7) / ip / tcp / Raw(b"xlb")),
        bytes(base / IP(src=CLIENT, dst=VIP.address, flags="MF") / tcp / Raw(b"xlb")),
        bytes(base / ip / TCP(sport=40000, dport=VIP.port, flags="A", dataofs=4)),
        bytes(base / ip / tcp)[:-4],
        bytes(base / IP(src=CLIENT, dst=VIP.address, options=[b"\x01" * 4]) / tcp),
        bytes(base / IP(src=CLIENT, dst="10.200.0.9") / tcp),
        bytes(base / IP(src=CLIENT, dst=VIP.address) / UDP(sport=40000, dport=VIP.port, len=4)),
    ]
    run(pair_of(ROUTED), [with_vip(VIP, REALS), *established(), *odd, *established()[1:]], [VIP])


def segment6(
    payload: bytes = b"xlb", flags: str = "A", tc: int = 0, hop_by_hop: bool = False
) -> bytes:
    ip = IPv6(src=CLIENT6, dst=VIP6.address, tc=tc, fl=0x12345)
    tcp = TCP(sport=40000, dport=VIP6.port, flags=flags, seq=1000, window=8192)
    ext = IPv6ExtHdrHopByHop() if hop_by_hop else None
    l3 = ip / ext / tcp if ext is not None else ip / tcp
    return bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / l3 / Raw(payload))


def established6() -> list[Step]:
    return [segment6(flags=flag) for flag in ["S", "A", "A", "A", "A"]]


@pytest.mark.parametrize("gue", [False, True])
def test_established_ipv6_flows(pair_of: Callable[[BalancerConfig], Pair], gue: bool) -> None:
    pair = pair_of(BalancerConfig(gateway_mac=GATEWAY_MAC, gue_all=gue))
    odd = [
        segment6(tc=0xB8),
        segment6(hop_by_hop=True),
        segment6(b"x" * 1000),
        bytes(
            Ether(src=CLIENT_MAC, dst=LB_MAC)
            / IPv6(src=CLIENT6, dst=VIP6.address)
            / IPv6ExtHdrFragment(m=1)
            / TCP(sport=40000, dport=VIP6.port, flags="A")
        ),
        segment6(flags="FA"),
    ]
    run(pair, [with_vip(VIP6, REALS6), *established6(), *odd, *established6()[1:]], [VIP6])
    assert pair.actions.count("XDP_TX") >= 10


def test_ipv6_over_the_mtu_and_without_a_next_hop(
    pair_of: Callable[[BalancerConfig], Pair],
) -> None:
    for config in (BalancerConfig(gateway_mac=GATEWAY_MAC, mtu=1280), BalancerConfig()):
        steps = [with_vip(VIP6, REALS6), *established6(), segment6(b"x" * 1250), segment6()]
        run(pair_of(config), steps, [VIP6])
