"""End to end: real TCP/UDP/HTTP through the XDP balancer to reals that
decapsulate with bpf/decap.bpf.c and answer the client directly.

Each behaviour runs on every lab configuration of conftest.LAB_CONFIGS
(routed and bridged, native and generic XDP, decap at XDP and at tc),
over IPv4 and IPv6.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from waits import eventually

from xlb import VipFlags
from xlb.lab import FIXED_SPORT_BASE, Lab

FAMILIES = [4, 6]


def restore(lab: Lab) -> None:
    """Put every default service back to all reals with weight 1, no flags."""
    for family in FAMILIES:
        for proto in ("tcp", "udp"):
            vip = lab.vip(family, proto)
            lab.balancer.set_vip_flags(vip, VipFlags.NONE)
            lab.balancer.set_reals(vip, lab.backends(family))


def assert_predicted(lab: Lab, proto: str, family: int, replies: Any) -> None:
    predicted = lab.predict(lab.vip(family, proto), [r.sport for r in replies])
    wrong = [(r.sport, r.real, predicted[r.sport]) for r in replies if r.real != predicted[r.sport]]
    assert not wrong, f"{len(wrong)} flows answered by another real than lb.predict(): {wrong[:5]}"


@pytest.mark.parametrize("family", FAMILIES)
def test_tcp_connections_spread_over_the_reals(lab: Lab, family: int) -> None:
    replies = lab.client.http_get(lab.vip_address(family), lab.tcp_port, 150)
    assert replies.ok, replies.failures[:5]
    assert set(replies.by_real()) == {r.role for r in lab.reals}
    assert_predicted(lab, "tcp", family, replies)


@pytest.mark.parametrize("family", FAMILIES)
def test_udp_exchanges_spread_over_the_reals(lab: Lab, family: int) -> None:
    replies = lab.client.udp_exchange(lab.vip_address(family), lab.udp_port, 150)
    assert replies.ok, replies.failures[:5]
    assert set(replies.by_real()) == {r.role for r in lab.reals}
    assert_predicted(lab, "udp", family, replies)


def test_direct_server_return(lab: Lab) -> None:
    """The balancer sees only client->VIP packets; replies bypass it."""

    def snapshot() -> dict[str, int]:
        counters = lab.balancer.counters()
        rx, tx = lab.client.link_stats()
        return {
            "client_tx": tx,
            "client_rx": rx,
            "lb_seen": sum(
                counters[f"xdp_{a}"] for a in ("aborted", "drop", "pass", "tx", "redirect")
            ),
            "lb_tx": counters["xdp_tx"],
            "decap": sum(
                c["ipip"] + c["ip6ip6"] + c["4in6"] + c["gue"]
                for c in lab.decap_counters().values()
            ),
            "reals_tx": sum(r.link_stats()[1] for r in lab.reals),
        }

    def exchange() -> None:
        assert lab.client.http_get(lab.vip4, lab.tcp_port, 50).ok
        assert lab.client.http_get(lab.vip6, lab.tcp_port, 50).ok
        assert lab.client.udp_exchange(lab.vip6, lab.udp_port, 50).ok

    # The same exchange once uncounted: in a fresh lab (this test alone) the
    # reals would otherwise send their first ARP/ND for the router and their
    # MLD reports inside the count (12 packets over the tolerance, routed).
    exchange()
    before = snapshot()
    exchange()

    def delta() -> dict[str, int]:
        return {k: v - before[k] for k, v in snapshot().items()}

    def settled(d: dict[str, int]) -> bool:
        """The last packets (final ACKs) have passed the balancer and the reals."""
        return (
            d["decap"] == d["lb_tx"]
            and abs(d["lb_seen"] - d["client_tx"]) <= 6
            and abs(d["reals_tx"] - d["client_rx"]) <= 6
        )

    d = eventually(delta, settled)
    assert d["client_tx"] >= 50 * 2 * 4 + 50
    assert d["decap"] == d["lb_tx"], d
    assert abs(d["lb_seen"] - d["client_tx"]) <= 6, d  # ARP/ND aside, nothing else
    assert abs(d["reals_tx"] - d["client_rx"]) <= 6, d
    servers = lab.server_stats()
    assert sum(s["http_requests"]["4"] for s in servers.values()) >= 50


@pytest.mark.parametrize("family", FAMILIES)
def test_established_connections_survive_ring_changes(lab: Lab, family: int) -> None:
    lb = lab.balancer
    vip = lab.vip(family, "tcp")
    held = lab.client.hold(lab.vip_address(family), lab.tcp_port, 12)
    sports = list(range(FIXED_SPORT_BASE, FIXED_SPORT_BASE + 200))
    by_real: dict[str, int] = {}
    for h in held:
        assert h.real is not None
        by_real[h.real] = by_real.get(h.real, 0) + 1
    drained = max(by_real, key=lambda name: by_real[name])
    changes: list[Callable[[], None]] = [
        lambda: lb.set_weight(vip, lab.real("real1").address(family), 3),
        lambda: lb.set_weight(vip, lab.real(drained).address(family), 0),
        lambda: lb.set_reals(vip, lab.backends(family, weights={"real2": 2, drained: 0})),
    ]
    try:
        for change in changes:
            change()
            answers = [h.try_request() for h in held]
            assert all(a.real == h.real for a, h in zip(answers, held, strict=True)), answers
            replies = lab.client.http_get(lab.vip_address(family), lab.tcp_port, sports=sports)
            assert replies.ok, replies.failures[:5]
            assert_predicted(lab, "tcp", family, replies)
        assert drained not in replies.by_real(), "a drained real got new flows"
    finally:
        for h in held:
            h.close()
            lab.client.held.remove(h)
        restore(lab)


def test_removing_a_real_moves_only_its_flows(lab: Lab) -> None:
    lb = lab.balancer
    vip = lab.vip(4, "tcp")
    sports = list(range(FIXED_SPORT_BASE + 1000, FIXED_SPORT_BASE + 1300))
    before = lab.client.http_get(lab.vip4, lab.tcp_port, sports=sports).by_sport()
    try:
        lb.remove_real(vip, lab.real("real3").ipv4)
        after = lab.client.http_get(lab.vip4, lab.tcp_port, sports=sports).by_sport()
        moved = {s for s in sports if before[s] != after[s]}
        on_real3 = {s for s in sports if before[s] == "real3"}
        assert on_real3 <= moved
        # Maglev is not perfectly minimal: a few other flows may move too.
        assert len(moved - on_real3) <= 0.05 * len(sports), len(moved - on_real3)
        assert "real3" not in after.values()
    finally:
        restore(lab)


def test_gue_encapsulation(lab: Lab) -> None:
    before = sum(c["gue"] for c in lab.decap_counters().values())
    try:
        for family in FAMILIES:
            lab.balancer.set_vip_flags(lab.vip(family, "tcp"), VipFlags.GUE)
            replies = lab.client.http_get(lab.vip_address(family), lab.tcp_port, 40)
            assert replies.ok, replies.failures[:5]
    finally:
        restore(lab)
    assert sum(c["gue"] for c in lab.decap_counters().values()) - before >= 80 * 4


def test_ipv4_vip_over_ipv6_reals(lab: Lab) -> None:
    before = sum(c["4in6"] for c in lab.decap_counters().values())
    try:
        lab.balancer.set_reals(lab.vip(4, "tcp"), lab.backends(6))
        replies = lab.client.http_get(lab.vip4, lab.tcp_port, 60)
        assert replies.ok, replies.failures[:5]
        assert set(replies.by_real()) == {r.role for r in lab.reals}
    finally:
        restore(lab)
    assert sum(c["4in6"] for c in lab.decap_counters().values()) - before >= 60 * 4
