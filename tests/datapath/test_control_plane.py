"""The Balancer API against the real program: rings, drains, adoption, upgrades.

Packets go through BPF_PROG_TEST_RUN; what a test checks is where the
program sent them (the outer destination), which is what a user relies on.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from bench.common import pinned
from xlb import (
    Balancer,
    BalancerConfig,
    ConfigError,
    Flow,
    NotFoundError,
    Real,
    Vip,
    VipFlags,
)
from xlb._abi import read_u32, u32, vip_filter_bit
from xlb._bpf import BpfObject, Map, ffi
from xlb.balancer import BALANCER_OBJECT, MAX_REALS, PROGRAM_NAME
from xlb.errors import BpfError, CapacityError, ExistsError
from xlb.flows import FLOW_CACHE_EPOCHS, forget_cached_flows
from xlb.rings import RINGS_PER_VIP, GracePeriods, ring_index
from xlb.stats import counter_names, stats_sizes
from xlb.testing import GATEWAY_MAC, outer_destination, tcp_packet, udp_packet
from xlb.testing.packets import decode_encapsulated

VIP4 = Vip("10.200.0.1", 80, "tcp")
VIP6 = Vip("2001:db8:200::1", 80, "tcp")
REALS4 = [Real(f"10.0.0.{i}") for i in range(1, 5)]
REALS6 = [Real(f"2001:db8:1::{i}") for i in range(1, 5)]


def destination(lb: Balancer, packet: bytes) -> str:
    result = lb.run(packet)
    assert result.action == "XDP_TX", result
    return str(outer_destination(result.packet))


def random_flows(n: int, vip: Vip, seed: int = 1) -> list[Flow]:
    rng = random.Random(seed)
    flows = []
    for _ in range(n):
        if vip.family == 4:
            src = f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        else:
            src = f"2001:db8:c::{rng.randrange(1, 65535):x}:{rng.randrange(1, 65535):x}"
        flows.append(Flow(src, vip.address, rng.randrange(1024, 65535), vip.port, vip.proto))
    return flows


def packet_for(flow: Flow, flags: str = "S") -> bytes:
    if flow.proto == "tcp":
        return tcp_packet(flow.src, flow.dst, flow.sport, flow.dport, flags=flags)
    return udp_packet(flow.src, flow.dst, flow.sport, flow.dport)


def dump_maps(lb: Balancer) -> dict[str, list[tuple[bytes, bytes]]]:
    names = ["vips", "reals", "config", "stats", "conn_v4", "conn_v6"]
    dumped = {name: sorted(lb.map(name).items()) for name in names}
    dumped["rings"] = sorted(lb.map("rings").items())  # inner map ids
    return dumped


@pytest.mark.parametrize(("vip", "reals"), [(VIP4, REALS4), (VIP6, REALS6)], ids=["v4", "v6"])
def test_predict_matches_the_data_plane(lb: Balancer, vip: Vip, reals: list[Real]) -> None:
    lb.add_vip(vip)
    lb.set_reals(vip, reals)
    for flow in random_flows(2000, vip):
        assert destination(lb, packet_for(flow)) == str(lb.predict(flow))


def test_flows_spread_as_the_ring_says(lb: Balancer) -> None:
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, [Real("10.0.0.1"), Real("10.0.0.2", weight=3)])
    counts = {"10.0.0.1": 0, "10.0.0.2": 0}
    flows = random_flows(10000, VIP4, seed=7)
    for flow in flows:
        counts[destination(lb, packet_for(flow))] += 1
    assert abs(counts["10.0.0.2"] / len(flows) - 0.75) < 0.03


def test_weight_zero_drains_new_flows_but_keeps_established(lb: Balancer) -> None:
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    flows = random_flows(400, VIP4, seed=3)
    first = {f: destination(lb, packet_for(f, "S")) for f in flows}
    lb.set_weight(VIP4, "10.0.0.1", 0)
    for f in flows:  # established flows (ACKs) keep their real, drained or not
        assert destination(lb, packet_for(f, "A")) == first[f]
    for f in random_flows(400, VIP4, seed=4):  # new flows never reach the drained real
        assert destination(lb, packet_for(f, "S")) != "10.0.0.1"
    assert lb.ring_shares(VIP4)[Real("10.0.0.1").address] == 0.0


def test_removed_real_flows_reselect_and_others_stay(lb: Balancer) -> None:
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    flows = random_flows(400, VIP4, seed=5)
    first = {f: destination(lb, packet_for(f, "S")) for f in flows}
    lb.remove_real(VIP4, "10.0.0.2")
    for f in flows:
        now = destination(lb, packet_for(f, "A"))
        if first[f] == "10.0.0.2":
            assert now != "10.0.0.2"
        else:
            assert now == first[f]


def test_flow_owners_and_table_fill_follow_the_entries_packets_made(lb: Balancer) -> None:
    """What `xlb top` and the metrics read: each entry's VIP and real, by
    key, in batches; a removed real's entries are stale and left out."""
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    lb.add_vip(VIP6)
    lb.set_reals(VIP6, REALS6)
    flows = random_flows(150, VIP4, seed=40) + random_flows(50, VIP6, seed=41)
    owner = {f: destination(lb, packet_for(f, "S")) for f in flows}
    fill = lb.conn_table_fill()
    assert (fill[4].entries, fill[6].entries) == (150, 50)
    assert fill[4].capacity == fill[6].capacity == lb.map("conn_v4").max_entries

    owners = lb.flow_owners(limit=1000)
    assert owners is not None and len(owners) == len(flows)
    by_flow = {f: (VIP4 if f.dst.version == 4 else VIP6, ip_address(owner[f])) for f in flows}
    assert Counter(owners.values()) == Counter(by_flow.values())
    assert lb.flow_owners(limit=199) is None  # more entries than asked to read

    lb.remove_real(VIP4, "10.0.0.2")
    after = lb.flow_owners(limit=1000)
    assert after is not None
    gone = sum(1 for _, real in by_flow.values() if str(real) == "10.0.0.2")
    assert len(after) == len(flows) - gone and gone > 0
    assert lb.conn_table_fill()[4].entries == 150  # stale entries still take room


def test_ring_switch_under_a_packet_stream_only_old_or_new_reals(lb: Balancer) -> None:
    lb.add_vip(VIP4)
    sets = [REALS4[:2], REALS4[2:], REALS4[1:3]]
    lb.set_reals(VIP4, sets[0])
    allowed = {str(r.address) for r in REALS4}
    seen: list[str] = []
    stop = threading.Event()

    packets = [packet_for(f, "S") for f in random_flows(300, VIP4, seed=9)]

    def stream() -> None:
        while not stop.is_set():
            for p in packets:
                seen.append(destination(lb, p))

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        for i in range(12):
            lb.set_reals(VIP4, sets[i % len(sets)])
    finally:
        stop.set()
        sender.join()
    assert seen and set(seen) <= allowed
    final = {str(r.address) for r in sets[11 % len(sets)]}
    for f in random_flows(200, VIP4, seed=10):
        assert destination(lb, packet_for(f, "S")) in final


def ring_slot_maps(lb: Balancer, vip_id: int = 0) -> dict[int, int]:
    """slot -> id of the inner map in that ring slot of the VIP."""
    maps = {}
    for slot in range(RINGS_PER_VIP):
        raw = lb.map("rings").lookup(u32(ring_index(vip_id, slot)))
        if raw is not None:
            maps[slot] = read_u32(raw)
    return maps


class ManualGrace:
    """Grace tickets that pass only when a test says so: which ring slot a
    change takes depends on which tickets passed, so a test that counts
    slots must not race the kernel's RCU. `wait()` stands for "time goes on
    until the ticket passes"."""

    def __init__(self) -> None:
        self.issued = 0
        self.passed_upto = 0

    def ticket(self) -> int:
        self.issued += 1
        return self.issued

    def passed(self, ticket: int) -> bool:
        return ticket <= self.passed_upto

    def wait(self, ticket: int) -> None:
        self.passed_upto = max(self.passed_upto, ticket)

    def close(self) -> None:
        pass


@pytest.fixture
def manual_grace_lb() -> Iterator[Balancer]:
    balancer = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC), grace_periods=ManualGrace())
    yield balancer
    balancer.close()


def test_ring_changes_refill_the_vip_slots_without_touching_rings(
    manual_grace_lb: Balancer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the VIP's slots hold maps, a change writes a spare one and flips
    the VIP entry: no new inner map, no update of `rings` (each would cost
    an RCU grace period), and every change is live when the call returns.
    No ticket passes on its own here, so the first changes fill every slot."""
    lb = manual_grace_lb
    lb.add_vip(VIP4)
    sets = [REALS4[:2], REALS4[2:], REALS4[1:3], REALS4]
    for reals in sets[:RINGS_PER_VIP]:
        lb.set_reals(VIP4, reals)
    maps = ring_slot_maps(lb)
    assert len(maps) == RINGS_PER_VIP
    swap = type(lb.map("rings")).update_fd

    def no_rings_update(self: Map, key: bytes, fd: int) -> None:
        assert self.name != "rings", "a ring change updated the outer map"
        swap(self, key, fd)

    monkeypatch.setattr(type(lb.map("rings")), "update_fd", no_rings_update)
    for i in range(8):
        reals = sets[(i + RINGS_PER_VIP) % len(sets)]
        lb.set_reals(VIP4, reals)
        assert ring_slot_maps(lb) == maps
        names = {str(r.address) for r in reals}
        for f in random_flows(100, VIP4, seed=i):
            sent = destination(lb, packet_for(f, "S"))
            assert sent == str(lb.predict(f)) and sent in names


def test_back_to_back_changes_do_not_wait_for_the_last_ones_grace_period(
    manual_grace_lb: Balancer,
) -> None:
    """With the previous ring held (second chance) a VIP still has two
    spare slots: a change writes the one freed two changes before, so it
    never waits for the grace period the change just before it started
    (a health checker pulling dead reals one by one)."""
    lb = manual_grace_lb
    grace = lb._slots.grace
    assert isinstance(grace, ManualGrace)
    waited_early: list[int] = []
    wait = grace.wait

    def recording_wait(ticket: int) -> None:
        if ticket > grace.passed_upto:
            waited_early.append(ticket)
        wait(ticket)

    grace.wait = recording_wait  # type: ignore[method-assign]
    lb.add_vip(VIP4)
    sets = [REALS4[:1], REALS4[:2], REALS4[2:], REALS4[1:3], REALS4]
    for reals in sets[:RINGS_PER_VIP]:  # every slot gets its map
        lb.set_reals(VIP4, reals)
    for i in range(8):
        grace.passed_upto = grace.issued - 1  # all but the last change's ticket passed
        reals = sets[(i + RINGS_PER_VIP) % len(sets)]
        lb.set_reals(VIP4, reals)
        assert waited_early == []
        for f in random_flows(50, VIP4, seed=20 + i):
            assert destination(lb, packet_for(f, "S")) == str(lb.predict(f))


def test_spare_slots_whose_maps_went_away_get_new_ones(manual_grace_lb: Balancer) -> None:
    """The Balancer keeps a mapping of each slot's ring map between
    changes; when the spare slots' maps are gone from `rings` (deleted
    behind its back), the next change makes a new map rather than
    writing into a map no packet can read, and every change after lands."""
    lb = manual_grace_lb
    grace = lb._slots.grace
    assert isinstance(grace, ManualGrace)
    lb.add_vip(VIP4)
    sets = [REALS4[:1], REALS4[:2], REALS4[2:], REALS4[1:3], REALS4]
    for i in range(3 * RINGS_PER_VIP):  # every slot made, then written again (mapped)
        grace.passed_upto = grace.issued if i >= RINGS_PER_VIP else 0
        lb.set_reals(VIP4, sets[i % len(sets)])
    maps = ring_slot_maps(lb)
    assert len(maps) == RINGS_PER_VIP
    rings = lb._vips[VIP4].rings
    spares = [s for s in maps if s != rings.live and not rings.held(s)]
    assert spares
    for slot in spares:
        lb.map("rings").delete(u32(ring_index(0, slot)))
    for i in range(2 * RINGS_PER_VIP):
        grace.passed_upto = grace.issued
        lb.set_reals(VIP4, sets[(i + 3 * RINGS_PER_VIP) % len(sets)])
        live = lb._vips[VIP4].rings.live
        assert live in ring_slot_maps(lb)
        if i == 0:
            assert ring_slot_maps(lb)[live] not in maps.values()  # a new map
        for f in random_flows(50, VIP4, seed=40 + i):
            assert destination(lb, packet_for(f, "S")) == str(lb.predict(f))


def test_a_change_reuses_a_slot_whose_grace_passed_before_making_a_new_one(
    manual_grace_lb: Balancer,
) -> None:
    """The other side of the slot choice: a spare slot whose ticket passed
    is written in place, and no third inner map is made. (Without second
    chance: with it, the slot that was live is held as the previous ring,
    see test_second_chance.py.)"""
    lb = manual_grace_lb
    lb.add_vip(VIP4, second_chance=0)
    lb.set_reals(VIP4, REALS4[:2])
    lb.set_reals(VIP4, REALS4[2:])
    grace = lb._slots.grace
    assert isinstance(grace, ManualGrace)
    grace.passed_upto = grace.issued  # the first slot's ticket passed
    lb.set_reals(VIP4, REALS4[1:3])
    assert len(ring_slot_maps(lb)) == 2
    for f in random_flows(100, VIP4, seed=9):
        assert destination(lb, packet_for(f, "S")) == str(lb.predict(f))


def test_failed_flip_leaves_the_data_plane_as_it_was(
    manual_grace_lb: Balancer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lb = manual_grace_lb  # no ticket passes on its own: the first changes fill every slot
    lb.add_vip(VIP4)
    for reals in (REALS4[:1], REALS4[:2], REALS4[2:], REALS4[1:3]):
        lb.set_reals(VIP4, reals)
    assert len(ring_slot_maps(lb)) == RINGS_PER_VIP
    flows = random_flows(200, VIP4, seed=5)
    owner = {f: destination(lb, packet_for(f, "S")) for f in flows}
    before = dump_maps(lb)

    def broken_flip(*args: object) -> None:
        raise BpfError("update of map vips", 12)

    monkeypatch.setattr(Balancer, "_write_vip_meta", broken_flip)
    with pytest.raises(BpfError):
        lb.set_reals(VIP4, [REALS4[0], Real("10.0.0.9", weight=5)])
    monkeypatch.undo()
    assert dump_maps(lb) == before
    assert lb.reals(VIP4) == REALS4[1:3]
    for f in flows:
        assert destination(lb, packet_for(f, "S")) == owner[f]
    lb.set_reals(VIP4, [REALS4[0], Real("10.0.0.9", weight=5)])  # and the next change works
    for f in flows[:50]:
        assert destination(lb, packet_for(f, "S")) == str(lb.predict(f))


@pytest.mark.parametrize("address", ["10.200.7.1", "192.0.2.77", "2001:db8:200::7", "fd00::1:2"])
def test_established_flows_keep_their_real_when_a_narrower_vip_appears(
    lb: Balancer, address: str
) -> None:
    """An established flow is found by its entry before any VIP (the fast
    path): adding an exact-port VIP over its any-port VIP does not break it,
    while new flows go to the new VIP. Only the fast path behaves so, which
    also shows that the data plane and `vip_filter_bit` agree on the address."""
    v6 = ":" in address
    any_port, exact = Vip(address, 0, "tcp"), Vip(address, 80, "tcp")
    old_reals = REALS6[:2] if v6 else REALS4[:2]
    new_real = Real("2001:db8:1::99" if v6 else "10.0.0.99")
    lb.add_vip(any_port)
    lb.set_reals(any_port, old_reals)
    flows = random_flows(100, exact, seed=31)
    owner = {f: destination(lb, packet_for(f, "S")) for f in flows}
    lb.add_vip(exact)
    lb.set_reals(exact, [new_real])
    for f in flows:
        assert destination(lb, packet_for(f, "A")) == owner[f]
        assert destination(lb, packet_for(f, "S")) == str(new_real.address)  # a new connection


def test_vip_flag_changes_reach_established_flows(lb: Balancer) -> None:
    """Reals carry their VIP's flags for the fast path: GUE and bypassing the
    connection table apply to established flows at once."""
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    flows = random_flows(100, VIP4, seed=32)
    owner = {f: destination(lb, packet_for(f, "S")) for f in flows}

    lb.set_vip_flags(VIP4, VipFlags.GUE)
    for f in flows:
        out = decode_encapsulated(lb.run(packet_for(f, "A")).packet)
        assert out.gue and str(out.outer_dst) == owner[f]

    lb.set_vip_flags(VIP4, VipFlags.NO_CONN_TABLE)
    lb.set_reals(VIP4, REALS4[:2])
    for f in flows:  # the ring decides, not the entry
        assert destination(lb, packet_for(f, "A")) == str(lb.predict(f))


def test_vip_filter_marks_addresses_of_connection_table_vips(lb: Balancer) -> None:
    def marked(address: str) -> bool:
        bit = vip_filter_bit(ip_address(address))
        raw = lb.map("vip_filter").lookup(u32(bit // 64))
        assert raw is not None
        return bool(int.from_bytes(raw, sys.byteorder) >> (bit % 64) & 1)

    lb.add_vip(VIP4)
    lb.add_vip(Vip(VIP4.address, 443, "tcp"))
    bypass = Vip("10.200.0.50", 80, "tcp")
    lb.add_vip(bypass, VipFlags.NO_CONN_TABLE)
    assert marked(str(VIP4.address)) and not marked(str(bypass.address))
    lb.remove_vip(VIP4)
    assert marked(str(VIP4.address))  # the 443 VIP still uses the table
    lb.set_vip_flags(Vip(VIP4.address, 443, "tcp"), VipFlags.NO_CONN_TABLE)
    assert not marked(str(VIP4.address))
    lb.set_vip_flags(bypass, VipFlags.NONE)
    assert marked(str(bypass.address))
    # A marked address with no VIP on the port: the lookup misses, the packet passes.
    flow = Flow("198.51.100.1", bypass.address, 40000, 22)
    assert lb.run(packet_for(flow, "A")).action == "XDP_PASS"


def test_grace_tickets_pass_in_order() -> None:
    grace = GracePeriods()
    try:
        tickets = [grace.ticket() for _ in range(3)]
        assert tickets == sorted(set(tickets))
        grace.wait(tickets[-1])
        assert all(grace.passed(t) for t in tickets)
        later = grace.ticket()
        assert later > tickets[-1]
        grace.wait(later)
        assert grace.passed(later)
    finally:
        grace.close()


def test_a_retired_real_id_is_reused_only_after_a_grace_period(
    lb: Balancer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every fresh id taken, a new real gets a retired id, and only
    once a grace period has passed since its retirement: a packet that read
    the old ring just before the flip never reaches the id's next owner."""
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    idle = Vip("10.200.0.2", 80, "tcp")
    lb.add_vip(idle)
    spare = MAX_REALS - len(REALS4)  # weight 0: ids, but no ring slots
    lb.set_reals(
        idle, [Real(f"10.{1 + i // 65536}.{i // 256 % 256}.{i % 256}", 0) for i in range(spare)]
    )
    with pytest.raises(CapacityError):
        lb.add_real(VIP4, Real("10.0.0.8"))
    grace = lb._slots.grace  # the tickets are the guarantee under test
    waited: list[tuple[int, bool]] = []
    wait = grace.wait

    def recorded_wait(ticket: int) -> None:
        wait(ticket)
        waited.append((ticket, grace.passed(ticket)))

    monkeypatch.setattr(grace, "wait", recorded_wait)
    lb.remove_real(VIP4, "10.0.0.4")
    retired_at = grace.ticket() - 1  # the ticket the retirement took
    lb.add_real(VIP4, Real("10.0.0.8"))
    assert waited and max(t for t, _ in waited) >= retired_at and all(ok for _, ok in waited)
    for f in random_flows(200, VIP4, seed=3):
        assert destination(lb, packet_for(f, "S")) == str(lb.predict(f))


def test_failed_change_leaves_the_maps_byte_identical(
    lb: Balancer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4[:3])
    for f in random_flows(50, VIP4):
        lb.run(packet_for(f))
    before = dump_maps(lb)

    def broken_swap(self: object, key: bytes, fd: int) -> None:
        raise BpfError("swap of inner map in rings", 12)

    monkeypatch.setattr(type(lb.map("rings")), "update_fd", broken_swap)
    with pytest.raises(BpfError):
        lb.set_reals(VIP4, [REALS4[0], Real("10.0.0.9", weight=5), Real("10.0.0.10")])
    monkeypatch.undo()
    assert dump_maps(lb) == before
    assert lb.reals(VIP4) == sorted(REALS4[:3], key=lambda r: r.address.packed)


def test_invalid_changes_are_refused_before_touching_maps(lb: Balancer) -> None:
    lb.add_vip(VIP6)
    before = dump_maps(lb)
    with pytest.raises(ConfigError, match=r"is IPv4 but VIP .* is IPv6"):
        lb.set_reals(VIP6, [Real("10.0.0.1")])
    with pytest.raises(ConfigError, match="given twice"):
        lb.set_reals(VIP6, [Real("2001:db8::1"), Real("2001:db8::1", weight=2)])
    with pytest.raises(ExistsError):
        lb.add_vip(VIP6)
    with pytest.raises(NotFoundError):
        lb.set_reals(VIP4, REALS4)
    with pytest.raises(ConfigError, match="ring size 65536"):
        lb.add_vip(VIP4, ring_size=65536)
    with pytest.raises(NotFoundError):
        lb.remove_real(VIP6, "2001:db8::7")
    assert dump_maps(lb) == before


def test_ring_smaller_than_reals_is_refused(lb: Balancer) -> None:
    lb.add_vip(VIP4, ring_size=7)
    with pytest.raises(CapacityError):
        lb.set_reals(VIP4, [Real(f"10.0.1.{i}") for i in range(1, 10)])


def test_remove_vip_passes_its_traffic(lb: Balancer) -> None:
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    lb.remove_vip(VIP4)
    assert lb.run(tcp_packet("198.51.100.1", VIP4.address)).action == "XDP_PASS"
    assert lb.vips() == []


def test_a_vip_added_after_a_removed_one_starts_with_no_ring(lb: Balancer) -> None:
    """The new VIP reuses the removed one's id: none of its old ring slots
    may leak into it, before or after it gets reals."""
    lb.add_vip(VIP4)
    for reals in (REALS4[:1], REALS4[:2], REALS4[2:], REALS4):  # maps in the ring slots
        lb.set_reals(VIP4, reals)
    lb.remove_vip(VIP4)
    assert ring_slot_maps(lb) == {}
    other = Vip("10.200.0.9", 443, "tcp")
    lb.add_vip(other)
    flow = Flow("198.51.100.1", other.address, 40000, 443)
    assert lb.run(packet_for(flow)).action == "XDP_DROP"  # no reals, no ring
    lb.set_reals(other, [Real("10.0.0.77")])
    assert destination(lb, packet_for(flow)) == "10.0.0.77"


def no_any_port_flag(lb: Balancer) -> bool:
    from xlb._abi import config_no_any_port_vip, u32

    raw = lb.map("config").lookup(u32(0))
    assert raw is not None
    return config_no_any_port_vip(raw)


def test_no_any_port_flag_follows_the_vips(lb: Balancer) -> None:
    """XLB_CFG_F_NO_ANY_PORT_VIP lets traffic to no VIP skip the port-0
    lookup: set while no VIP has port 0, cleared while one does."""
    any_port = Vip(VIP4.address, 0, "tcp")
    to_443 = tcp_packet("198.51.100.1", VIP4.address, 40000, 443, flags="S")
    assert no_any_port_flag(lb)
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    assert no_any_port_flag(lb)
    assert lb.run(to_443).action == "XDP_PASS"

    lb.add_vip(any_port)
    lb.set_reals(any_port, REALS4)
    assert not no_any_port_flag(lb)
    assert lb.run(to_443).action == "XDP_TX"
    lb.configure(BalancerConfig(gateway_mac=GATEWAY_MAC, mtu=9000))  # keeps the flag true
    assert not no_any_port_flag(lb)
    assert lb.run(to_443).action == "XDP_TX"

    lb.remove_vip(any_port)
    assert no_any_port_flag(lb)
    assert lb.run(to_443).action == "XDP_PASS"
    lb.configure(BalancerConfig(gateway_mac=GATEWAY_MAC))
    assert no_any_port_flag(lb)


def test_data_plane_skips_port_0_only_when_told(lb: Balancer) -> None:
    """The flag is what the data plane trusts: forced on beside an any-port
    VIP, that VIP goes unseen (so a control plane must never do that)."""
    from xlb._abi import config_value, u32

    any_port = Vip(VIP4.address, 0, "tcp")
    lb.add_vip(any_port)
    lb.set_reals(any_port, REALS4)
    to_443 = tcp_packet("198.51.100.1", VIP4.address, 40000, 443, flags="S")
    assert lb.run(to_443).action == "XDP_TX"
    lb.map("config").update(u32(0), config_value(lb.config, no_any_port_vip=True))
    assert lb.run(to_443).action == "XDP_PASS"


def test_adoption_sets_the_flag_an_older_control_plane_left_clear(pin_dir: Path) -> None:
    from xlb._abi import config_value, u32

    first = Balancer(pin_dir=pin_dir, config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    first.add_vip(VIP4)
    first.map("config").update(u32(0), config_value(first.config))  # flag clear
    first.close()
    second = Balancer(pin_dir=pin_dir)
    try:
        assert no_any_port_flag(second)
        assert second.config == BalancerConfig(gateway_mac=GATEWAY_MAC)
    finally:
        second.close(detach=True)


def test_adopt_after_restart_keeps_every_connection(pin_dir: Path) -> None:
    config = BalancerConfig(gateway_mac=GATEWAY_MAC)
    first = Balancer(pin_dir=pin_dir, config=config)
    first.add_vip(VIP4)
    first.set_reals(VIP4, REALS4)
    flows = random_flows(300, VIP4, seed=11)
    owner = {f: destination(first, packet_for(f, "S")) for f in flows}
    conn_before = sorted(first.map("conn_v4").items())
    first.close()

    second = Balancer(pin_dir=pin_dir)
    try:
        assert second.vips() == [VIP4]
        assert second.reals(VIP4) == REALS4
        assert second.config == config
        assert sorted(second.map("conn_v4").items()) == conn_before
        second.set_reals(VIP4, [*REALS4, Real("10.0.0.99")])  # reshuffles the ring...
        for f in flows:  # ...yet established flows keep their real
            assert destination(second, packet_for(f, "A")) == owner[f]
    finally:
        second.close(detach=True)


def test_adopting_the_same_build_loads_no_program(pin_dir: Path) -> None:
    """A process adopting a data plane of its own build (every CLI call)
    takes the pinned program instead of loading one through the verifier;
    the program it runs and the maps it programs are the data plane's."""
    first = Balancer(pin_dir=pin_dir, config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    first_id = first.program.info()["id"]
    first.close()
    second = Balancer(pin_dir=pin_dir)
    try:
        assert second.program.info()["id"] == first_id
        second.add_vip(VIP4)
        second.set_reals(VIP4, REALS4)
        flow = random_flows(1, VIP4, seed=5)[0]
        assert destination(second, packet_for(flow, "S")) == str(second.predict(flow))
        assert second.counters()["xdp_tx"] == 1
    finally:
        second.close(detach=True)


def test_a_replaced_map_pin_makes_adoption_load_the_program(pin_dir: Path) -> None:
    """The pinned program uses the maps pinned when it was loaded: if one
    was replaced since, adopting loads the program anew over the maps pinned
    now, so the program and the control plane share every map."""
    first = Balancer(pin_dir=pin_dir, config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    first_id = first.program.info()["id"]
    stats = first.map("stats")
    replacement = Map.create(
        stats.type, "stats", stats.key_size, stats.value_size, stats.max_entries, stats.flags
    )
    first.close()
    (pin_dir / "stats").unlink()
    replacement.pin(pin_dir / "stats")
    replacement.close()
    second = Balancer(pin_dir=pin_dir)
    try:
        assert second.program.info()["id"] != first_id
        second.add_vip(VIP4)
        second.set_reals(VIP4, REALS4)
        second.run(packet_for(random_flows(1, VIP4, seed=6)[0], "S"))
        assert second.counters()["xdp_tx"] == 1
    finally:
        second.close(detach=True)


def test_pins_of_an_incompatible_build_are_a_clear_error(pin_dir: Path, tmp_path: Path) -> None:
    import build  # the repository root's build.py

    other_build = tmp_path / "xlb.bpf.o"
    build.compile_bpf(
        Path(build.BPF_SRC) / "xlb.bpf.c", other_build, defines={"XLB_MAX_VIPS": 1024}
    )
    BpfObject(other_build, pin_dir=pin_dir, only=[PROGRAM_NAME], sizes=stats_sizes()).close()
    with pytest.raises(BpfError, match=r"the map pinned at .*/vips has another definition"):
        Balancer(pin_dir=pin_dir)


def test_upgrade_keeps_flows(pin_dir: Path, tmp_path: Path) -> None:
    lb = Balancer(pin_dir=pin_dir, config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    try:
        lb.add_vip(VIP4)
        lb.set_reals(VIP4, REALS4)
        flows = random_flows(200, VIP4, seed=12)
        owner = {f: destination(lb, packet_for(f, "S")) for f in flows}
        old_id = lb.program.info()["id"]
        new_build = tmp_path / "xlb.bpf.o"
        new_build.write_bytes(BALANCER_OBJECT.read_bytes())
        lb.set_reals(VIP4, [*REALS4[:3], Real("10.0.0.50")])
        lb.upgrade(new_build)
        assert lb.program.info()["id"] != old_id
        for f in flows:
            if owner[f] != "10.0.0.4":
                assert destination(lb, packet_for(f, "A")) == owner[f]
    finally:
        lb.close(detach=True)


def filter_bit_set(lb: Balancer, address: str) -> bool:
    bit = vip_filter_bit(ip_address(address))
    raw = lb.map("vip_filter").lookup(u32(bit // 64))
    assert raw is not None
    return bool(int.from_bytes(raw, sys.byteorder) >> (bit % 64) & 1)


def test_vip_changes_after_an_upgrade_reach_the_new_program(pin_dir: Path, tmp_path: Path) -> None:
    """After upgrade() the handle writes the maps the new program reads: a
    VIP added then is in vip_filter (so its established flows take the fast
    path) and leaves it when removed."""
    lb = Balancer(pin_dir=pin_dir, config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    try:
        new_build = tmp_path / "xlb.bpf.o"
        new_build.write_bytes(BALANCER_OBJECT.read_bytes())
        lb.upgrade(new_build)
        vip = Vip("10.77.0.9", 80, "tcp")
        lb.add_vip(vip)
        lb.set_reals(vip, REALS4)
        assert filter_bit_set(lb, "10.77.0.9")
        for f in random_flows(50, vip, seed=4):
            assert destination(lb, packet_for(f, "S")) == str(lb.predict(f))
        lb.remove_vip(vip)
        assert not filter_bit_set(lb, "10.77.0.9")
    finally:
        lb.close(detach=True)


def test_stats_and_counters_count_what_was_forwarded(lb: Balancer) -> None:
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    packets = [packet_for(f) for f in random_flows(100, VIP4)]
    for p in packets:
        lb.run(p)
    lb.run(tcp_packet("198.51.100.1", "10.9.9.9"))  # not a VIP
    stats = lb.stats(VIP4)
    assert stats.packets == 100
    assert stats.bytes == sum(len(p) for p in packets)
    assert sum(c.packets for c in lb.real_stats(VIP4).values()) == 100
    counters = lb.counters()
    assert counters["xdp_tx"] == 100
    assert counters["forward"] == 100
    assert counters["pass_not_vip"] == 1
    assert counters["xdp_pass"] == 1


def tx_in_row(lb: Balancer, cpu: int) -> int:
    """XDP_TX as counted in `cpu`'s row of `stats` alone."""
    row = lb.map("stats").lookup(u32(cpu))
    assert row is not None
    index = {name: i for i, name in counter_names().items()}["xdp_tx"]
    offset = ffi.offsetof("struct xlb_cpu_row", "counters") + 8 * index
    return int.from_bytes(row[offset : offset + 8], sys.byteorder)


def test_each_cpu_counts_in_its_own_row_and_reads_sum_the_rows(lb: Balancer) -> None:
    """A packet counts in the row of the CPU it ran on (1 on CPU 0, 2 on
    CPU 1), and every read (counters, the VIP's and its real's traffic)
    is the sum of the rows; an established flow's packets count as hits."""
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    flow = random_flows(1, VIP4, seed=8)[0]
    syn, ack = packet_for(flow, "S"), packet_for(flow, "A")
    for cpu, packet in ((0, syn), (1, ack), (1, ack)):
        with pinned(cpu):
            assert lb.run(packet).action == "XDP_TX"
    assert (tx_in_row(lb, 0), tx_in_row(lb, 1)) == (1, 2)
    counters = lb.counters()
    assert (counters["xdp_tx"], counters["conn_hit"], counters["conn_miss"]) == (3, 2, 1)
    vip, real = lb.stats(VIP4), lb.real_stats(VIP4)[ip_address(str(lb.predict(flow)))]
    traffic = (3, len(syn) + 2 * len(ack))
    assert (vip.packets, vip.bytes) == (real.packets, real.bytes) == traffic


def age_connection_table(lb: Balancer, seconds: float) -> int:
    """Make every connection-table entry look idle for `seconds` (returns how many)."""
    from xlb._abi import struct_from, to_bytes

    now_ns = time.monotonic_ns()  # the conn table's clock (CLOCK_MONOTONIC)
    aged = 0
    for name in ("conn_v4", "conn_v6"):
        table = lb.map(name)
        for key, value in list(table.items()):
            conn = struct_from("struct xlb_conn", value)
            conn.atime_ns = max(0, now_ns - int(seconds * 1e9))
            table.update(key, to_bytes(conn))
            aged += 1
    # as that much time would have: no flow-cache copy of them is good
    forget_cached_flows({FLOW_CACHE_EPOCHS: lb.map(FLOW_CACHE_EPOCHS)})
    return aged


def test_idle_tcp_keeps_its_real_idle_udp_reselects(lb: Balancer) -> None:
    """No timer on TCP entries: the pooled connection idle for hours that IPVS
    would have expired keeps its real, even after the ring changed."""
    udp_vip = Vip("10.200.0.1", 53, "udp")
    lb.configure(BalancerConfig(gateway_mac=GATEWAY_MAC, udp_ttl_s=30))
    for vip in (VIP4, udp_vip):
        lb.add_vip(vip)
        lb.set_reals(vip, REALS4)
    tcp_flows = random_flows(200, VIP4, seed=21)
    udp_flows = random_flows(200, udp_vip, seed=22)
    tcp_owner = {f: destination(lb, packet_for(f, "S")) for f in tcp_flows}
    udp_owner = {f: destination(lb, packet_for(f)) for f in udp_flows}
    assert age_connection_table(lb, 8 * 3600) == 400

    new_reals = [Real("10.0.0.1", weight=4), *REALS4[1:], Real("10.0.0.5", weight=4)]
    for vip in (VIP4, udp_vip):
        lb.set_reals(vip, new_reals)
    for f in tcp_flows:
        assert destination(lb, packet_for(f, "A")) == tcp_owner[f]
    moved = 0
    for f in udp_flows:
        now = destination(lb, packet_for(f))
        assert now == str(lb.predict(f))  # expired: the new ring decides
        moved += now != udp_owner[f]
    assert moved > 0
    assert lb.counters()["conn_expired"] == len(udp_flows)


def test_two_nodes_with_the_same_config_agree_on_every_flow() -> None:
    """ECMP: a flow may land on any balancer node. Nodes that reached the
    same configuration by different histories (order of reals, adds,
    removals, reweights, restarts) must send every new flow to the same
    real, so losing a node moves no connection."""
    config = BalancerConfig(gateway_mac=GATEWAY_MAC)
    final = [Real("10.0.0.1"), Real("10.0.0.2", weight=2), Real("10.0.0.3"), Real("10.0.0.4")]
    node_a, node_b = Balancer(config=config), Balancer(config=config)
    try:
        node_a.add_vip(VIP4)
        node_a.set_reals(VIP4, final)

        node_b.add_vip(VIP4)
        node_b.set_reals(VIP4, [Real("10.0.0.9"), *reversed(final[2:])])
        node_b.add_real(VIP4, Real("10.0.0.2", weight=7))
        node_b.add_real(VIP4, Real("10.0.0.1"))
        node_b.remove_real(VIP4, "10.0.0.9")
        node_b.set_weight(VIP4, "10.0.0.2", 2)

        for flow in random_flows(2000, VIP4, seed=31):
            packet = packet_for(flow, "S")
            assert destination(node_a, packet) == destination(node_b, packet)
    finally:
        node_a.close()
        node_b.close()


def test_setting_the_same_reals_again_swaps_no_ring(lb: Balancer) -> None:
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    ring_before = lb.map("rings").lookup(bytes(4))
    swaps = lb.ring_swaps
    lb.set_reals(VIP4, list(reversed(REALS4)))
    assert lb.ring_swaps == swaps
    assert lb.map("rings").lookup(bytes(4)) == ring_before  # the same inner map
    lb.set_weight(VIP4, "10.0.0.1", 2)
    assert lb.ring_swaps == swaps + 1


def test_clear_flows_empties_the_table_and_flows_follow_the_ring(lb: Balancer) -> None:
    lb.add_vip(VIP4)
    lb.set_reals(VIP4, REALS4)
    flows = random_flows(100, VIP4, seed=41)
    owner = {f: destination(lb, packet_for(f, "S")) for f in flows}
    assert lb.clear_flows() == 100
    assert list(lb.flows()) == []
    for f in flows:  # unchanged ring: the same real, now as a miss
        assert destination(lb, packet_for(f, "A")) == owner[f]
    assert lb.counters()["conn_miss"] == 200
