"""Second chance at the balancer (bpf/prev_ring.h, bpf/carrier_encap.h).

After a VIP's ring changes, a TCP packet that is not a SYN and that the
ring (not the connection table) sends to another real than the previous
ring would have carries that previous real's address: an IPv4 option
(IPIP), a destination-options header (IPv6 outer) or a GUE header's
private data. Every expected packet is built from the layout in
xlb_abi.h (pkt_defs.carrier_bytes), never from the program's output.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pkt_defs import (
    CLIENT4,
    CLIENT6,
    CONFIG,
    VIP4,
    VIP6,
    assert_packet,
    encapsulated,
    frag_needed,
    frame,
    packet_too_big,
    reset,
    tcp4,
    tcp6,
    udp4,
)
from scapy.packet import Packet

from xlb import Balancer, Flow, Real, Vip, VipFlags, _abi
from xlb import config as cfg
from xlb.config import Config
from xlb.errors import ConfigError
from xlb.model import IPAddress
from xlb.service import _apply_plan, _Plan

RING = 13  # small and prime: adding a third real moves about a third of the slots
SPORTS = range(41000, 41200)
VIP4_UDP = Vip("192.0.2.20", 53, "udp")

V4 = [Real("10.0.0.1"), Real("10.0.0.2")]
V4_NEW = Real("10.0.0.3")
V6 = [Real("fd00::1"), Real("fd00::2")]
V6_NEW = Real("fd00::3")


@dataclass(frozen=True)
class Case:
    id: str
    vip: Vip
    reals: list[Real]
    new: Real
    flags: VipFlags = VipFlags.NONE

    def packet(self, sport: int, flags: str = "A") -> Packet:
        if self.vip.family == 4:
            return tcp4(self.vip, sport=sport, flags=flags)
        return tcp6(self.vip, sport=sport, flags=flags)

    def flow(self, sport: int) -> Flow:
        client = CLIENT4 if self.vip.family == 4 else CLIENT6
        return Flow(client, self.vip.address, sport, self.vip.port, self.vip.proto)


CASES = [
    Case("ipip_option", VIP4, V4, V4_NEW),
    Case("ip6ip6_dest_opts", VIP6, V6, V6_NEW),
    Case("4in6_dest_opts", VIP4, V6, V6_NEW),
    Case("gue_v4", VIP4, V4, V4_NEW, VipFlags.GUE),
    Case("gue_v6", VIP6, V6, V6_NEW, VipFlags.GUE),
    Case("gue_4in6", VIP4, V6, V6_NEW, VipFlags.GUE),
]
IPIP = CASES[0]


@pytest.fixture(scope="module")
def sc_balancer() -> Iterator[Balancer]:
    balancer = Balancer(config=CONFIG)
    yield balancer
    balancer.close()


@pytest.fixture
def lb(sc_balancer: Balancer) -> Balancer:
    reset(sc_balancer)
    return sc_balancer


@dataclass
class Change:
    """Flows of a VIP before and after one ring change."""

    before: dict[Flow, IPAddress | None]
    moved: list[Flow] = field(default_factory=list)
    kept: list[Flow] = field(default_factory=list)


def change_ring(lb: Balancer, case: Case, change: Callable[[], None]) -> Change:
    flows = [case.flow(sport) for sport in SPORTS]
    seen = Change({f: lb.predict(f) for f in flows})
    change()
    for f in flows:
        (seen.moved if lb.predict(f) != seen.before[f] else seen.kept).append(f)
    assert seen.moved and seen.kept, "the change moved no flow, or every flow: another ring"
    return seen


def program(lb: Balancer, case: Case, **vip: object) -> Change:
    """The case's VIP with its reals, then one real added."""
    lb.add_vip(case.vip, case.flags, ring_size=RING, **vip)  # type: ignore[arg-type]
    lb.set_reals(case.vip, case.reals)
    return change_ring(lb, case, lambda: lb.add_real(case.vip, case.new))


def real_of(lb: Balancer, flow: Flow) -> Real:
    address = lb.predict(flow)
    assert address is not None
    return Real(address)


def recorded(lb: Balancer, flow: Flow) -> IPAddress | bool | None:
    """The real the connection table holds for `flow`; False: no entry."""
    for sampled, real in lb.flows(limit=100_000):
        if sampled == flow:
            return real
    return False


def counter_delta(lb: Balancer, before: dict[str, int]) -> dict[str, int]:
    after = lb.counters()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_carrier_is_there_iff_the_rings_differ(lb: Balancer, case: Case) -> None:
    seen = program(lb, case)
    before = lb.counters()
    for flow in seen.moved[:3] + seen.kept[:3]:
        moved = flow in seen.moved
        alternate = seen.before[flow] if moved else None
        assert lb.alternate(flow) == alternate
        packet = case.packet(flow.sport)
        out = lb.run(frame(packet))
        assert out.action == "XDP_TX"
        want = encapsulated(
            packet,
            real_of(lb, flow),
            flags=case.flags,
            alternate=None if alternate is None else str(alternate),
        )
        assert_packet(out.packet, want, f"{'moved' if moved else 'kept'} flow {flow}")
        # a moved flow may be the alternate's: an entry would send its next
        # packets without one; a kept flow is recorded as always
        assert recorded(lb, flow) == (False if moved else lb.predict(flow))
    delta = counter_delta(lb, before)
    assert delta["sc_carried"] == 3
    assert "sc_other_family" not in delta


def test_a_syn_never_carries_one_and_starts_where_the_ring_says(lb: Balancer) -> None:
    seen = program(lb, IPIP)
    flow = seen.moved[0]
    syn = IPIP.packet(flow.sport, "S")
    assert_packet(lb.run(frame(syn)).packet, encapsulated(syn, real_of(lb, flow)))
    assert recorded(lb, flow) == lb.predict(flow)
    ack = IPIP.packet(flow.sport)
    assert_packet(lb.run(frame(ack)).packet, encapsulated(ack, real_of(lb, flow)), "next ACK")


def test_a_flow_in_the_connection_table_keeps_its_real_without_a_carrier(lb: Balancer) -> None:
    case = IPIP
    lb.add_vip(case.vip, ring_size=RING)
    lb.set_reals(case.vip, case.reals)
    flows = [case.flow(sport) for sport in SPORTS]
    for flow in flows:  # every flow established before the change
        assert lb.run(frame(case.packet(flow.sport))).action == "XDP_TX"
    seen = change_ring(lb, case, lambda: lb.add_real(case.vip, case.new))
    flow = seen.moved[0]
    packet = case.packet(flow.sport)
    want = encapsulated(packet, Real(str(seen.before[flow])))
    assert_packet(lb.run(frame(packet)).packet, want, "a connection-table hit")


def test_udp_carries_nothing(lb: Balancer) -> None:
    lb.add_vip(VIP4_UDP, ring_size=RING)
    lb.set_reals(VIP4_UDP, V4)
    udp_case = Case("udp", VIP4_UDP, V4, V4_NEW)
    seen = change_ring(lb, udp_case, lambda: lb.add_real(VIP4_UDP, V4_NEW))
    flow = seen.moved[0]
    packet = udp4(VIP4_UDP, sport=flow.sport)
    assert lb.alternate(flow) is None
    assert_packet(lb.run(frame(packet)).packet, encapsulated(packet, real_of(lb, flow)))


def test_window_zero_carries_nothing(lb: Balancer) -> None:
    seen = program(lb, IPIP, second_chance=0)
    assert lb.second_chance(IPIP.vip) == 0
    flow = seen.moved[0]
    packet = IPIP.packet(flow.sport)
    assert lb.alternate(flow) is None
    assert_packet(lb.run(frame(packet)).packet, encapsulated(packet, real_of(lb, flow)))
    assert recorded(lb, flow) == lb.predict(flow)


def run_until(lb: Balancer, packet: bytes, want: bytes, deadline_s: float = 5.0) -> None:
    """Run `packet` until the output is `want` (the data plane's clock is a
    tick behind the control plane's)."""
    deadline = time.monotonic() + deadline_s
    while (out := lb.run(packet).packet) != want and time.monotonic() < deadline:
        time.sleep(0.001)
    assert_packet(out, want, f"within {deadline_s} s")


def test_the_window_closes(lb: Balancer) -> None:
    seen = program(lb, IPIP, second_chance=3600)
    flow = seen.moved[0]
    packet = IPIP.packet(flow.sport)
    alternate = str(seen.before[flow])
    want = encapsulated(packet, real_of(lb, flow), alternate=alternate)
    assert_packet(lb.run(frame(packet)).packet, want, "inside the window")
    lb.set_second_chance(IPIP.vip, 0.001)  # measured from the change: over
    assert lb.alternate(flow) is None
    run_until(lb, frame(packet), encapsulated(packet, real_of(lb, flow)))
    assert lb.second_chance(IPIP.vip) == 0.001


def test_set_second_chance_to_zero_ends_the_transition_at_once(lb: Balancer) -> None:
    seen = program(lb, IPIP)
    flow = seen.moved[0]
    packet = IPIP.packet(flow.sport)
    lb.set_second_chance(IPIP.vip, 0)
    assert_packet(lb.run(frame(packet)).packet, encapsulated(packet, real_of(lb, flow)))
    lb.set_second_chance(IPIP.vip, math.inf)  # no transition to reopen
    assert lb.alternate(flow) is None


def test_a_flag_that_changes_the_hash_ends_the_transition(lb: Balancer) -> None:
    """no_sport / dport_only move every flow to another slot: the previous
    ring's slots no longer name the flows' reals."""
    seen = program(lb, IPIP)
    assert lb.departed_alternates(IPIP.vip) == []
    lb.set_vip_flags(IPIP.vip, VipFlags.GUE)  # the hash stays: so does the previous ring
    assert lb.alternate(seen.moved[0]) == seen.before[seen.moved[0]]
    lb.set_vip_flags(IPIP.vip, VipFlags.NO_SPORT)
    for flow in seen.moved:
        assert lb.alternate(flow) is None
    packet = IPIP.packet(seen.moved[0].sport)
    out = lb.run(frame(packet)).packet
    want = encapsulated(packet, real_of(lb, seen.moved[0]), flags=VipFlags.NO_SPORT)
    assert_packet(out, want)


def test_a_removed_real_is_carried_until_dropped_as_dead(lb: Balancer) -> None:
    case = Case("remove", VIP4, [*V4, V4_NEW], V4_NEW)
    lb.add_vip(case.vip, ring_size=RING)
    lb.set_reals(case.vip, case.reals)
    seen = change_ring(lb, case, lambda: lb.remove_real(case.vip, V4_NEW.address))
    flow = next(f for f in seen.moved if seen.before[f] == V4_NEW.address)
    packet = case.packet(flow.sport)
    carried = encapsulated(packet, real_of(lb, flow), alternate=str(V4_NEW.address))
    assert_packet(lb.run(frame(packet)).packet, carried, "a removed real")
    assert lb.drop_alternate(case.vip, V4_NEW.address) is True
    assert lb.drop_alternate(case.vip, V4_NEW.address) is False
    assert lb.alternate(flow) is None
    assert_packet(lb.run(frame(packet)).packet, encapsulated(packet, real_of(lb, flow)))


def test_only_one_previous_ring(lb: Balancer) -> None:
    """A second change replaces the previous ring by the ring just before it."""
    seen = program(lb, IPIP)
    fourth = Real("10.0.0.4")
    second = change_ring(lb, IPIP, lambda: lb.add_real(IPIP.vip, fourth))
    for flow in second.moved[:3]:
        packet = IPIP.packet(flow.sport)
        alternate = str(second.before[flow])
        want = encapsulated(packet, real_of(lb, flow), alternate=alternate)
        assert_packet(lb.run(frame(packet)).packet, want, "moved by the second change")
    # moved by the first change only: the second one's previous ring agrees
    only_first = [f for f in seen.moved if f in second.kept]
    assert only_first
    packet = IPIP.packet(only_first[0].sport)
    assert_packet(lb.run(frame(packet)).packet, encapsulated(packet, real_of(lb, only_first[0])))


def test_a_change_that_keeps_the_ring_keeps_the_previous_ring(lb: Balancer) -> None:
    seen = program(lb, IPIP)
    flow = seen.moved[0]
    lb.add_real(IPIP.vip, Real("10.0.0.9", weight=0))  # in the VIP, not in the ring
    assert lb.alternate(flow) == seen.before[flow]
    packet = IPIP.packet(flow.sport)
    want = encapsulated(packet, real_of(lb, flow), alternate=str(seen.before[flow]))
    assert_packet(lb.run(frame(packet)).packet, want)


def test_an_alternate_of_another_family_is_not_carried(lb: Balancer) -> None:
    case = Case("mixed", VIP4, V4, V6_NEW)
    seen = program(lb, case)
    flow = next(f for f in seen.moved if lb.predict(f) == V6_NEW.address)
    packet = case.packet(flow.sport)
    before = lb.counters()
    assert lb.alternate(flow) is None
    assert_packet(lb.run(frame(packet)).packet, encapsulated(packet, V6_NEW))
    assert counter_delta(lb, before).get("sc_other_family") == 1
    assert recorded(lb, flow) == V6_NEW.address


def test_the_carrier_counts_against_the_mtu(lb: Balancer) -> None:
    """1500-byte outer packets: a packet that fits bare does not with the
    carrier (IPv6: 24 bytes, IPv4: 8) and is answered with a packet-too-big
    (IPv6) / fragmentation-needed (IPv4, DF) for what fits."""
    for case, room in ((CASES[1], 40 + 24), (IPIP, 20 + 8)):
        reset(lb)
        seen = program(lb, case)
        build, answer = (tcp6, packet_too_big) if case.vip.family == 6 else (tcp4, frag_needed)
        payload = b"x" * (1500 - room + 1 - (60 if case.vip.family == 6 else 40))
        kept = build(case.vip, sport=seen.kept[0].sport, payload=payload)
        assert lb.run(frame(kept)).action == "XDP_TX", "fits without a carrier"
        moved = build(case.vip, sport=seen.moved[0].sport, payload=payload)
        assert_packet(lb.run(frame(moved)).packet, answer(moved, 1500 - room), case.id)


def test_a_stateless_vip_records_nothing_and_carries(lb: Balancer) -> None:
    """no_conn_table: a SYN is not inserted (a flood evicts nothing), and
    second chance keeps its connections across a ring change."""
    case = Case("stateless", VIP4, V4, V4_NEW, VipFlags.NO_CONN_TABLE)
    lb.add_vip(case.vip, case.flags, ring_size=RING)
    lb.set_reals(case.vip, case.reals)
    for sport in SPORTS:
        assert lb.run(frame(case.packet(sport, "S"))).action == "XDP_TX"
    assert list(lb.flows()) == []
    seen = change_ring(lb, case, lambda: lb.add_real(case.vip, case.new))
    flow = seen.moved[0]
    packet = case.packet(flow.sport)
    want = encapsulated(packet, real_of(lb, flow), alternate=str(seen.before[flow]))
    assert_packet(lb.run(frame(packet)).packet, want)
    assert list(lb.flows()) == []


def test_a_restarted_control_plane_adopts_the_transition(pin_dir: Path) -> None:
    first = Balancer(pin_dir=pin_dir, config=CONFIG)
    try:
        seen = program(first, IPIP, second_chance=600)
    finally:
        first.close(detach=False)
    with Balancer(pin_dir=pin_dir) as again:
        try:
            assert again.second_chance(IPIP.vip) == 600
            flow = seen.moved[0]
            assert again.alternate(flow) == seen.before[flow]
            packet = IPIP.packet(flow.sport)
            want = encapsulated(packet, real_of(again, flow), alternate=str(seen.before[flow]))
            assert_packet(again.run(frame(packet)).packet, want, "after adoption")
            # the adopted state takes the next change as any other
            ring_before = again.predict(flow)
            again.remove_real(IPIP.vip, IPIP.new.address)
            moved_back = again.predict(flow) != ring_before
            assert again.alternate(flow) == (ring_before if moved_back else None)
        finally:
            again.close(detach=True)


@pytest.mark.parametrize("bad", [-1, "1h", True, math.nan, 1e-6, 31 * 86400])
def test_a_bad_window_is_refused_before_anything_changes(lb: Balancer, bad: object) -> None:
    with pytest.raises(ConfigError, match="second_chance"):
        lb.add_vip(VIP4, second_chance=bad)  # type: ignore[arg-type]
    assert lb.vips() == []
    lb.add_vip(VIP4)
    with pytest.raises(ConfigError, match="second_chance"):
        lb.set_second_chance(VIP4, bad)  # type: ignore[arg-type]
    assert lb.second_chance(VIP4) == 3600.0


class PassedGrace:
    """Grace tickets that have always passed: every slot not live is free
    as far as grace goes, so only holding keeps the previous ring's."""

    def ticket(self) -> int:
        return 1

    def passed(self, ticket: int) -> bool:
        return True

    def wait(self, ticket: int) -> None:
        pass

    def close(self) -> None:
        pass


def slots_of(lb: Balancer, vip: Vip) -> tuple[int, int, int, int]:
    """(vip_id, ring_size, live slot, previous ring's slot) from the maps."""
    meta = lb.map("vips").lookup(_abi.vip_key(vip))
    assert meta is not None
    vip_id, _, size, live = _abi.parse_vip_meta(meta)
    entry = lb.map("prev_rings").lookup(_abi.u32(vip_id))
    assert entry is not None
    prev, _, _ = _abi.parse_prev_ring(entry)
    return vip_id, size, live, prev


def test_the_previous_ring_slot_is_never_written_while_held() -> None:
    """Every grace ticket has passed, so only holding keeps a change from
    writing its new ring into the slot packets still read as the previous
    ring (until the change points the entry at the live one): each change
    takes a spare slot, and the held slot holds the ring before it."""
    with Balancer(config=CONFIG, grace_periods=PassedGrace()) as lb:
        lb.add_vip(VIP4, ring_size=RING)
        sets = [V4, [*V4, V4_NEW], [V4[0], V4_NEW], [V4[1], V4_NEW], V4]
        lb.set_reals(VIP4, sets[0])
        for reals in sets[1:]:
            ring_before = lb.ring(VIP4)
            _, _, live_before, prev_before = slots_of(lb, VIP4)
            lb.set_reals(VIP4, reals)
            vip_id, size, live, prev = slots_of(lb, VIP4)
            assert live not in (live_before, prev_before) and prev == live_before
            held = lb._slots.read(vip_id, prev, size)
            assert held is not None
            state = lb._vips[VIP4]
            assert state.transition is not None
            owners = {m.real_id: a for a, m in state.members.items()}
            owners.update(state.transition.departed)
            assert [owners.get(int(i)) for i in held] == ring_before


def daemon_config(reals: list[Real], on_failure: str) -> Config:
    lines = [
        "[balancer]",
        f'gateway_mac = "{CONFIG.gateway_mac}"',
        f"hash_seed = {CONFIG.hash_seed}",
        "[[vip]]",
        f'address = "{VIP4.address}"',
        f"port = {VIP4.port}",
        f"ring_size = {RING}",
        f'on_failure = "{on_failure}"',
    ]
    for real in reals:
        lines += ["[[vip.reals]]", f'address = "{real.address}"']
    return cfg.loads("\n".join(lines))


@pytest.mark.parametrize("on_failure", ["remove", "drain"])
def test_the_daemon_hands_nothing_to_a_real_health_took_out(lb: Balancer, on_failure: str) -> None:
    """In one apply, the file drops a real (it may still serve its
    connections: carried) and health finds another down: with on_failure =
    "remove" it leaves the VIP and is no alternate (its connections are
    reset by their new real at once, not black-holed); with "drain" it stays
    in the VIP at weight 0, still serving, and is carried."""
    everyone = [*V4, V4_NEW]
    dead, dropped = V4[1].address, V4_NEW.address
    applied = _apply_plan(lb, _Plan(daemon_config(everyone, on_failure), frozenset()))
    assert applied.failures == []
    flows = [IPIP.flow(sport) for sport in SPORTS]
    before = {f: lb.predict(f) for f in flows}
    down = frozenset({(VIP4, dead)})
    applied = _apply_plan(lb, _Plan(daemon_config(V4, on_failure), down))
    assert applied.failures == []
    assert lb.departed_alternates(VIP4) == [dropped]  # a drained real has not left
    on_dead = [f for f in flows if before[f] == dead]
    on_dropped = [f for f in flows if before[f] == dropped]
    assert on_dead and on_dropped
    assert all(lb.alternate(f) == dropped for f in on_dropped)
    carried_dead = dead if on_failure == "drain" else None
    assert all(lb.alternate(f) == carried_dead for f in on_dead)
    flow = on_dead[0]
    packet = IPIP.packet(flow.sport)
    alternate = None if carried_dead is None else str(carried_dead)
    want = encapsulated(packet, real_of(lb, flow), alternate=alternate)
    assert_packet(lb.run(frame(packet)).packet, want, f"on_failure={on_failure}")
