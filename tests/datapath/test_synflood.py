"""The SYN-flood guard (bpf/flood.h) through BPF_PROG_TEST_RUN.

A tiny threshold makes a handful of SYNs a flood; the guard's clock is
moved with xlb.synflood.rewind_windows instead of waiting. Each test runs
pinned to one CPU: the guard counts per CPU, and BPF_PROG_TEST_RUN runs on
the calling thread's CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from xlb import Balancer, BalancerConfig, Flow, Real, Vip
from xlb.synflood import clock_ns, flood_windows, rewind_windows
from xlb.testing import GATEWAY_MAC, outer_destination, tcp_packet

VIP = Vip("10.210.0.1", 80, "tcp")
REALS = [Real(f"10.0.0.{i}") for i in range(1, 5)]
THRESHOLD = 3
CPU = 0


@pytest.fixture
def guarded() -> Iterator[Balancer]:
    """A Balancer whose guard trips above THRESHOLD SYNs a second, on CPU 0."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CPU})
    config = BalancerConfig(gateway_mac=GATEWAY_MAC, syn_flood_threshold=THRESHOLD)
    lb = Balancer(config=config)
    try:
        lb.add_vip(VIP, ring_size=1009)
        lb.set_reals(VIP, REALS)
        yield lb
    finally:
        lb.close()
        os.sched_setaffinity(0, before)


def flow(n: int) -> Flow:
    return Flow(f"198.51.100.{n}", VIP.address, 40000 + n, VIP.port)


def send(lb: Balancer, f: Flow, flags: str) -> str:
    """One TCP segment of `f`: it must be encapsulated; to which real."""
    result = lb.run(tcp_packet(f.src, f.dst, f.sport, f.dport, flags))
    assert result.action == "XDP_TX", result
    return str(outer_destination(result.packet))


def recorded(lb: Balancer) -> set[Flow]:
    return {f for f, _ in lb.flows(limit=10_000)}


def delta(lb: Balancer, before: dict[str, int]) -> dict[str, int]:
    after = lb.counters()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_syns_above_the_threshold_are_routed_but_not_recorded(guarded: Balancer) -> None:
    lb = guarded
    calm = [flow(n) for n in range(1, THRESHOLD + 1)]
    flood = [flow(n) for n in range(10, 20)]
    for f in calm:
        assert send(lb, f, "S") == str(lb.predict(f))
    assert recorded(lb) == set(calm)
    assert not lb.syn_flood()[CPU].under_flood

    before = lb.counters()
    for f in flood:  # each still goes where the ring says
        assert send(lb, f, "S") == str(lb.predict(f))
    counted = delta(lb, before)
    assert counted["syn_flood_skip"] == len(flood)
    assert counted["syn_flood_windows"] == 1
    assert recorded(lb) == set(calm)
    window = lb.syn_flood()[CPU]
    assert window.under_flood and window.syns == THRESHOLD + len(flood)

    # a legitimate connection among the flood: its first ACK records it
    legit = flood[0]
    before = lb.counters()
    owner = send(lb, legit, "A")
    assert owner == str(lb.predict(legit))
    assert delta(lb, before)["conn_miss"] == 1
    assert legit in recorded(lb)
    lb.set_weight(VIP, owner, 0)  # drained: the ring sends it elsewhere, the entry stays valid
    assert str(lb.predict(legit)) != owner
    assert send(lb, legit, "A") == owner  # the entry decides, not the ring


def test_recorded_flows_keep_their_real_through_a_flood_and_a_ring_change(
    guarded: Balancer,
) -> None:
    lb = guarded
    established = [flow(n) for n in range(1, THRESHOLD + 1)]
    owner = {f: send(lb, f, "S") for f in established}
    for n in range(100, 160):
        send(lb, flow(n), "S")
    assert recorded(lb) == set(established)
    lb.set_reals(VIP, [Real(f"10.0.0.{i}") for i in range(5, 9)])  # every real replaced...
    lb.set_reals(VIP, [*REALS, Real("10.0.0.9")])  # ...and back with one more
    for f in established:
        assert send(lb, f, "A") == owner[f]


def test_a_syn_for_a_recorded_flow_rewrites_it_even_under_a_flood(guarded: Balancer) -> None:
    """A client reusing its 5-tuple must not be sent to the old connection's real."""
    lb = guarded
    first = flow(1)
    old = send(lb, first, "S")
    for n in range(10, 20):
        send(lb, flow(n), "S")
    assert lb.syn_flood()[CPU].under_flood
    lb.set_reals(VIP, [r for r in REALS if str(r.address) != old])
    lb.add_real(VIP, old)  # the old real is back, with a new id: the entry is stale
    new = str(lb.predict(first))
    before = lb.counters()
    assert send(lb, first, "S") == new
    assert delta(lb, before).get("syn_flood_skip") is None
    assert send(lb, first, "A") == new


def test_the_flood_ends_a_window_after_the_syns_calm_down(guarded: Balancer) -> None:
    lb = guarded
    for n in range(10, 20):
        send(lb, flow(n), "S")
    assert lb.syn_flood()[CPU].under_flood

    # the next window: its first SYN is counted in it, the last window was a flood
    rewind_windows(lb.map("syn_flood"), 1.5)
    before = lb.counters()
    send(lb, flow(30), "S")
    assert delta(lb, before)["syn_flood_skip"] == 1
    window = lb.syn_flood()[CPU]
    assert (window.syns, window.last_syns, window.under_flood) == (1, 10, True)

    # two windows later with few SYNs: recorded again
    rewind_windows(lb.map("syn_flood"), 2.5)
    calm = flow(31)
    before = lb.counters()
    send(lb, calm, "S")
    assert "syn_flood_skip" not in delta(lb, before)
    assert calm in recorded(lb)
    assert not lb.syn_flood()[CPU].under_flood


def test_a_threshold_of_zero_turns_the_guard_off(guarded: Balancer) -> None:
    lb = guarded
    lb.configure(BalancerConfig(gateway_mac=GATEWAY_MAC, syn_flood_threshold=0))
    flows = [flow(n) for n in range(1, 40)]
    before = lb.counters()
    for f in flows:
        send(lb, f, "S")
    assert recorded(lb) == set(flows)
    assert "syn_flood_skip" not in delta(lb, before)
    assert not any(cpu.under_flood for cpu in lb.syn_flood())


def test_flood_windows_roll_as_the_data_plane_does(guarded: Balancer) -> None:
    """flood_windows() predicts what the next SYN finds, at any time."""
    lb = guarded
    for n in range(10, 20):
        send(lb, flow(n), "S")
    flood_map = lb.map("syn_flood")
    now = clock_ns()
    assert flood_windows(flood_map, THRESHOLD, now)[CPU].under_flood
    later = flood_windows(flood_map, THRESHOLD, now + 1_500_000_000)[CPU]
    assert (later.syns, later.last_syns, later.under_flood) == (0, 10, True)
    much_later = flood_windows(flood_map, THRESHOLD, now + 2_500_000_000)[CPU]
    assert (much_later.syns, much_later.last_syns, much_later.under_flood) == (0, 0, False)
    assert not flood_windows(flood_map, 0, now)[CPU].under_flood
