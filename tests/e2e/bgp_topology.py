"""A BGP router in namespaces for the e2e tests: BIRD 2 in a router
namespace, a node namespace beside it, a veth between them.

The router runs BIRD with `merge paths on` and a kernel protocol, so what
the node announces shows up in the router's kernel route table, which is
what the tests look at. Everything made here is removed at teardown, also
on failure. Used by test_bgp.py (the engines) and test_serve_bgp.py (the
daemon).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import waits

from xlb import host, netns
from xlb.announce import AnnounceError, BirdControl
from xlb.config import BgpSettings, Neighbor

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

# BFD on both ends (100 ms x 3) and a hold timer of 30 s: a frozen peer is
# noticed by BFD alone (the tests assert a bound far below the hold time).
BFD_PROTOCOL = """
protocol bfd {{
    interface "*" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }};
}}
"""
BFD_HOLD_TIME_S = 30
ROUTER_BIRD_BFD = (
    ROUTER_BIRD.replace("hold time 3;", f"hold time {BFD_HOLD_TIME_S};\n    bfd on;") + BFD_PROTOCOL
)
NODE_BIRD_BFD = (
    NODE_BIRD.replace("hold time 3;", f"hold time {BFD_HOLD_TIME_S};\n    bfd on;") + BFD_PROTOCOL
)


def eventually(observe: Any, ok: Any, timeout: float = DEADLINE_S) -> Any:
    """waits.eventually, polled every 5 ms: the BGP tests report route
    times in milliseconds."""
    return waits.eventually(observe, ok, timeout, every=0.005)


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


def _timed(what: str, started: float) -> float:
    elapsed = time.monotonic() - started
    print(f"\n  {what}: {elapsed * 1000:.1f} ms")
    return elapsed
