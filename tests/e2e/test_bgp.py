"""The BGP engines against a real router: BIRD 2 in a namespace of its own.

The topology is made here (two namespaces and a veth, cleaned up also on
failure): the router runs BIRD with `merge paths on` and a kernel protocol,
so what the node announces shows up in the router's kernel route table,
which is what the tests look at. Every wait is on a condition with a
deadline; the figures a test measures are printed (pytest -s shows them).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.bgp_topology import (
    NODE_AS,
    NODE_BIRD,
    NODE_V4,
    NODE_V6,
    ROUTER_BIRD,
    ROUTER_V4,
    VIP4,
    VIP6,
    Topology,
    _timed,
    eventually,
    exabgp_settings,
    topology,
)
from xlb import netns
from xlb.announce import BirdAnnouncer, BirdControl, ExaBgpAnnouncer
from xlb.config import BgpSettings, RouteAttributes, find_exabgp

__all__ = ["topology"]  # the fixture, used by name

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)"),
    pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (Debian bird2)"),
    pytest.mark.skipif(find_exabgp("exabgp") is None, reason="needs ExaBGP (the bgp extra)"),
]


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: PID 1 of this machine may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def router_attributes(sock: Path, vip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """What the router's BIRD knows of a VIP's route (its BGP attributes)."""
    reply = BirdControl(sock).command(f"show route {vip}/{vip.max_prefixlen} all")
    return "\n".join(text for _, text in reply)


def test_exabgp_announces_and_withdraws_to_a_bird_router(topology: Topology) -> None:
    router_sock = topology.bird(topology.router, "router", ROUTER_BIRD)
    announcer = ExaBgpAnnouncer(exabgp_settings(), topology.workdir / "exabgp")
    try:
        started = time.monotonic()
        with netns.enter(topology.node):
            announcer.start()
        state = eventually(announcer.state, lambda s: s.established(ROUTER_V4))
        assert state.established(ROUTER_V4), state
        _timed("ExaBGP started and session established", started)

        route = RouteAttributes(communities=("65000:7",), med=5)
        for vip in (VIP4, VIP6):
            started = time.monotonic()
            announcer.announce(vip, route)
            seen = eventually(lambda v=vip: topology.route(v), bool)
            _timed(f"announce {vip} -> router kernel route", started)
            assert seen and seen[0].get("gateway") in (NODE_V4, NODE_V6), seen
            attributes = router_attributes(router_sock, vip)
            assert "(65000,7)" in attributes and "BGP.med: 5" in attributes, attributes
        assert set(announcer.state().announced) == {VIP4, VIP6}

        started = time.monotonic()
        announcer.withdraw(VIP4)
        assert eventually(lambda: topology.route(VIP4), lambda r: not r) == []
        _timed(f"withdraw {VIP4} -> router kernel route gone", started)
        assert topology.route(VIP6), "withdrawing one VIP took the other one too"
        assert set(announcer.state().announced) == {VIP6}
    finally:
        announcer.close()
    assert eventually(lambda: topology.route(VIP6), lambda r: not r) == []


# The announcer's parent: a process of its own, so the test can kill -9 it.
PARENT = textwrap.dedent(
    """
    import ipaddress, pickle, sys
    from xlb.announce import ExaBgpAnnouncer
    settings, root, vip = pickle.loads(bytes.fromhex(sys.argv[1]))
    announcer = ExaBgpAnnouncer(settings, root)
    announcer.start()
    announcer.announce(vip)
    print(announcer.process.pid, flush=True)
    sys.stdin.read()  # until killed
    """
)


def test_exabgp_dies_with_its_parent_and_the_router_drops_the_route(
    topology: Topology,
) -> None:
    import pickle

    topology.bird(topology.router, "router", ROUTER_BIRD)
    arguments = pickle.dumps((exabgp_settings(), topology.workdir / "exabgp", VIP4)).hex()
    parent = netns.popen(
        topology.node,
        [sys.executable, "-c", PARENT, arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    topology.processes.append(parent)
    assert parent.stdout is not None
    exabgp_pid = int(parent.stdout.readline() or 0)
    assert exabgp_pid, "the parent did not start ExaBGP"
    assert eventually(lambda: topology.route(VIP4), bool), "the route never reached the router"

    started = time.monotonic()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    gone = eventually(lambda: not _alive(exabgp_pid), bool)
    died = _timed("kill -9 of the parent -> ExaBGP gone", started)
    assert gone, f"ExaBGP (pid {exabgp_pid}) outlived its parent"
    assert eventually(lambda: topology.route(VIP4), lambda r: not r) == []
    dropped = _timed("kill -9 of the parent -> router route gone", started)
    # Loose bounds: ExaBGP's own shutdown, on a busy machine. Hold time
    # is 3 s, so a route still there after it would mean the session was
    # not closed but timed out.
    assert died < 10 and dropped < 10


def test_bird_announcer_drives_the_node_bird(topology: Topology) -> None:
    router_sock = topology.bird(topology.router, "router", ROUTER_BIRD)
    include = topology.workdir / "xlb.conf"
    include.write_text("")
    node_socket = topology.bird(topology.node, "node", NODE_BIRD)
    settings = BgpSettings(
        local_as=NODE_AS,
        router_id=ipaddress.IPv4Address(NODE_V4),
        announcer="bird",
        bird_socket=node_socket,
        bird_include=include,
    )
    announcer = BirdAnnouncer(settings)
    announcer.start()
    state = eventually(announcer.state, lambda s: s.established("upstream"))
    assert state.established("upstream"), state

    route = RouteAttributes(communities=("65000:7",), med=5, local_pref=None)
    for vip in (VIP4, VIP6):
        started = time.monotonic()
        announcer.announce(vip, route)
        seen = eventually(lambda v=vip: topology.route(v), bool)
        _timed(f"BIRD announce {vip} -> router kernel route", started)
        assert seen and seen[0].get("gateway") in (NODE_V4, NODE_V6), seen
        # BIRD sends eBGP peers only a MED its export filter set (not the
        # static route's): the community is what gets through.
        attributes = router_attributes(router_sock, vip)
        assert "(65000,7)" in attributes, attributes

    started = time.monotonic()
    announcer.withdraw(VIP4)
    assert eventually(lambda: topology.route(VIP4), lambda r: not r) == []
    _timed(f"BIRD withdraw {VIP4} -> router route gone", started)
    assert topology.route(VIP6)

    announcer.close()
    assert eventually(lambda: topology.route(VIP6), lambda r: not r) == []
    assert "route" not in include.read_text().split("Do not edit.")[1]
