"""QUIC connection-ID routing (bpf/quic.h) through BPF_PROG_TEST_RUN.

Each datagram to a QUIC VIP must come out encapsulated, byte for byte as
pkt_defs.encapsulated builds it, to the real its destination connection ID
names (QUIC-LB server id), or else to the real the ring gives the CID's
hash (`quic_cid_hash`, mirrored in Python), and count exactly one QUIC
counter. The expected real is never read from the program's output: it is
the real whose server id the CID carries, or `Balancer.predict_quic`
(the Python mirror of the data plane's choice), and where a case means
anything only if the 5-tuple or the ring would have chosen otherwise, the
test checks that it would have.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkt_defs import (
    REAL_MAC,
    REAL_MAC6,
    SETUPS,
    ProgramLb,
    Service,
    Setup,
    assert_packet,
    encapsulated,
    frame,
    ipv4,
    ipv6,
)
from scapy.layers.inet import UDP
from scapy.packet import Packet, Raw

from xlb import Balancer, BalancerConfig, ConfigError, Flow, Real, Vip, VipFlags
from xlb.flowhash import quic_cid_hash
from xlb.quiclb import HASH_LEN, destination_cid, encode_cid, server_id_of
from xlb.testing import (
    GATEWAY_MAC,
    QUIC_0RTT,
    QUIC_HANDSHAKE,
    QUIC_INITIAL,
    outer_destination,
    quic_long_header,
    quic_short_header,
)

CONFIG = SETUPS["std"].config
QUIC = VipFlags.QUIC
VIP4 = Vip("192.0.2.90", 443, "udp")
VIP6 = Vip("2001:db8::90", 443, "udp")
REALS4 = (
    Real("10.2.0.1", mac=REAL_MAC),
    Real("10.2.0.2", mac=REAL_MAC),
    Real("10.2.0.3", mac=REAL_MAC),
    Real("10.2.0.4", mac=REAL_MAC, server_id=0x7777),  # pinned
)
REALS6 = (
    Real("fd00:2::1", mac=REAL_MAC6),
    Real("fd00:2::2", mac=REAL_MAC6),
    Real("fd00:2::3", mac=REAL_MAC6, server_id=0x0A0B),
)
RING = 1009
SERVICES = (
    Service(VIP4, REALS4, QUIC, RING),
    Service(VIP6, REALS6, QUIC | VipFlags.GUE, RING),
)
SETUP = Setup(SERVICES, CONFIG, "a QUIC VIP per family, the IPv6 one over GUE")
FAMILIES = {4: (VIP4, REALS4, QUIC), 6: (VIP6, REALS6, QUIC | VipFlags.GUE)}
TX = "XDP_TX"


@pytest.fixture
def quic_lb(packet_lb: ProgramLb) -> Balancer:
    return packet_lb(SETUP)


def datagram(vip: Vip, payload: bytes, *, src: str | None = None, sport: int = 40000) -> Packet:
    """A client's UDP datagram to `vip` carrying `payload` (a QUIC packet)."""
    ip = ipv4(src or "198.51.100.7", vip) if vip.family == 4 else ipv6(src or "2001:db8:c::7", vip)
    return ip / UDP(sport=sport, dport=vip.port) / Raw(payload)


def clients(vip: Vip, n: int, seed: int) -> list[tuple[str, int]]:
    """`n` different (client address, port): the same connection migrating."""
    rng = random.Random(seed)
    if vip.family == 4:
        return [(f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}", rng.randrange(1024, 65536))
                for _ in range(n)]  # fmt: skip
    return [(f"2001:db8:c:{rng.randrange(65536):x}::{rng.randrange(1, 65535):x}",
             rng.randrange(1024, 65536)) for _ in range(n)]  # fmt: skip


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def send(
    lb: Balancer, l3: Packet, real: Real, flags: VipFlags, flow_hash: int | None, counter: str
) -> None:
    """Run `l3`: it must come out encapsulated to `real`, hashed as given
    (None: its 5-tuple), counting forward, XDP_TX and `counter` once each."""
    before = lb.counters()
    result = lb.run(frame(l3))
    delta = counter_delta(before, lb.counters())
    assert result.action == TX, delta
    want = encapsulated(l3, real, flags=flags, config=CONFIG, flow_hash=flow_hash)
    assert_packet(result.packet, want, f"{counter} -> {real.address}")
    assert delta == {"xdp_tx": 1, "forward": 1, counter: 1}


def cid_hash(payload: bytes) -> int:
    cid = destination_cid(payload)
    assert cid is not None
    return quic_cid_hash(cid, CONFIG.hash_seed)


def ring_owner(lb: Balancer, vip: Vip, payload: bytes) -> str:
    """The real the ring gives this datagram's CID hash (what routing by
    server id overrides)."""
    return str(lb.ring(vip)[cid_hash(payload) % lb.ring_size(vip)])


def by_address(reals: tuple[Real, ...]) -> dict[str, Real]:
    return {str(r.address): r for r in reals}


def unknown_ids(lb: Balancer, vip: Vip, n: int, seed: int) -> Iterator[bytes]:
    """CIDs in the QUIC-LB format whose server id no real of `vip` holds."""
    rng = random.Random(seed)
    taken = set(lb.server_ids(vip).values())
    while n:
        sid = rng.randrange(1 << 16)
        if sid not in taken:
            n -= 1
            yield encode_cid(sid, rng.randbytes(5))


# ======================================================== server ids


def test_every_real_gets_a_distinct_server_id_pinned_ones_kept(quic_lb: Balancer) -> None:
    ids4 = quic_lb.server_ids(VIP4)
    assert set(ids4) == {r.address for r in REALS4}
    assert len(set(ids4.values())) == len(REALS4)
    assert ids4[REALS4[3].address] == 0x7777  # pinned
    assert ids4[REALS4[0].address] == 0x0001  # derived: the address's low 16 bits
    assert quic_lb.reals(VIP4) == sorted(REALS4, key=lambda r: r.address.packed)
    assert quic_lb.server_ids(VIP6)[REALS6[2].address] == 0x0A0B


@pytest.mark.parametrize("family", [4, 6])
def test_short_header_goes_to_the_real_its_server_id_names(quic_lb: Balancer, family: int) -> None:
    """From several client addresses and ports (a migrating connection):
    always the named real, also where the ring would pick another."""
    vip, reals, flags = FAMILIES[family]
    for i, real in enumerate(reals):
        payload = quic_short_header(cid_the_ring_sends_elsewhere(quic_lb, vip, real, seed=i))
        for src, sport in clients(vip, 4, seed=i):
            l3 = datagram(vip, payload, src=src, sport=sport)
            send(quic_lb, l3, real, flags, cid_hash(payload), "quic_routed_by_cid")


def cid_the_ring_sends_elsewhere(lb: Balancer, vip: Vip, real: Real, seed: int) -> bytes:
    """A CID naming `real` whose hash the ring gives another real: the
    server id, not the ring, must decide (a seeded search, never by chance)."""
    rng = random.Random(seed)
    for _ in range(200):
        cid = encode_cid(lb.server_ids(vip)[real.address], rng.randbytes(5))
        if ring_owner(lb, vip, quic_short_header(cid)) != str(real.address):
            return cid
    raise AssertionError(f"the ring gives {real.address} every CID tried")


def test_a_drained_real_still_gets_its_connections(packet_lb: ProgramLb) -> None:
    lb = packet_lb(SETUP)
    drained = REALS4[1]
    lb.set_weight(VIP4, drained.address, 0)
    assert drained.address not in set(lb.ring(VIP4))  # out of the ring: no new connection
    cid = encode_cid(lb.server_ids(VIP4)[drained.address], os.urandom(5))
    for src, sport in clients(VIP4, 3, seed=7):
        l3 = datagram(VIP4, quic_short_header(cid), src=src, sport=sport)
        send(lb, l3, drained.with_weight(0), QUIC, cid_hash(quic_short_header(cid)),
             "quic_routed_by_cid")  # fmt: skip
    for cid in unknown_ids(lb, VIP4, 50, seed=8):  # new connections never land there
        real = lb.predict_quic(VIP4, quic_short_header(cid))
        assert real is not None and real != drained.address


def test_a_removed_real_s_id_is_unknown(packet_lb: ProgramLb) -> None:
    lb = packet_lb(SETUP)
    gone = REALS4[0]
    sid = lb.server_ids(VIP4)[gone.address]
    lb.remove_real(VIP4, gone.address)
    payload = quic_short_header(encode_cid(sid, os.urandom(5)))
    owner = lb.predict_quic(VIP4, payload)
    assert owner is not None and owner != gone.address
    send(lb, datagram(VIP4, payload), by_address(REALS4)[str(owner)], QUIC, cid_hash(payload),
         "quic_unknown_id")  # fmt: skip


# ============================================== the CID hash (fallback)


@pytest.mark.parametrize("family", [4, 6])
def test_unknown_server_id_follows_the_cid_not_the_5_tuple(quic_lb: Balancer, family: int) -> None:
    vip, reals, flags = FAMILIES[family]
    owners = set()
    for cid in unknown_ids(quic_lb, vip, 20, seed=family):
        payload = quic_short_header(cid)
        owner = quic_lb.predict_quic(vip, payload)
        assert owner is not None
        owners.add(owner)
        for src, sport in clients(vip, 3, seed=cid[1]):
            l3 = datagram(vip, payload, src=src, sport=sport)
            send(quic_lb, l3, by_address(reals)[str(owner)], flags, cid_hash(payload),
                 "quic_unknown_id")  # fmt: skip
    assert len(owners) > 1  # hashed over the ring, not one default real


def test_another_config_id_is_not_read_as_a_server_id(quic_lb: Balancer) -> None:
    """Config rotation bits other than ours (0b111: "unroutable") make the
    octets after them no server id, even those of a real's id."""
    sid = quic_lb.server_ids(VIP4)[REALS4[2].address]
    for first in (0xE7, 0x27):
        cid = bytes([first]) + sid.to_bytes(2, "big") + os.urandom(5)
        assert server_id_of(cid) is None
        payload = quic_short_header(cid)
        owner = quic_lb.predict_quic(VIP4, payload)
        assert owner is not None
        send(quic_lb, datagram(VIP4, payload), by_address(REALS4)[str(owner)], QUIC,
             cid_hash(payload), "quic_unknown_id")  # fmt: skip


@pytest.mark.parametrize("family", [4, 6])
def test_initial_and_0rtt_follow_the_client_s_dcid(quic_lb: Balancer, family: int) -> None:
    """A client's Initial (and its retransmissions, from another port after a
    NAT rebinding) and its 0-RTT packets carry the DCID it chose: one real."""
    vip, reals, flags = FAMILIES[family]
    rng = random.Random(family)
    owners = set()
    for _ in range(12):
        dcid = bytes([0xE0 | rng.randrange(32)]) + rng.randbytes(rng.choice([8, 12, 20]) - 1)
        owner = None
        for packet_type, size in ((QUIC_INITIAL, 1200), (QUIC_0RTT, 300), (QUIC_INITIAL, 1200)):
            payload = quic_long_header(packet_type, dcid, rng.randbytes(8), size=size)
            predicted = quic_lb.predict_quic(vip, payload)
            assert predicted is not None and (owner is None or predicted == owner)
            owner = predicted
            src, sport = clients(vip, 1, seed=rng.randrange(1 << 30))[0]
            l3 = datagram(vip, payload, src=src, sport=sport)
            send(quic_lb, l3, by_address(reals)[str(owner)], flags, cid_hash(payload),
                 "quic_initial")  # fmt: skip
        owners.add(owner)
    assert len(owners) > 1


def test_handshake_carrying_the_server_s_cid_goes_to_that_server(quic_lb: Balancer) -> None:
    """After the server's first reply the client's long headers carry the
    server's CID: routed by its id, like short headers."""
    for real in REALS4:
        cid = encode_cid(quic_lb.server_ids(VIP4)[real.address], os.urandom(9))
        for packet_type in (QUIC_INITIAL, QUIC_HANDSHAKE):
            payload = quic_long_header(packet_type, cid, os.urandom(8), size=1200)
            send(quic_lb, datagram(VIP4, payload), real, QUIC, cid_hash(payload),
                 "quic_routed_by_cid")  # fmt: skip


@pytest.mark.parametrize("length", [0, 2, 4, 6, 7])
def test_long_header_with_a_short_dcid_hashes_it_zero_padded(
    quic_lb: Balancer, length: int
) -> None:
    """The octets past a short CID (its SCID's length, ...) are not the CID:
    hashed as zeros, so the hash is the CID's alone."""
    dcid = bytes([0xE1]) + os.urandom(6)
    hashes = set()
    for scid in (b"\x11" * 8, b"\x22" * 4):
        payload = quic_long_header(QUIC_HANDSHAKE, dcid[:length], scid, size=200)
        hashes.add(cid_hash(payload))
        owner = quic_lb.predict_quic(VIP4, payload)
        assert owner is not None
        send(quic_lb, datagram(VIP4, payload), by_address(REALS4)[str(owner)], QUIC,
             cid_hash(payload), "quic_initial")  # fmt: skip
    assert hashes == {quic_cid_hash(dcid[:length], CONFIG.hash_seed)}


# ========================================================== malformed

MALFORMED = {
    "empty_payload": b"",
    "one_octet": b"\x41",
    "short_header_cid_cut": quic_short_header(b"")[:1] + bytes(HASH_LEN - 1),
    "long_header_cut_before_dcid_length": quic_long_header(QUIC_INITIAL, bytes(8))[:5],
    "long_header_dcid_over_20": quic_long_header(QUIC_INITIAL, bytes(21), size=1200),
    "long_header_dcid_past_the_datagram": quic_long_header(QUIC_INITIAL, bytes(20))[:20],
    "long_header_window_past_the_datagram": quic_long_header(QUIC_INITIAL, b"")[: 6 + HASH_LEN - 1],
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_datagram_without_a_readable_cid_follows_its_5_tuple(
    quic_lb: Balancer, payload: bytes
) -> None:
    assert destination_cid(payload) is None  # the Python mirror agrees
    l3 = datagram(VIP4, payload)
    owner = quic_lb.predict(Flow("198.51.100.7", VIP4.address, 40000, VIP4.port, "udp"))
    assert owner is not None
    send(quic_lb, l3, by_address(REALS4)[str(owner)], QUIC, None, "quic_malformed")


def test_ethernet_padding_is_not_read_as_a_cid(quic_lb: Balancer) -> None:
    """A 4-octet datagram arrives in a 60-octet frame; the padding after it
    holds what would complete a real's CID, and must not be read."""
    cid = encode_cid(quic_lb.server_ids(VIP4)[REALS4[0].address], bytes(5))
    l3 = datagram(VIP4, quic_short_header(cid)[:4])
    padding = quic_short_header(cid)[4:]
    before = quic_lb.counters()
    result = quic_lb.run(frame(l3, padding=padding))
    assert result.action == TX
    assert counter_delta(before, quic_lb.counters())["quic_malformed"] == 1
    owner = quic_lb.predict(Flow("198.51.100.7", VIP4.address, 40000, VIP4.port, "udp"))
    want = encapsulated(l3, by_address(REALS4)[str(owner)], flags=QUIC, config=CONFIG,
                        padding=padding)  # fmt: skip
    assert_packet(result.packet, want, "padded")


# ==================================================== connection table


def test_a_quic_vip_never_touches_the_connection_table(quic_lb: Balancer) -> None:
    sid = quic_lb.server_ids(VIP4)[REALS4[0].address]
    payloads = [quic_short_header(encode_cid(sid, os.urandom(5))), b"x",
                quic_long_header(QUIC_INITIAL, os.urandom(8), size=1200)]  # fmt: skip
    before = quic_lb.counters()
    for payload in payloads:
        assert quic_lb.run(frame(datagram(VIP4, payload))).action == TX
    assert not any(k.startswith("conn_") for k in counter_delta(before, quic_lb.counters()))
    assert list(quic_lb.map("conn_v4").keys()) == []


def test_a_udp_vip_turned_quic_ignores_its_old_connection_entries(packet_lb: ProgramLb) -> None:
    """The fast path finds the 5-tuple's entry (made while the VIP hashed
    5-tuples) and must leave the packet to the CID."""
    vip = Vip("192.0.2.91", 443, "udp")
    lb = packet_lb(Setup((Service(vip, REALS4, VipFlags.NONE, RING),), CONFIG))
    l3 = datagram(vip, b"not quic yet")
    first = outer_destination(lb.run(frame(l3)).packet)
    assert len(list(lb.map("conn_v4").keys())) == 1
    lb.set_vip_flags(vip, QUIC)
    other = next(r for r in REALS4 if r.address != first)
    payload = quic_short_header(encode_cid(lb.server_ids(vip)[other.address], os.urandom(5)))
    send(lb, datagram(vip, payload), other, QUIC, cid_hash(payload), "quic_routed_by_cid")


# ============================================== API, errors, adoption


def test_bad_server_ids_are_refused_before_any_change(quic_lb: Balancer) -> None:
    entries = sorted(quic_lb.map("quic_servers").items())
    dup = [Real("10.2.0.9", mac=REAL_MAC, server_id=0x7777), *REALS4]
    with pytest.raises(ConfigError, match="both given server_id 30583"):
        quic_lb.set_reals(VIP4, dup)
    with pytest.raises(ConfigError, match="0-65535"):
        Real("10.2.0.9", server_id=1 << 16)
    with pytest.raises(ConfigError, match="0-65535"):
        Real("10.2.0.9", server_id=-1)
    with pytest.raises(ConfigError, match="for UDP VIPs"):
        quic_lb.add_vip(Vip("192.0.2.92", 443, "tcp"), QUIC)
    assert sorted(quic_lb.map("quic_servers").items()) == entries
    assert quic_lb.reals(VIP4) == sorted(REALS4, key=lambda r: r.address.packed)


def test_repinning_moves_the_id_and_frees_the_old_one(packet_lb: ProgramLb) -> None:
    lb = packet_lb(SETUP)
    moved = Real(REALS4[0].address, mac=REAL_MAC, server_id=0x0101)
    lb.set_reals(VIP4, [moved, *REALS4[1:]])
    assert lb.server_ids(VIP4)[moved.address] == 0x0101
    old = quic_short_header(encode_cid(0x0001, os.urandom(5)))
    assert lb.predict_quic(VIP4, old) is not None
    before = lb.counters()
    lb.run(frame(datagram(VIP4, old)))
    assert counter_delta(before, lb.counters())["quic_unknown_id"] == 1
    new = quic_short_header(encode_cid(0x0101, os.urandom(5)))
    send(lb, datagram(VIP4, new), moved, QUIC, cid_hash(new), "quic_routed_by_cid")
    keys = {server_id for _, server_id in _entries(lb)}
    assert keys == set(lb.server_ids(VIP4).values()) | set(lb.server_ids(VIP6).values())


def _entries(lb: Balancer) -> list[tuple[int, int]]:
    return [
        (int.from_bytes(k[:4], "little"), int.from_bytes(k[4:], "little"))
        for k in lb.map("quic_servers").keys()
    ]


def test_server_ids_survive_adoption(pin_dir: Path) -> None:
    """A new Balancer on the same pins gives back the ids and the pinned
    reals, and packets keep their reals; turning QUIC off clears the map."""
    config = BalancerConfig(gateway_mac=GATEWAY_MAC)
    with Balancer(pin_dir=pin_dir, config=config) as first:
        first.add_vip(VIP4, QUIC, RING)
        first.set_reals(VIP4, list(REALS4))
        ids, reals = first.server_ids(VIP4), first.reals(VIP4)
    with Balancer(pin_dir=pin_dir) as second:
        assert second.server_ids(VIP4) == ids
        assert second.reals(VIP4) == reals
        for real in REALS4:
            payload = quic_short_header(encode_cid(ids[real.address], os.urandom(5)))
            packet = second.run(frame(datagram(VIP4, payload))).packet
            assert outer_destination(packet) == real.address
        second.set_vip_flags(VIP4, VipFlags.NONE)
        assert second.server_ids(VIP4) == {}
        assert list(second.map("quic_servers").keys()) == []
        second.close(detach=True)


def test_quic_routes_are_a_metric_not_reasons(quic_lb: Balancer) -> None:
    from xlb.metrics import BalancerCollector

    def scrape() -> dict[tuple[str, str], float]:
        samples = {}
        for family in BalancerCollector(quic_lb).collect():
            for sample in family.samples:
                label = sample.labels.get("route", sample.labels.get("reason", ""))
                samples[(sample.name, label)] = sample.value
        return samples

    before = scrape()
    sid = quic_lb.server_ids(VIP4)[REALS4[0].address]
    for payload in (quic_short_header(encode_cid(sid, os.urandom(5))), b"",
                    quic_long_header(QUIC_INITIAL, os.urandom(8), size=1200),
                    quic_long_header(QUIC_INITIAL, os.urandom(8), size=1200)):  # fmt: skip
        quic_lb.run(frame(datagram(VIP4, payload)))
    after = scrape()
    routes = {"by_cid": 1, "initial": 2, "unknown_id": 0, "malformed": 1}
    for route, n in routes.items():
        key = ("xlb_quic_packets_total", route)
        assert after[key] - before.get(key, 0) == n, route
    assert not any(name == "xlb_packets_total" and r.startswith("quic") for name, r in after)
