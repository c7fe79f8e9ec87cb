"""Two `xlb serve` daemons behind a BIRD router, as operators run them.

`Lab(balancers=2, router="bird", serve=True)`: BIRD in the router with a
BGP session to each balancer node; on each node `xlb serve` (the lab's
configuration: TCP 80 on the IPv4 and the IPv6 VIP over three reals, HTTP
checks through the tunnel, ExaBGP as the daemon's child). The router's
ECMP route to each VIP is what the daemons announce. Both daemons read the
same VIPs and reals, hence build the same Maglev rings: a flow that moves
node reaches the same real.

Each test starts from both daemons running and announcing both VIPs
(`both_serving`) and leaves them so. Every wait is on a condition with a
deadline; the bounds asserted are loose enough for a busy 2-core machine,
and the figures measured are printed (pytest -s) and reported by
bench/failover.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from flows import ask_all, carriers, forget_flows, sports_for
from waits import eventually, wait_for_traffic

from xlb import Vip, host
from xlb.config import find_exabgp
from xlb.lab import HeldConnection, Lab
from xlb.lab.state import pids_in_netns, process_name
from xlb.model import IPAddress

pytestmark = pytest.mark.skipif(
    shutil.which("bird") is None or find_exabgp("exabgp") is None,
    reason="needs BIRD 2 (Debian bird2) and ExaBGP (the bgp extra)",
)

FAMILIES = [4, 6]
HELD_PER_FAMILY = 10
XLB = str(Path(sys.executable).with_name("xlb"))
#: kill -9 of `xlb serve` -> the router's route without the node: ExaBGP
#: dies with the daemon and the kernel closes its session (tens of ms, see
#: bench/failover.py); the BGP hold timer (3 s) would be the slow way.
#: Loose enough never to flake on a busy machine.
DROP_BOUND_S = 2.5
DEADLINE_S = 60.0
#: Rule priority of the partition the tests make in the router.
PARTITION_PRIORITY = 90


# ---------------------------------------------------------------- helpers


def node_addresses(lab: Lab, family: int, roles: Iterable[str]) -> set[str]:
    return {str(lab.balancer_node(role).address(family)) for role in roles}


def routes_over(lab: Lab, roles: Iterable[str], families: Iterable[int] = FAMILIES) -> bool:
    """The router's route to each VIP of `families` goes over exactly `roles`."""
    roles = list(roles)
    return all(lab.router_hops(f) == node_addresses(lab, f, roles) for f in families)


def wait_routes(lab: Lab, roles: Iterable[str], families: Iterable[int] = FAMILIES) -> float:
    """Until the router routes the VIPs over exactly `roles`; seconds it took."""
    roles, families = list(roles), list(families)
    started = time.monotonic()
    seen = eventually(lambda: routes_over(lab, roles, families), bool, DEADLINE_S, every=0.005)
    assert seen, (
        f"routes to IPv{families} not over {roles}: {lab.vip_routes(4)} / {lab.vip_routes(6)}"
    )
    return time.monotonic() - started


def reals_serving(lab: Lab, role: str, vip: Vip) -> int:
    """How many reals of `vip` have slots in the node's data plane."""
    with lab.data_plane(role) as lb:
        return sum(1 for real in lb.reals(vip) if real.weight > 0)


def hold_both(lab: Lab) -> list[HeldConnection]:
    held = lab.client.hold(lab.vip4, lab.tcp_port, HELD_PER_FAMILY)
    return held + lab.client.hold(lab.vip6, lab.tcp_port, HELD_PER_FAMILY)


def targets(lab: Lab) -> list[tuple[IPAddress, int, str]]:
    return [(lab.vip_address(f), lab.tcp_port, "tcp") for f in FAMILIES]


def xlb_cli(lab: Lab, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator's `xlb` against a node's daemon (found by its lock dir)."""
    daemon = lab.daemons[role]
    where = ["-i", daemon.interface, "--lock-dir", str(daemon.lock_dir)]
    return subprocess.run([XLB, *args, *where], capture_output=True, text=True, timeout=120)


def exabgp_pids(lab: Lab, role: str) -> list[int]:
    """ExaBGP processes in a node's namespace."""
    ns = lab.balancer_node(role).netns
    return [pid for pid in pids_in_netns(ns) if "exabgp" in (process_name(pid) or "").lower()]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def serve_lab() -> Iterator[Lab]:
    with Lab(reals=3, balancers=2, router="bird", serve=True) as lab:
        for node in lab.balancers:
            lab.start_serve(node)
        wait_routes(lab, ["lb1", "lb2"])
        yield lab


@pytest.fixture
def lab(serve_lab: Lab) -> Iterator[Lab]:
    """The lab with both daemons serving and announcing, before and after."""
    lab = serve_lab
    yield lab
    for role in ("lb1", "lb2"):
        if not lab.daemons[role].running:
            lab.start_serve(role)
    wait_routes(lab, ["lb1", "lb2"])


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("family", FAMILIES)
def test_both_daemons_announce_and_new_flows_spread(lab: Lab, family: int) -> None:
    vip = lab.vip(family, "tcp")
    assert "proto bird" in lab.vip_routes(family)
    for role in ("lb1", "lb2"):
        state = lab.daemons[role].bgp()
        assert state["vips"][str(vip)] is True, state
        assert state["neighbors"], state
        assert all(s == "established" for s in state["neighbors"].values()), state
    forget_flows(lab)
    sports = sports_for(family, 0)

    replies = lab.client.http_get(vip.address, vip.port, sports=sports)

    assert replies.ok, replies.failures[:5]
    where = carriers(lab, vip, sports)
    assert all(len(nodes) == 1 for nodes in where.values()), where
    per_node = {r: sum(1 for n in where.values() if n == [r]) for r in ("lb1", "lb2")}
    assert min(per_node.values()) > 0, f"new flows not spread over both nodes: {per_node}"
    print(f"\nIPv{family}: {len(sports)} new flows over the daemons' ECMP route: {per_node}")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_node_that_loses_every_real_of_a_vip_withdraws_it(lab: Lab, family: int) -> None:
    """The router stops forwarding lb1's tunnelled packets of one family to
    the reals (a partition): lb1's checks of that VIP fail, lb1 withdraws
    that VIP alone, and clients keep working through lb2."""
    vip = lab.vip(family, "tcp")
    other = 6 if family == 4 else 4
    lb1 = lab.balancer_node("lb1")
    reals_net = "10.30.0.0/16" if family == 4 else "fd00:30::/32"
    # By the router's port facing lb1: the outer source of tunnelled
    # packets is a prefix of hash-chosen addresses, the same on every node.
    partition = ["rule", "add", "iif", lb1.hub_port, "to", reals_net]
    partition += ["priority", str(PARTITION_PRIORITY), "blackhole"]
    forget_flows(lab)
    held = lab.client.hold(vip.address, vip.port, HELD_PER_FAMILY * 2)
    try:
        where = carriers(lab, vip, [c.sport for c in held])
        on_lb1 = [sport for sport, nodes in where.items() if nodes == ["lb1"]]
        assert on_lb1, "no held connection goes through lb1"
        host.ip(f"-{family}", *partition, ns=lab.hub)
        try:
            wait_routes(lab, ["lb2"], [family])
            assert routes_over(lab, ["lb1", "lb2"], [other]), "the other family was withdrawn"
            assert lab.daemons["lb1"].bgp()["vips"][str(vip)] is False
            assert lab.daemons["lb2"].bgp()["vips"][str(vip)] is True

            fresh = sports_for(family, 1)
            replies = lab.client.http_get(vip.address, vip.port, sports=fresh)
            assert replies.ok, replies.failures[:5]
            assert ask_all(held) == []  # lb1's held connections now go through lb2
        finally:
            host.ip(f"-{family}", "rule", "del", "priority", str(PARTITION_PRIORITY), ns=lab.hub)
        wait_routes(lab, ["lb1", "lb2"])  # lb1's checks pass again: announced again
        # Not at its first real up: once the others had time to pass their
        # checks too, so the flows the router moves back to lb1 meet a ring
        # with their real (the same as lb2's).
        assert reals_serving(lab, "lb1", vip) == 3, "lb1 announced a VIP with a partial ring"
        assert ask_all(held) == []
        print(f"\nIPv{family}: {len(on_lb1)} of {len(held)} held connections moved lb1 -> lb2")
    finally:
        for conn in held:
            conn.close()


def test_a_planned_drain_under_traffic_fails_no_request(lab: Lab) -> None:
    """`xlb node drain` on lb1 while clients make new connections and use
    held ones (IPv4 and IPv6): lb1 withdraws, waits until no new flow
    reaches it, answers; nothing fails, before, during or after."""
    forget_flows(lab)
    held = hold_both(lab)
    try:
        with lab.client.traffic(targets(lab), held) as traffic:
            wait_for_traffic(traffic)
            started = time.monotonic()
            drain = xlb_cli(lab, "lb1", "node", "drain", "--timeout", "30", "--quiet", "1")
            drained_s = time.monotonic() - started
            assert drain.returncode == 0, drain.stdout + drain.stderr
            assert routes_over(lab, ["lb2"]), "the drain answered before the routes changed"
            wait_for_traffic(traffic)
            undrain = xlb_cli(lab, "lb1", "node", "undrain")
            assert undrain.returncode == 0, undrain.stdout + undrain.stderr
            back_s = wait_routes(lab, ["lb1", "lb2"])
            wait_for_traffic(traffic)
        assert traffic.report.failed == 0, traffic.report.failures[:5]
        assert ask_all(held) == []
        print(
            f"\nxlb node drain answered in {drained_s:.2f} s ({drain.stdout.strip()}); "
            f"undrain -> routes back in {back_s * 1000:.0f} ms; traffic {traffic.report}"
        )
    finally:
        for conn in held:
            conn.close()


def test_kill_9_of_a_daemon_under_traffic(lab: Lab) -> None:
    """kill -9 of lb1's `xlb serve`: its ExaBGP dies with it, the router
    drops lb1 at once, held connections go on through lb2 (same rings);
    the restarted daemon adopts its pinned data plane, announces again, and
    the flows that hash back to lb1 go on too."""
    forget_flows(lab)
    held = hold_both(lab)
    daemon = lab.daemons["lb1"]
    assert exabgp_pids(lab, "lb1"), "lb1's daemon runs no ExaBGP"
    try:
        with lab.client.traffic(targets(lab), held) as traffic:
            wait_for_traffic(traffic)
            started = time.monotonic()
            os.kill(daemon.process.pid, signal.SIGKILL)
            wait_routes(lab, ["lb2"])
            dropped_s = time.monotonic() - started
            daemon.process.wait(DEADLINE_S)
            gone = eventually(lambda: exabgp_pids(lab, "lb1"), lambda p: not p, DEADLINE_S)
            assert gone == [], f"ExaBGP outlived its daemon: {gone}"
            wait_for_traffic(traffic)
        held_failures = [reply for kind, reply in traffic.report.failures if kind == "held"]
        new_failures = traffic.report.failed - len(held_failures)
        assert held_failures == [], held_failures[:5]
        assert dropped_s < DROP_BOUND_S, f"the router dropped lb1 after {dropped_s:.2f} s"
        assert ask_all(held) == []

        with lab.client.traffic(targets(lab), held) as back:
            wait_for_traffic(back)
            restarted = lab.start_serve("lb1")
            back_s = wait_routes(lab, ["lb1", "lb2"])
            wait_for_traffic(back)
        assert restarted.starts == daemon.starts + 1
        assert restarted.events("bgp_started"), "the restarted daemon started no engine"
        assert back.report.failed == 0, back.report.failures[:5]
        assert ask_all(held) == []
        print(
            f"\nkill -9 of lb1's xlb serve -> router without lb1: {dropped_s * 1000:.0f} ms; "
            f"new connections failed meanwhile: {new_failures}; traffic {traffic.report}; "
            f"restart -> announced again in {back_s:.2f} s; back: {back.report}"
        )
    finally:
        for conn in held:
            conn.close()
