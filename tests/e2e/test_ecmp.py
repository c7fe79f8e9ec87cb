"""End to end: two balancer nodes behind a router doing ECMP (docs/ecmp.md).

Both nodes are configured the same way, so both build the same Maglev ring.
The router spreads the client's flows over the nodes by their L4 5-tuple.
When a node is withdrawn from the router's route and its data plane killed,
its flows move to the other node, whose connection table has never seen
them. The ring sends them to the same real, so the established TCP
connections survive. When the node comes back with an empty table, the
flows move back to it and survive again. A ring change before the node
change breaks the moved flows it remaps, unless second chance carries the
previous ring's real (and with it, none breaks).

Which node carries a flow is read from the nodes' connection tables: a node
records every flow it forwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flows import ask_all, carriers, forget_flows
from waits import wait_for_traffic

from xlb import Vip
from xlb.errors import ConfigError
from xlb.lab import FIXED_SPORT_BASE, HeldConnection, KillHow, Lab

FAMILIES = [4, 6]
HELD = 20  # kept-alive connections per family


@pytest.fixture(scope="module")
def ecmp_lab() -> Iterator[Lab]:
    with Lab(reals=3, balancers=2) as lab:
        lab.add_default_services()
        yield lab


def vip_packets_per_node(lab: Lab, vip: Vip) -> dict[str, int]:
    """The packets each running node counted for `vip`, by node role."""
    counted = {}
    for node in lab.running_balancers():
        assert node.balancer is not None  # what running_balancers() keeps
        counted[node.role] = node.balancer.stats(vip).packets
    return counted


def sport_range(family: int, proto: str, step: int) -> list[int]:
    """64 source ports of their own for each test (no reuse between tests)."""
    index = FAMILIES.index(family) * 2 + ("tcp", "udp").index(proto)
    base = FIXED_SPORT_BASE + 1000 * (index * 4 + step)
    return list(range(base, base + 64))


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("family", FAMILIES)
def test_new_flows_spread_over_both_nodes(ecmp_lab: Lab, family: int, proto: str) -> None:
    lab = ecmp_lab
    vip = lab.vip(family, proto)
    sports = sport_range(family, proto, 0)
    forget_flows(lab)
    predicted = {node.role: lab.predict(vip, sports, node=node) for node in lab.balancers}
    assert predicted["lb1"] == predicted["lb2"], "two nodes with one config disagree"
    before = vip_packets_per_node(lab, vip)

    if proto == "tcp":
        replies = lab.client.http_get(vip.address, vip.port, sports=sports)
    else:
        replies = lab.client.udp_exchange(vip.address, vip.port, sports=sports)

    assert replies.ok, replies.failures[:5]
    assert replies.by_sport() == predicted["lb1"]
    assert set(replies.by_real()) == {r.role for r in lab.reals}
    after = vip_packets_per_node(lab, vip)
    forwarded = {role: after[role] - before[role] for role in after}
    assert all(n > 0 for n in forwarded.values()), f"a node saw no traffic: {forwarded}"
    where = carriers(lab, vip, sports)
    assert all(len(nodes) == 1 for nodes in where.values()), f"flows on 0 or 2 nodes: {where}"
    per_node = {role: sum(1 for n in where.values() if n == [role]) for role in after}
    print(f"\nIPv{family} {proto}: {len(sports)} flows, per node {per_node}, packets {forwarded}")


def held_report(held: list[HeldConnection]) -> dict[int, str | None]:
    return {conn.sport: conn.real for conn in held}


@pytest.mark.parametrize("how", ["detach", "link-down"])
@pytest.mark.parametrize("family", FAMILIES)
def test_held_connections_survive_losing_their_node(
    ecmp_lab: Lab, family: int, how: KillHow
) -> None:
    lab = ecmp_lab
    vip = lab.vip(family, "tcp")
    lb1 = lab.balancers[0]
    forget_flows(lab)
    held = lab.client.hold(vip.address, vip.port, HELD)
    try:
        sports = [conn.sport for conn in held]
        assert held_report(held) == lab.predict(vip, sports), "the ring did not pick the reals"
        where = carriers(lab, vip, sports)
        assert all(len(nodes) == 1 for nodes in where.values()), where
        moving = sorted(s for s, nodes in where.items() if nodes == ["lb1"])
        staying = sorted(s for s, nodes in where.items() if nodes == ["lb2"])
        assert moving and staying, f"held connections not spread over both nodes: {where}"
        # (b) lb1 leaves the ECMP route (BGP withdraw), then its XDP goes away.
        with lab.client.traffic([(vip.address, vip.port, "tcp")], held) as traffic:
            wait_for_traffic(traffic)
            lab.withdraw(lb1)
            wait_for_traffic(traffic)
            lab.kill_data_plane(lb1, how)
            wait_for_traffic(traffic)
        assert traffic.report.failed == 0, traffic.report.failures[:5]

        rx_before = lb1.link_stats()[0]
        assert ask_all(held) == []
        step = 1 if how == "detach" else 2
        fresh = lab.client.http_get(vip.address, vip.port, sports=sport_range(family, "tcp", step))
        assert fresh.ok, fresh.failures[:5]
        assert fresh.by_sport() == lab.predict(vip, fresh.by_sport())
        rx_lb1 = lb1.link_stats()[0] - rx_before
        assert rx_lb1 < 5, f"{rx_lb1} packets still reached the killed node lb1"
        where = carriers(lab, vip, sports)
        assert all("lb2" in where[s] for s in moving), "lb2 did not carry the moved flows"

        # (c) lb1 comes back (after a detach: with an empty connection table)
        # and is announced again.
        with lab.client.traffic([(vip.address, vip.port, "tcp")], held) as traffic_back:
            wait_for_traffic(traffic_back)
            lab.restore_data_plane(lb1)
            lab.announce(lb1)
            wait_for_traffic(traffic_back)
        assert traffic_back.report.failed == 0, traffic_back.report.failures[:5]
        assert ask_all(held) == []
        where = carriers(lab, vip, sports)
        if how == "detach":  # lb1's table is new: it holds what moved back only
            back = sorted(s for s, nodes in where.items() if "lb1" in nodes)
            assert back == moving, "the same set of nodes gave another flow -> node mapping"
        assert held_report(held) == lab.predict(vip, sports)
        print(
            f"\nIPv{family} {how}: {HELD} held connections, {len(moving)} on lb1 moved to "
            f"lb2 and back, {len(staying)} stayed on lb2; traffic {traffic.report} / "
            f"{traffic_back.report}; packets reaching lb1 after the kill {rx_lb1}"
        )
    finally:
        for conn in held:
            conn.close()
        if lb1.killed is not None:
            lab.restore_data_plane(lb1)
        if lb1.role not in lab.announced:
            lab.announce(lb1)


@pytest.mark.parametrize("second_chance", [False, True], ids=["without", "with"])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_ring_change_then_a_node_change(ecmp_lab: Lab, family: int, second_chance: bool) -> None:
    """A flow that started before a ring change and then moves to a node
    that never saw it gets the new ring's real (docs/ecmp.md). Here the
    change is draining a real (weight 0: its connections stay, on their
    node), then lb1 is withdrawn and its data plane killed. Without second
    chance exactly the moved connections whose real the new ring changes
    break; with it none does, and each is still answered by its real (lb2
    carries the previous ring's real, the new real hands the packets on)."""
    lab = ecmp_lab
    vip = lab.vip(family, "tcp")
    lb1 = lab.balancers[0]
    drained = lab.reals[0]
    window = 3600.0 if second_chance else 0.0
    lab.balancers_do(lambda lb: lb.set_second_chance(vip, window))
    forget_flows(lab)
    # Without second chance connections break and leave their sockets on
    # their reals; on ports of their own (below the ephemeral range) no
    # later connection can reuse a 4-tuple such a socket would claim.
    sports = None if second_chance else sport_range(family, "tcp", 3)[: 2 * HELD]
    held = lab.client.hold(vip.address, vip.port, 2 * HELD, sports=sports)
    try:
        where = carriers(lab, vip, [conn.sport for conn in held])
        lab.balancers_do(lambda lb: lb.set_weight(vip, drained.address(family), 0))
        now = lab.predict(vip, [conn.sport for conn in held])
        assert ask_all(held) == [], "draining broke a connection on its own node"
        remapped = {c.sport for c in held if where[c.sport] == ["lb1"] and now[c.sport] != c.real}
        assert remapped, "no held connection both moves node and changes real: hold more"

        lab.withdraw(lb1)
        lab.kill_data_plane(lb1)
        broken = {c.sport for c in held if not c.try_request().ok}
        wrong = ask_all(held)

        assert broken == (set() if second_chance else remapped)
        if second_chance:
            assert wrong == []
        print(
            f"\nIPv{family} second chance {'on' if second_chance else 'off'}: {len(held)} held, "
            f"ring changed, lb1 withdrawn and killed: {len(remapped)} moved and remapped, "
            f"{len(broken)} broke"
        )
    finally:
        for conn in held:
            conn.close()
        lab.balancers_do(lambda lb: lb.set_weight(vip, drained.address(family), 1))
        if lb1.killed is not None:
            lab.restore_data_plane(lb1)
        if lb1.role not in lab.announced:
            lab.announce(lb1)
        lab.balancers_do(lambda lb: lb.set_second_chance(vip, 3600.0))


def test_several_balancers_need_the_routed_topology() -> None:
    with pytest.raises(ConfigError, match="routed topology"):
        Lab(balancers=2, topology="bridged")
