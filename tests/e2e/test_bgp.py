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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xlb import host, netns
from xlb.announce import AnnounceError, BirdAnnouncer, BirdControl, ExaBgpAnnouncer
from xlb.config import BgpSettings, Neighbor, RouteAttributes, find_exabgp

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)"),
    pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (Debian bird2)"),
    pytest.mark.skipif(find_exabgp("exabgp") is None, reason="needs ExaBGP (the bgp extra)"),
]

DEADLINE_S = 30.0
ROUTER_AS, NODE_AS = 65000, 65001
ROUTER_V4, NODE_V4 = "10.77.0.254", "10.77.0.1"
ROUTER_V6, NODE_V6 = "fd77::fe", "fd77::1"
VIP4 = ipaddress.ip_address("10.100.0.1")
VIP6 = ipaddress.ip_address("2001:db8:77::1")

ROUTER_BIRD = """
router id {router_v4};
log "{log}" all;
protocol device {{ }}
protocol kernel k4 {{ ipv4 {{ export all; }}; merge paths on; }}
protocol kernel k6 {{ ipv6 {{ export all; }}; merge paths on; }}
protocol bgp node {{
    local {router_v4} as {router_as};
    neighbor {node_v4} as {node_as};
    hold time 3;
    connect retry time 1;
    ipv4 {{ import all; export none; }};
    ipv6 {{ import all; export none; }};
}}
"""

# The node's own BIRD (BirdAnnouncer): its static routes come from xlb's include.
NODE_BIRD = """
router id {node_v4};
log "{log}" all;
protocol device {{ }}
include "{include}";
protocol bgp upstream {{
    local {node_v4} as {node_as};
    neighbor {router_v4} as {router_as};
    hold time 3;
    connect retry time 1;
    ipv4 {{ import none; export where proto = "xlb_vips4"; next hop self; }};
    ipv6 {{ import none; export where proto = "xlb_vips6"; next hop address {node_v6}; }};
}}
"""


def eventually(observe: Any, ok: Any, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        seen = observe()
        if ok(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.005)


@dataclass
class Topology:
    router: str
    node: str
    workdir: Path
    processes: list[subprocess.Popen[bytes]]

    def bird(self, ns: str, name: str, config: str) -> Path:
        """Start BIRD in `ns` (foreground, killed at teardown); its socket."""
        conf = self.workdir / f"{name}.conf"
        sock = self.workdir / f"{name}.ctl"
        log = self.workdir / f"{name}.log"
        conf.write_text(config.format(log=log, **ADDRESSES, include=self.workdir / "xlb.conf"))
        cmd = ["bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(self.workdir / name)]
        process = netns.popen(ns, cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.processes.append(process)
        up = eventually(lambda: _answers(sock) or process.poll() is not None, bool)
        assert up and process.poll() is None, f"BIRD {name} did not start: {_stderr(process)}"
        return sock

    def route(self, vip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[dict[str, Any]]:
        """The router's kernel routes to a VIP."""
        return host.routes(f"{vip}/{vip.max_prefixlen}", family=vip.version, ns=self.router)


ADDRESSES = {
    "router_v4": ROUTER_V4,
    "node_v4": NODE_V4,
    "node_v6": NODE_V6,
    "router_as": ROUTER_AS,
    "node_as": NODE_AS,
}


def _answers(sock: Path) -> bool:
    try:
        BirdControl(sock, timeout=2).command("show status")
    except AnnounceError:
        return False
    return True


def _stderr(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None or process.stderr is None:
        return ""
    return process.stderr.read().decode(errors="replace")


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    # Not `xlbl-*`: that is the lab's prefix, and a parallel lab run's
    # cleanup would take these for its own leftovers.
    router, node = f"xbgp{os.getpid()}r", f"xbgp{os.getpid()}n"
    topo = Topology(router, node, tmp_path, [])
    try:
        for ns in (router, node):
            netns.create(ns)
        host.ip("link", "add", "r0", "type", "veth", "peer", "name", "n0", ns=router)
        host.ip("link", "set", "n0", "netns", node, ns=router)
        for ns, dev, v4, v6 in (
            (router, "r0", ROUTER_V4, ROUTER_V6),
            (node, "n0", NODE_V4, NODE_V6),
        ):
            host.ip("addr", "add", f"{v4}/24", "dev", dev, ns=ns)
            host.ip("addr", "add", f"{v6}/64", "dev", dev, "nodad", ns=ns)
            host.ip("link", "set", dev, "up", ns=ns)
        yield topo
    finally:
        for process in topo.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for ns in (router, node):
            netns.delete(ns)


def exabgp_settings(**overrides: Any) -> BgpSettings:
    values: dict[str, Any] = {
        "local_as": NODE_AS,
        "router_id": ipaddress.IPv4Address(NODE_V4),
        "neighbors": (Neighbor(ipaddress.ip_address(ROUTER_V4), ROUTER_AS, hold_time=3),),
        "next_hop_v6": ipaddress.IPv6Address(NODE_V6),
    }
    return BgpSettings(**(values | overrides))


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: PID 1 of this machine may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _timed(what: str, started: float) -> float:
    elapsed = time.monotonic() - started
    print(f"\n  {what}: {elapsed * 1000:.1f} ms")
    return elapsed


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
