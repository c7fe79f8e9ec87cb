"""Which balancer node carries which flow, for the tests of several nodes
(test_ecmp, test_lab_routers, test_serve_ecmp).

A node's data plane is its own Balancer in a lab the test drives, or the
pinned maps of its `xlb serve` daemon in a lab of daemons (`serve=True`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack

from xlb import Balancer, Vip
from xlb.lab import FIXED_SPORT_BASE, HeldConnection, Lab

FAMILIES = (4, 6)


def data_planes(lab: Lab) -> Iterator[tuple[str, Balancer]]:
    """(role, data plane) of every node whose data plane runs."""
    if not lab.serve:
        for node in lab.running_balancers():
            assert node.balancer is not None  # what running_balancers() keeps
            yield node.role, node.balancer
        return
    for node in lab.balancers:
        with ExitStack() as stack:
            yield node.role, stack.enter_context(lab.data_plane(node))


def forget_flows(lab: Lab) -> None:
    """Empty every node's connection table. The client reuses the source
    ports of connections that earlier tests closed: their entries would
    make `carriers` see a new flow on a node it never went through."""
    for _, lb in data_planes(lab):
        lb.clear_flows()


def carriers(lab: Lab, vip: Vip, sports: Iterable[int]) -> dict[int, list[str]]:
    """sport -> the nodes whose connection table holds the client's flow
    from that source port to `vip`. One pass over each table: ask for
    every port of interest at once."""
    wanted = set(sports)
    client = (lab.client.address(vip.family), vip.address, vip.port, vip.proto)
    found: dict[int, list[str]] = {sport: [] for sport in wanted}
    for role, lb in data_planes(lab):
        for flow, _ in lb.flows(limit=100_000):
            if (flow.src, flow.dst, flow.dport, flow.proto) == client and flow.sport in wanted:
                found[flow.sport].append(role)
    return found


def sports_for(family: int, step: int) -> list[int]:
    """64 source ports of their own for each step of a test, below the
    client's ephemeral range (no reuse between tests)."""
    base = FIXED_SPORT_BASE + 1000 * (FAMILIES.index(family) * 8 + step)
    return list(range(base, base + 64))


def ask_all(held: list[HeldConnection]) -> list[str]:
    """One more request on every held connection; what went wrong."""
    wrong = []
    for conn in held:
        reply = conn.try_request()
        if not reply.ok or reply.real != conn.real:
            wrong.append(f"{conn}: {reply.error or f'answered by {reply.real}'}")
    return wrong
