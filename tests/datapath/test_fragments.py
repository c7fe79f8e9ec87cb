"""Fragments (bpf/frag.h): every fragment of a datagram to the same real.

Datagrams are cut with scapy's fragment() / fragment6() as a client's
stack would cut them; each fragment must come out encapsulated exactly as
pkt_defs.encapsulated() says for the real of the datagram's 5-tuple: the
same real and outer header for all, whatever their order, as long as the
first fragment (the one with the ports) came before. The VIPs have
several reals, so "the same real" is not a given.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pkt_defs import (
    CLIENT4,
    CLIENT6,
    CONFIG,
    REAL_MAC,
    REAL_MAC6,
    assert_packet,
    clear_conn_tables,
    config_with,
    encapsulated,
    frag_needed,
    frame,
    ipv4,
    ipv6,
    packet_too_big,
)
from scapy.layers.inet import TCP, UDP, fragment
from scapy.layers.inet6 import IPv6ExtHdrFragment, fragment6
from scapy.packet import Packet, Raw

from xlb import Balancer, Flow, Real, Vip
from xlb.testing import outer_destination

VIP4 = Vip("192.0.2.90", 0, "udp")
VIP4_TCP = Vip("192.0.2.90", 80, "tcp")
VIP6 = Vip("2001:db8::90", 0, "udp")
REALS4 = [Real(f"10.0.9.{i}", mac=REAL_MAC) for i in range(1, 6)]
REALS6 = [Real(f"fd00::9:{i}", mac=REAL_MAC6) for i in range(1, 6)]
REALS_4IN6 = [Real(f"fd00::a:{i}", mac=REAL_MAC6) for i in range(1, 3)]
RING = 1009
TX, DROP = "XDP_TX", "XDP_DROP"
DATAGRAM = bytes(i & 0xFF for i in range(3000))  # three fragments of 1400 bytes, four of 1000


def cut4(packet: Packet, size: int) -> list[Packet]:
    """An IPv4 packet cut as a stack would, fragments of `size` bytes of
    payload at most (scapy's fragment())."""
    return list(fragment(packet, fragsize=size))  # type: ignore[no-untyped-call]


def cut6(packet: Packet, size: int) -> list[Packet]:
    """An IPv6 packet (with a fragment header) cut into fragments of at
    most `size` bytes in all (scapy's fragment6())."""
    return list(fragment6(packet, size))  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def frag_lb() -> Iterator[Balancer]:
    lb = Balancer(config=CONFIG)
    for vip, reals in ((VIP4, REALS4), (VIP4_TCP, REALS4), (VIP6, REALS6)):
        lb.add_vip(vip, ring_size=RING)
        lb.set_reals(vip, reals)
    yield lb
    lb.close()


@pytest.fixture
def lb(frag_lb: Balancer) -> Balancer:
    clear_conn_tables(frag_lb)
    frag_lb.configure(CONFIG)
    return frag_lb


def udp_datagram(family: int, sport: int, ip_id: int = 0x4242, size: int = 1400) -> list[Packet]:
    """A client's UDP datagram of DATAGRAM, cut into fragments of `size`."""
    if family == 4:
        whole = ipv4(CLIENT4, VIP4, df=False, ip_id=ip_id) / UDP(sport=sport, dport=7)
        return cut4(whole / Raw(DATAGRAM), size - 20)
    whole = ipv6(CLIENT6, VIP6) / IPv6ExtHdrFragment(id=ip_id) / UDP(sport=sport, dport=7)
    return cut6(whole / Raw(DATAGRAM), size)


def flow_of(family: int, sport: int, proto: str = "udp") -> Flow:
    if family == 4:
        return Flow(CLIENT4, VIP4.address, sport, 7 if proto == "udp" else 80, proto)
    return Flow(CLIENT6, VIP6.address, sport, 7, proto)


def tuple_of(flow: Flow) -> tuple[str, str, int, int, int]:
    return str(flow.src), str(flow.dst), flow.sport, flow.dport, 6 if flow.proto == "tcp" else 17


def real_of(address: str) -> Real:
    return next(r for r in REALS4 + REALS6 + REALS_4IN6 if str(r.address) == address)


def send(lb: Balancer, piece: Packet, flow: Flow) -> str:
    """One fragment: encapsulated exactly as a packet of `flow`; to which real."""
    result = lb.run(frame(piece))
    assert result.action == TX, f"{result.action}: {lb.counters()}"
    real = str(outer_destination(result.packet))
    want = encapsulated(piece, real_of(real), flow=tuple_of(flow))
    assert_packet(result.packet, want, f"fragment at offset {fragment_offset(piece)}")
    return real


def fragment_offset(piece: Packet) -> int:
    if piece.version == 4:
        return int(piece.frag) * 8
    header = piece.getlayer(IPv6ExtHdrFragment)
    return int(header.offset) * 8 if header is not None else 0


def counted(lb: Balancer, before: dict[str, int]) -> dict[str, int]:
    after = lb.counters()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(
    "order",
    [[0, 1, 2], [0, 2, 1], [0, 3, 1, 2]],
    ids=["in_order", "last_before_middle", "four_fragments_shuffled"],
)
def test_every_fragment_of_a_datagram_goes_to_its_flows_real(
    lb: Balancer, family: int, order: list[int]
) -> None:
    size = 1000 if len(order) == 4 else 1400
    frags = udp_datagram(family, 40001 + family, size=size)
    assert len(frags) == len(order)
    flow = flow_of(family, 40001 + family)
    before = lb.counters()
    reals = {send(lb, frags[i], flow) for i in order}
    assert reals == {str(lb.predict(flow))}
    seen = counted(lb, before)
    assert (seen["frag_first"], seen["frag_later"]) == (1, len(order) - 1)
    assert seen["forward"] == len(order)


@pytest.mark.parametrize("family", [4, 6])
def test_flows_spread_and_each_datagram_stays_whole(lb: Balancer, family: int) -> None:
    """Datagrams of 40 flows, their fragments interleaved: each flow's go
    to its own real, and the flows spread over the reals."""
    datagrams = {port: udp_datagram(family, port, ip_id=port) for port in range(41000, 41040)}
    firsts = [(port, frags[0]) for port, frags in datagrams.items()]
    laters = [(port, f) for port, frags in datagrams.items() for f in frags[1:]]
    where: dict[int, set[str]] = {port: set() for port in datagrams}
    for port, piece in firsts + laters[::-1]:
        where[port].add(send(lb, piece, flow_of(family, port)))
    assert all(len(reals) == 1 for reals in where.values())
    assert all(reals == {str(lb.predict(flow_of(family, p)))} for p, reals in where.items())
    assert len(set.union(*where.values())) >= 3


@pytest.mark.parametrize("family", [4, 6])
def test_a_later_fragment_before_its_first_is_dropped(lb: Balancer, family: int) -> None:
    """Out of order the other way: the ports are not known yet. That
    fragment is lost (the real could not reassemble the datagram without
    it anyway, and UDP applications retry); the rest is forwarded."""
    frags = udp_datagram(family, 40100)
    flow = flow_of(family, 40100)
    before = lb.counters()
    early = lb.run(frame(frags[1]))
    assert early.action == DROP
    assert early.packet == frame(frags[1])
    assert counted(lb, before)["drop_frag_not_found"] == 1
    assert {send(lb, f, flow) for f in (frags[0], frags[2])} == {str(lb.predict(flow))}
    assert send(lb, frags[1], flow) == str(lb.predict(flow))  # the sender's retry


@pytest.mark.parametrize("family", [4, 6])
def test_fragments_follow_the_connection_table_like_the_flow(lb: Balancer, family: int) -> None:
    """A flow recorded on a real keeps it after a ring change; its
    fragmented datagrams too, not only its whole ones."""
    vip, reals = (VIP4, REALS4) if family == 4 else (VIP6, REALS6)
    flow = flow_of(family, 40200)
    ip = ipv4(CLIENT4, VIP4) if family == 4 else ipv6(CLIENT6, VIP6)
    owner = send(lb, ip / UDP(sport=40200, dport=7) / Raw(b"small"), flow)
    lb.set_weight(vip, owner, 0)  # drained: the ring sends new flows elsewhere
    assert str(lb.predict(flow)) != owner
    try:
        frags = udp_datagram(family, 40200, ip_id=7)
        assert {send(lb, f, flow) for f in frags} == {owner}
    finally:
        lb.set_reals(vip, reals)


def test_tcp_fragments_of_a_connection_go_to_its_real(lb: Balancer) -> None:
    flow = flow_of(4, 40300, "tcp")
    segment = ipv4(CLIENT4, VIP4_TCP, df=False) / TCP(sport=40300, dport=80, flags="PA")
    frags = cut4(segment / Raw(DATAGRAM), 1376)
    assert {send(lb, f, flow) for f in [frags[0], *frags[:0:-1]]} == {str(lb.predict(flow))}


def test_two_clients_with_the_same_ip_id_do_not_mix(lb: Balancer) -> None:
    ours = udp_datagram(4, 40400, ip_id=99)
    theirs = cut4(
        ipv4("203.0.113.77", VIP4, df=False, ip_id=99) / UDP(sport=40401, dport=7) / Raw(DATAGRAM),
        1376,
    )
    ours_flow = flow_of(4, 40400)
    theirs_flow = Flow("203.0.113.77", VIP4.address, 40401, 7, "udp")
    send(lb, ours[0], ours_flow)
    send(lb, theirs[0], theirs_flow)
    assert {send(lb, f, ours_flow) for f in ours[1:]} == {str(lb.predict(ours_flow))}
    assert {send(lb, f, theirs_flow) for f in theirs[1:]} == {str(lb.predict(theirs_flow))}


# ---------------------------------------------------------------- MTU


def test_v4_fragments_without_df_are_encapsulated_over_the_mtu(lb: Balancer) -> None:
    """A full-size fragment (DF clear) plus an outer IPv4 header exceeds
    config.mtu: like any packet without DF it is encapsulated with DF clear
    (routers on the way may fragment the outer packet)."""
    frags = udp_datagram(4, 40500, size=1500)
    assert len(bytes(frags[0])) == 1500
    flow = flow_of(4, 40500)
    assert {send(lb, f, flow) for f in frags} == {str(lb.predict(flow))}


def test_v4_fragments_to_an_ipv6_real_get_one_icmp_error(lb: Balancer) -> None:
    """An IPv6 outer header is never fragmented: the first fragment gets
    "fragmentation needed" (the client lowers its path MTU and cuts the next
    datagrams smaller); later ones are dropped, as RFC 1122 wants no ICMP
    error about them."""
    vip = Vip("192.0.2.91", 0, "udp")
    lb.add_vip(vip, ring_size=RING)
    lb.set_reals(vip, REALS_4IN6)
    try:
        whole = ipv4(CLIENT4, vip, df=False, ip_id=5) / UDP(sport=40600, dport=7)
        frags = cut4(whole / Raw(DATAGRAM), 1480)
        first = lb.run(frame(frags[0]))
        assert first.action == TX
        assert_packet(first.packet, frag_needed(frags[0], 1460), "first fragment")
        before = lb.counters()
        for later in frags[1:-1]:
            assert lb.run(frame(later)).action == DROP
        assert counted(lb, before)["drop_frag_too_big"] == len(frags) - 2
        small = lb.run(frame(frags[-1]))  # the last one fits: it goes, to its flow's real
        assert small.action == TX
    finally:
        lb.remove_vip(vip)


def test_v6_fragments_too_big_get_packet_too_big(lb: Balancer) -> None:
    frags = udp_datagram(6, 40700, size=1500)
    flow = flow_of(6, 40700)
    for f in frags[:-1]:  # 1500 bytes each: 1540 with the outer header
        result = lb.run(frame(f))
        assert result.action == TX
        assert_packet(result.packet, packet_too_big(f, 1460), "too big")
    assert send(lb, frags[-1], flow) == str(lb.predict(flow))


def test_fragments_fit_when_the_mtu_leaves_room(lb: Balancer) -> None:
    lb.configure(config_with(mtu=1540))
    try:
        frags = udp_datagram(6, 40800, size=1500)
        flow = flow_of(6, 40800)
        assert {send(lb, f, flow) for f in frags} == {str(lb.predict(flow))}
    finally:
        lb.configure(CONFIG)
