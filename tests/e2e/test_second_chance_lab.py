"""End to end: held TCP connections survive a ring change on a balancer that
never saw them (second chance, docs/ecmp.md).

A routed lab (reals behind the router, decap at native XDP; and a flat one,
decap at tc): 40 kept-alive connections per case, then a ring change (a
real added, removed or reweighted), then the balancer's connection table
emptied: the balancer is now one that never saw the connections. Every
moved connection reaches the real the new ring names, which has no socket
for it and hands it on to the real the previous ring named (the carrier);
every connection keeps working and is answered by its original real. The
control: the same with the VIP's second-chance window at 0, where exactly
the moved connections break.

A handshake split across the change (the SYN reached the old real, the
final ACK comes after the change) completes on the old real: the client's
ACK is held back (nft on the client) while the ring changes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from waits import eventually

from xlb import Vip, VipFlags
from xlb.lab import HeldConnection, Lab

HELD = 40
SC_OFF = 0.0
SC_ON = 3600.0
# A request on a connection that survives may wait out a retransmission or
# two on a busy machine; one that broke is reset at once (the new real has
# no socket), so a long bound costs a passing run nothing.
REQUEST_TIMEOUT_S = 10.0
# Each case holds connections from source ports no earlier case used (the
# split-handshake test probes 20000-20199). A connection that broke in an
# earlier case (second chance off) leaves its socket on its real, and a
# real that holds a socket for a packet's 4-tuple takes the packet as its
# own (bpf/handoff.h): a new connection on a reused port moved to that
# real would be answered by the stale socket, not handed on.
_FIRST_SPORTS = itertools.count(21000, HELD)


def unused_sports() -> list[int]:
    first = next(_FIRST_SPORTS)
    return list(range(first, first + HELD))


@pytest.fixture(scope="module")
def sc_lab() -> Iterator[Lab]:
    with Lab(reals=4) as lab:
        yield lab


@dataclass(frozen=True)
class RingChange:
    id: str
    before: dict[str, int]  # real name -> weight before the change
    after: dict[str, int]


CHANGES = [
    RingChange("add", {"real1": 1, "real2": 1, "real3": 1}, {f"real{i}": 1 for i in range(1, 5)}),
    RingChange(
        "remove", {f"real{i}": 1 for i in range(1, 5)}, {"real1": 1, "real2": 1, "real3": 1}
    ),
    RingChange(
        "reweight", {"real1": 1, "real2": 1, "real3": 1}, {"real1": 3, "real2": 1, "real3": 1}
    ),
]


def program(lab: Lab, vip: Vip, reals: dict[str, int], gue: bool, window: float) -> None:
    lb = lab.balancer
    if vip in lb.vips():
        lb.remove_vip(vip)
    lb.add_vip(vip, VipFlags.GUE if gue else VipFlags.NONE, second_chance=window)
    set_reals(lab, vip, reals)


def set_reals(lab: Lab, vip: Vip, reals: dict[str, int]) -> None:
    lab.balancer.set_reals(vip, lab.backends(vip.family, list(reals), reals))


def ask_all(held: list[HeldConnection]) -> dict[int, str]:
    """sport -> what went wrong with one more request on it ("" = answered
    by its original real)."""
    wrong = {}
    for conn in held:
        reply = conn.try_request(REQUEST_TIMEOUT_S)
        if not reply.ok:
            wrong[conn.sport] = reply.error or "failed"
        elif reply.real != conn.real:
            wrong[conn.sport] = f"answered by {reply.real}, not {conn.real}"
    return wrong


def summed(counters: dict[str, dict[str, int]], name: str) -> int:
    return sum(c.get(name, 0) for c in counters.values())


@dataclass
class Outcome:
    moved: set[int]
    wrong: dict[int, str]
    handed_on: int
    received: int
    decap_delta: dict[str, dict[str, int]]  # per real: its decap counters' change


def change_then_forget(
    lab: Lab, family: int, gue: bool, change: RingChange, window: float
) -> Outcome:
    """Hold connections, change the ring, empty the connection table, ask
    every connection once more."""
    vip = lab.vip(family, "tcp")
    program(lab, vip, change.before, gue, window)
    held = lab.client.hold(vip.address, vip.port, sports=unused_sports())
    try:
        sports = [c.sport for c in held]
        assert {c.sport: c.real for c in held} == lab.predict(vip, sports)
        set_reals(lab, vip, change.after)
        assert lab.balancer.clear_flows() >= HELD  # a node that never saw them
        now = lab.predict(vip, sports)
        moved = {c.sport for c in held if now[c.sport] != c.real}
        before = lab.decap_counters()
        wrong = ask_all(held)
        after = lab.decap_counters()
    finally:
        for conn in held:
            conn.close()
    delta = {  # the counters that moved, per real
        role: {k: n for k in after[role] if (n := after[role][k] - before[role].get(k, 0))}
        for role in after
    }
    return Outcome(moved, wrong, summed(delta, "sc_handed_on"), summed(delta, "sc_received"), delta)


CASES = [(family, gue) for family in (4, 6) for gue in (False, True)]


@pytest.mark.parametrize("change", CHANGES, ids=[c.id for c in CHANGES])
@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
def test_without_second_chance_exactly_the_moved_connections_break(
    sc_lab: Lab, family: int, change: RingChange
) -> None:
    """The control. It runs before the tests with second chance on (file
    order): their connections' closing packets, handed on between reals
    for a while after they end, would count in this test's hand-offs."""
    got = change_then_forget(sc_lab, family, False, change, SC_OFF)
    assert got.moved
    assert set(got.wrong) == got.moved
    assert got.handed_on == 0
    print(f"\nIPv{family} {change.id}, second chance off: {len(got.wrong)} of {HELD} broke")


@pytest.mark.parametrize("change", CHANGES, ids=[c.id for c in CHANGES])
@pytest.mark.parametrize(
    ("family", "gue"), CASES, ids=[f"v{f}-{'gue' if g else 'ipip'}" for f, g in CASES]
)
def test_held_connections_survive_a_ring_change_on_a_node_that_never_saw_them(
    sc_lab: Lab, family: int, gue: bool, change: RingChange
) -> None:
    got = change_then_forget(sc_lab, family, gue, change, SC_ON)
    assert got.moved, "the change moved none of the held connections: hold more"
    assert got.wrong == {}, f"moved: {sorted(got.moved)}; decap counters: {got.decap_delta}"
    # every moved connection's request went through a hand-off
    assert got.handed_on >= len(got.moved) and got.received >= len(got.moved)
    print(
        f"\nIPv{family} {'GUE' if gue else 'IPIP'} {change.id}: {len(got.moved)} of {HELD} "
        f"moved, all answered by their real; {got.handed_on} packets handed on"
    )


def test_on_a_flat_network_the_reals_hand_on_at_tc() -> None:
    """One L2 segment, the balancer sending straight to the reals: a real's
    decap at tc hands a packet on with bpf_redirect_neigh() (the kernel
    routes it and resolves the other real's MAC itself)."""
    with Lab(reals=4, topology="bridged", xdp_mode="generic", decap_mode="tc") as lab:
        for family in (4, 6):
            got = change_then_forget(lab, family, False, CHANGES[0], SC_ON)
            assert got.moved and got.wrong == {}
            assert got.handed_on >= len(got.moved) and got.received >= len(got.moved)


# ------------------------------------------------- a handshake split in two

HOLD_TABLE = "xlbt_hold_acks"


def hold_client_acks(lab: Lab, vip: Vip, sport: int, hold: bool) -> None:
    """Drop (hold=True) or let through again every packet but the SYN that
    the client sends from `sport` to `vip`: its kernel retransmits them."""
    if not hold:
        lab.client.run(["nft", "delete", "table", "inet", HOLD_TABLE])
        return
    family = "ip" if vip.family == 4 else "ip6"
    rules = [
        ["add", "table", "inet", HOLD_TABLE],
        ["add", "chain", "inet", HOLD_TABLE, "out", "{ type filter hook output priority 0 ; }"],
        ["add", "rule", "inet", HOLD_TABLE, "out", family, "daddr", str(vip.address),
         "tcp", "sport", str(sport), "tcp", "flags", "&", "syn", "==", "0", "drop"],
    ]  # fmt: skip
    for rule in rules:
        lab.client.run(["nft", *rule])


@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
def test_a_handshake_split_across_the_change_completes(sc_lab: Lab, family: int) -> None:
    """The client's SYN reaches the old ring's real, which answers; the
    client's ACK and request are held back on the client (nft) until the
    ring changed and the table was emptied, then reach the new ring's real,
    which has no socket and hands them on to the old real's request socket:
    the connection opens and the old real answers."""
    lab = sc_lab
    vip = lab.vip(family, "tcp")
    change = CHANGES[0]
    program(lab, vip, change.before, False, SC_ON)
    probe = list(range(20000, 20200))
    before = lab.predict(vip, probe)
    set_reals(lab, vip, change.after)
    after = lab.predict(vip, probe)
    set_reals(lab, vip, change.before)
    sport = next(p for p in probe if before[p] != after[p])
    old_real, new_real = lab.real(str(before[sport])), str(after[sport])
    lab.balancer.clear_flows()
    hold_client_acks(lab, vip, sport, True)
    held = True
    try:
        opening = lab.client.submit(
            lab.client.ahold(vip.address, vip.port, timeout=30, sports=[sport])
        )
        seen = eventually(lambda: old_real.tcp_states(vip.port), lambda s: "SYN_RECV" in s)
        assert "SYN_RECV" in seen, f"the SYN never reached {old_real.role}: {seen}"
        set_reals(lab, vip, change.after)
        lab.balancer.clear_flows()
        handed_before = lab.decap_counters()[new_real]["sc_handed_on"]
        hold_client_acks(lab, vip, sport, False)
        held = False
        [conn] = opening.result(timeout=40)
    finally:
        if held:
            hold_client_acks(lab, vip, sport, False)
    try:
        assert conn.real == old_real.role
        assert conn.try_request().real == old_real.role
    finally:
        conn.close()
    assert lab.decap_counters()[new_real]["sc_handed_on"] > handed_before
