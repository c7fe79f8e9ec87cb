"""Prefix VIPs (bpf/vip_prefix.h): a VIP for every address of a prefix.

Packets go through BPF_PROG_TEST_RUN; each forwarded one must be
encapsulated exactly as pkt_defs.encapsulated() says for the real the
ring gives its 5-tuple (Balancer.predict, which looks VIPs up as the data
plane does: exact address and port, exact address any port, then the
prefix VIPs with the port, then any port).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkt_defs import (
    CLIENT4,
    CLIENT6,
    CONFIG,
    REAL_MAC,
    REAL_MAC6,
    assert_packet,
    echo4,
    echo6,
    echo_reply,
    encapsulated,
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
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6ExtHdrFragment
from scapy.packet import Packet, Raw

from xlb import Balancer, ConfigError, ExistsError, Flow, Real, Vip, VipFlags
from xlb._abi import config_prefix_vips, u32
from xlb.testing import outer_destination

WEB = Vip("198.18.0.0/24", 80, "tcp")  # a prefix with a port
ANY = Vip("198.18.0.0/23", 0, "tcp")  # another prefix, every port: holds WEB's
EXACT = Vip("198.18.0.77", 80, "tcp")  # inside WEB: looked up first
WEB6 = Vip("2001:db8:18::/64", 443, "tcp")
UDP6 = Vip("2001:db8:19::/48", 0, "udp")
REALS4 = [Real(f"10.0.18.{i}", mac=REAL_MAC) for i in range(1, 5)]
REALS6 = [Real(f"fd00::18:{i}", mac=REAL_MAC6) for i in range(1, 5)]
OTHER4 = Real("10.0.19.1", mac=REAL_MAC)
OTHER6 = Real("fd00::19:1", mac=REAL_MAC6)
RING = 1009
TX, PASS, DROP = "XDP_TX", "XDP_PASS", "XDP_DROP"


@pytest.fixture
def lb() -> Iterator[Balancer]:
    balancer = Balancer(config=CONFIG)
    for vip, reals in ((WEB, REALS4), (ANY, [OTHER4]), (WEB6, REALS6), (UDP6, [OTHER6])):
        # no second chance: after a ring change a flow would carry its previous
        # real in a carrier header (test_second_chance.py); here: plain encap
        balancer.add_vip(vip, ring_size=RING, second_chance=0)
        balancer.set_reals(vip, reals)
    yield balancer
    balancer.close()


ALL_REALS = {str(r.address): r for r in [*REALS4, *REALS6, OTHER4, OTHER6, Real("10.0.20.1")]}


def send(lb: Balancer, l3: Packet) -> str:
    """A client packet that must be forwarded, exactly encapsulated; its real."""
    result = lb.run(frame(l3))
    assert result.action == TX, f"{l3.summary()}: {result.action}"
    real = str(outer_destination(result.packet))
    assert_packet(result.packet, encapsulated(l3, ALL_REALS[real]), l3.summary())
    return real


def flow_of(l3: Packet) -> Flow:
    l4 = l3.payload
    proto = "tcp" if isinstance(l4, TCP) else "udp"
    return Flow(l3.src, l3.dst, l4.sport, l4.dport, proto)


@pytest.mark.parametrize("address", ["198.18.0.0", "198.18.0.1", "198.18.0.128", "198.18.0.255"])
def test_every_address_of_a_prefix_reaches_its_reals(lb: Balancer, address: str) -> None:
    reals = set()
    for sport in range(40000, 40040):
        packet = tcp4(address, 80, sport=sport, flags="S")
        real = send(lb, packet)
        assert real == str(lb.predict(flow_of(packet)))
        assert lb.lookup_vip(ipaddress.ip_address(address), 80, "tcp") == WEB
        reals.add(real)
    assert reals == {str(r.address) for r in REALS4}  # one ring, spread over its reals


def test_the_flows_of_different_addresses_spread_independently(lb: Balancer) -> None:
    """The flow hash has the destination: one client port to every address
    of the prefix spreads over the ring like many ports to one address."""
    reals = {send(lb, tcp4(f"198.18.0.{i}", 80, sport=40000)) for i in range(1, 60)}
    assert len(reals) == len(REALS4)


def test_ipv6_prefixes_with_a_port_and_with_every_port(lb: Balancer) -> None:
    for address in ("2001:db8:18::1", "2001:db8:18::ffff:ffff:ffff:ffff", "2001:db8:18:0:1::9"):
        packet = tcp6(address, 443, flags="S")
        assert send(lb, packet) == str(lb.predict(flow_of(packet)))
    for port in (53, 4500):
        assert send(lb, udp6("2001:db8:19:ff::1", port)) == str(OTHER6.address)


def test_the_port_is_matched_before_the_prefix_length(lb: Balancer) -> None:
    """WEB (port 80) inside ANY (every port): port 80 is WEB's, other ports ANY's,
    and ANY's other /24 is ANY's for every port."""
    assert send(lb, tcp4("198.18.0.9", 80)) in {str(r.address) for r in REALS4}
    assert send(lb, tcp4("198.18.0.9", 22)) == str(OTHER4.address)
    assert send(lb, tcp4("198.18.1.9", 80)) == str(OTHER4.address)
    assert lb.lookup_vip(ipaddress.ip_address("198.18.1.9"), 80, "tcp") == ANY


def test_an_exact_vip_inside_a_prefix_wins(lb: Balancer) -> None:
    lb.add_vip(EXACT, ring_size=13)
    lb.set_reals(EXACT, [Real("10.0.20.1")])
    assert send(lb, tcp4(EXACT.address, 80)) == "10.0.20.1"
    assert send(lb, tcp4("198.18.0.78", 80)) in {str(r.address) for r in REALS4}


@pytest.mark.parametrize(
    "packet",
    [
        tcp4("198.18.2.1", 80),  # next to the prefixes
        tcp4("198.17.255.255", 80),
        udp4("198.18.0.9", 53),  # another protocol
        tcp6("2001:db8:18:1::1", 443),  # the next /64
        tcp6("2001:db8:18::1", 80),  # another port
    ],
    ids=["v4_after", "v4_before", "v4_udp", "v6_next_64", "v6_other_port"],
)
def test_addresses_outside_pass(lb: Balancer, packet: Packet) -> None:
    before = lb.counters()["pass_not_vip"]
    result = lb.run(frame(packet))
    assert (result.action, result.packet) == (PASS, frame(packet))
    assert lb.counters()["pass_not_vip"] == before + 1


def test_established_flows_keep_their_real_across_a_ring_change(lb: Balancer) -> None:
    """Prefix VIPs have no vip_filter bit (it cannot mark a prefix): their
    established flows are found in the connection table on the VIP path."""
    flows = [tcp4(f"198.18.0.{i}", 80, sport=41000 + i, flags="S") for i in range(1, 80)]
    owner = {i: send(lb, p) for i, p in enumerate(flows)}
    lb.set_reals(WEB, [*REALS4, Real("10.0.18.9", mac=REAL_MAC)])
    moved = 0
    for i, syn in enumerate(flows):
        ack = tcp4(syn.dst, 80, sport=syn[TCP].sport, flags="A")
        assert send(lb, ack) == owner[i]
        moved += str(lb.predict(flow_of(ack))) != owner[i]
    assert moved > 0


def test_ping_to_an_address_in_a_prefix_is_answered(lb: Balancer) -> None:
    for request in (echo4("198.18.1.200"), echo6("2001:db8:19:1::1")):
        result = lb.run(frame(request))
        assert result.action == TX
        assert_packet(result.packet, echo_reply(request), "echo reply")
    outside = lb.run(frame(echo4("198.18.2.1")))
    assert outside.action == PASS


def test_pmtu_errors_about_a_prefix_vip_flow_reach_its_real(lb: Balancer) -> None:
    client = tcp6("2001:db8:18::5", 443, sport=40500)
    real = send(lb, client)
    error = packet_too_big6(reply_of(client), quote_len=64)
    result = lb.run(frame(error))
    assert result.action == TX
    assert str(outer_destination(result.packet)) == real


def test_a_later_fragment_to_a_prefix_without_its_first_is_dropped(lb: Balancer) -> None:
    fragment = ipv4(CLIENT4, "198.18.0.9", frag=100, proto=6) / Raw(b"x" * 16)
    assert lb.run(frame(fragment)).action == DROP
    outside = ipv4(CLIENT4, "198.18.2.9", frag=100, proto=6) / Raw(b"x" * 16)
    assert lb.run(frame(outside)).action == PASS
    later6 = ipv6(CLIENT6, "2001:db8:19::9") / IPv6ExtHdrFragment(offset=100, nh=17) / Raw(b"y")
    assert lb.run(frame(later6)).action == DROP


def test_removing_the_last_prefix_vip_stops_the_prefix_lookups(lb: Balancer) -> None:
    def flag() -> bool:
        raw = lb.map("config").lookup(u32(0))
        assert raw is not None
        return config_prefix_vips(raw)

    assert flag()
    for vip in (WEB, ANY, WEB6, UDP6):
        lb.remove_vip(vip)
    assert not flag()
    assert lb.run(frame(tcp4("198.18.0.1", 80))).action == PASS
    assert len(list(lb.map("vip_prefixes").keys())) == 0
    assert len(list(lb.map("vip_prefix_addrs").keys())) == 0
    lb.add_vip(WEB)
    assert flag()


def test_overlapping_prefix_vips_are_refused_before_any_map_is_written(lb: Balancer) -> None:
    before = sorted(lb.map("vip_prefixes").items()), sorted(lb.map("vip_prefix_addrs").items())
    for vip in (Vip("198.18.0.128/25", 80), Vip("198.16.0.0/14", 80), Vip("198.18.0.0/24", 0)):
        with pytest.raises(ConfigError, match=r"overlaps VIP 198\.18\.0\.0/2[34]:\d+/tcp"):
            lb.add_vip(vip)
    with pytest.raises(ExistsError):
        lb.add_vip(WEB)
    after = sorted(lb.map("vip_prefixes").items()), sorted(lb.map("vip_prefix_addrs").items())
    assert after == before
    lb.add_vip(Vip("198.18.0.0/24", 80, "udp"))  # another protocol: fine


def test_flags_and_rings_of_a_prefix_vip_are_changed_in_place(lb: Balancer) -> None:
    packet = tcp4("198.18.0.33", 80, sport=40777)
    lb.set_vip_flags(WEB, VipFlags.NO_SPORT)
    real = send_with(lb, packet, VipFlags.NO_SPORT)
    assert all(
        send_with(lb, tcp4("198.18.0.33", 80, sport=s), VipFlags.NO_SPORT) == real
        for s in range(40000, 40020)
    )
    lb.set_reals(WEB, REALS4[:1])
    assert send_with(lb, tcp4("198.18.0.34", 80), VipFlags.NO_SPORT) == str(REALS4[0].address)


def send_with(lb: Balancer, l3: Packet, flags: VipFlags) -> str:
    result = lb.run(frame(l3))
    assert result.action == TX
    real = str(outer_destination(result.packet))
    want = encapsulated(l3, ALL_REALS[real], flags=flags, config=lb.config)
    assert_packet(result.packet, want, "with flags")
    return real


def test_a_restarted_control_plane_adopts_prefix_vips(pin_dir: Path) -> None:
    # pin_dir: unique to this process (two suites side by side once shared
    # one named after tmp_path, and one's teardown removed the other's pins)
    first = Balancer(pin_dir=pin_dir, config=CONFIG)
    first.add_vip(WEB, VipFlags.NO_SPORT, ring_size=RING)
    first.set_reals(WEB, REALS4)
    first.add_vip(EXACT, ring_size=13)
    first.close()
    second = Balancer(pin_dir=pin_dir)
    try:
        assert second.vips() == [WEB, EXACT]
        assert second.vip_flags(WEB) == VipFlags.NO_SPORT
        assert second.reals(WEB) == REALS4
        packet = tcp4("198.18.0.200", 80)
        assert send_with(second, packet, VipFlags.NO_SPORT) == str(second.predict(flow_of(packet)))
        second.remove_vip(WEB)
        assert second.run(frame(packet)).action == PASS
    finally:
        second.close(detach=True)


def test_a_config_file_with_prefix_vips_is_applied_and_saved_back(lb: Balancer) -> None:
    """The daemon's path: a file's prefix VIPs are programmed, read back
    from the data plane as the same VIPs (a reload changes nothing), and
    saved as the same file."""
    from xlb import config as cfg

    text = """
[balancer]
gateway_mac = "02:00:00:00:00:fe"

[[vip]]
address = "198.19.0.0/24"
port = 8080
flags = ["no_sport"]
ring_size = 13

[[vip.reals]]
address = "10.0.18.1"

[[vip]]
address = "2001:db8:1a::/56"
port = 0
protocol = "udp"
ring_size = 13

[[vip.reals]]
address = "fd00::18:1"
"""
    wanted = cfg.loads(text)
    for vip in lb.vips():
        lb.remove_vip(vip)
    failures = cfg.apply(lb, cfg.diff(cfg.state_of_balancer(lb), wanted))
    assert failures == []
    assert cfg.diff(cfg.state_of_balancer(lb), wanted) == []
    saved = cfg.from_balancer(lb, wanted)
    assert [str(e.vip) for e in saved.vips] == [
        "198.19.0.0/24:8080/tcp",
        "[2001:db8:1a::/56]:0/udp",
    ]
    assert cfg.loads(cfg.dumps(saved)).vips == wanted.vips
    packet = tcp4("198.19.0.200", 8080)
    result = lb.run(frame(packet))
    want = encapsulated(packet, Real("10.0.18.1"), flags=VipFlags.NO_SPORT, config=lb.config)
    assert_packet(result.packet, want, "a VIP of the file")
