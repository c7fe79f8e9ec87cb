"""`xlb serve` announcing its VIPs to a real BIRD router (IPv4 and IPv6).

The router and the node are namespaces of the test's own (bgp_topology):
the daemon runs in the node namespace with its data plane on a veth there
(generic XDP) and ExaBGP as its child; what it announces is read from the
router's kernel route table. The checks are command checks on gate files
the test creates and removes:

- 10.100.0.1 and 2001:db8:77::1 pass once `gateA` exists and are never
  judged down (fall 1000): until then the daemon has no first health
  results, which must keep *everything* unannounced;
- 10.100.0.2 and 2001:db8:77::2 pass while `gate4` / `gate6` exist (fall 2):
  their reals go down and up.

Every wait is on a condition with a deadline loose enough for a busy
2-core machine; the figures are printed (pytest -s shows them).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.bgp_topology import (
    BFD_HOLD_TIME_S,
    DEADLINE_S,
    NODE_AS,
    NODE_BIRD,
    NODE_BIRD_BFD,
    NODE_V4,
    NODE_V6,
    ROUTER_AS,
    ROUTER_BIRD,
    ROUTER_BIRD_BFD,
    ROUTER_V4,
    Topology,
    _timed,
    eventually,
    topology,
)
from xlb import Balancer, Flow, host, netns
from xlb.config import find_exabgp
from xlb.control import ControlError, request, socket_path
from xlb.testing import GATEWAY_MAC, tcp_packet

__all__ = ["topology"]  # the fixture, used by name

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)"),
    pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (Debian bird2)"),
    pytest.mark.skipif(find_exabgp("exabgp") is None, reason="needs ExaBGP (the bgp extra)"),
]

XLB = str(Path(sys.executable).with_name("xlb"))
GATED = ("10.100.0.1", "2001:db8:77::1")  # no first results until gateA exists
FLAPPING = {"10.100.0.2": "gate4", "2001:db8:77::2": "gate6"}
EVERY_VIP = (*GATED, *FLAPPING)


def vip_key(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{host}:80/tcp"


class Node:
    """The daemon's side of the topology: a data-plane veth, its files."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.ns = topo.node
        self.dir = topo.workdir
        self.pin_dir = Path(f"/sys/fs/bpf/xlbt-serve-bgp-{os.getpid()}")
        self.config = self.dir / "lb.toml"
        self.control = socket_path(self.dir, "eth0")
        self.log = self.dir / "serve.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        netns.run(self.ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        for dev in ("eth0", "eth1"):
            netns.run(self.ns, ["ip", "link", "set", dev, "up"])
        netns.run(self.ns, ["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"])

    def gate(self, name: str) -> Path:
        return self.dir / name

    def write_config(
        self,
        bgp_extra: str = "",
        local_as: int = NODE_AS,
        bird: Path | None = None,
        vips: str | None = None,
        health: str = "interval = 0.2\ntimeout = 0.2\nrise = 1\nfall = 2",
    ) -> None:
        """`bird`: the node BIRD's socket (announcer "bird"), else ExaBGP;
        `vips`: [[vip]] tables instead of the module's gated ones."""
        if bird is not None:
            bgp_extra += f'announcer = "bird"\nbird_socket = "{bird}"\n'
            bgp_extra += f'bird_include = "{self.dir / "xlb.conf"}"\n'
        neighbors = (
            ""
            if bird is not None
            else f"""
[[bgp.neighbors]]
address = "{ROUTER_V4}"
as = {ROUTER_AS}
hold_time = 3
"""
        )
        text = f"""
[balancer]
interface = "eth0"
xdp_mode = "generic"
gateway_mac = "{GATEWAY_MAC}"
pin_dir = "{self.pin_dir}"
lock_dir = "{self.dir}"
metrics = "127.0.0.1:0"

[health]
{health}

[bgp]
local_as = {local_as}
router_id = "{NODE_V4}"
next_hop_v6 = "{NODE_V6}"
{bgp_extra}
{neighbors}"""
        if vips is not None:
            self.config.write_text(text + vips)
            return
        for index, address in enumerate(EVERY_VIP):
            gate = self.gate(FLAPPING.get(address, "gateA"))
            real = f"fd30::{index + 2}" if ":" in address else f"10.30.{index}.2"
            fall = "\nfall = 1000" if address in GATED else ""
            text += f"""
[[vip]]
address = "{address}"
port = 80

[[vip.reals]]
address = "{real}"

[vip.check]
type = "command"
command = ["test", "-e", "{gate}"]{fall}
"""
        self.config.write_text(text)

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            proc = netns.popen(
                self.ns,
                [XLB, "serve", str(self.config), "--log-format", "json"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.procs.append(proc)
        return proc

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        return request(self.control, op, timeout=10, **fields)

    def bgp(self) -> dict[str, Any]:
        state = self.ask("status")["bgp"]
        assert isinstance(state, dict)
        return state

    def xlb(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.ns}", XLB, *args, *self.where()],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def where(self) -> list[str]:
        return ["-i", "eth0", "--pin-dir", str(self.pin_dir), "--lock-dir", str(self.dir)]

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == name:
                    out.append(event)
        return out

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def cleanup(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                self.stop(proc)
        with netns.enter(self.ns), contextlib.suppress(Exception):
            Balancer(pin_dir=self.pin_dir).close(detach=True)
        shutil.rmtree(self.pin_dir, ignore_errors=True)


@pytest.fixture
def node(topology: Topology) -> Iterator[Node]:
    topology.bird(topology.router, "router", ROUTER_BIRD)
    n = Node(topology)
    try:
        yield n
    finally:
        n.cleanup()


@pytest.fixture
def bfd_node(topology: Topology) -> Iterator[Node]:
    """The node behind a router whose BGP session runs BFD (100 ms x 3)."""
    topology.bird(topology.router, "router", ROUTER_BIRD_BFD)
    n = Node(topology)
    try:
        yield n
    finally:
        n.cleanup()


def routed(topo: Topology, address: str) -> bool:
    return bool(topo.route(ipaddress.ip_address(address)))


def routes(topo: Topology) -> set[str]:
    """The VIPs the router has a kernel route to."""
    return {address for address in EVERY_VIP if routed(topo, address)}


def wait_until(what: str, condition: Callable[[], Any], proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        with contextlib.suppress(ControlError):
            value = condition()
            if value:
                return value
        assert proc.poll() is None, f"xlb serve exited ({proc.returncode}) waiting for {what}"
        assert time.monotonic() < deadline, f"not {what} within {DEADLINE_S}s"
        time.sleep(0.02)


def wait_routes(node: Node, wanted: set[str], proc: subprocess.Popen[bytes]) -> float:
    """Until the router routes exactly `wanted`; seconds it took."""
    started = time.monotonic()
    seen = wait_until(f"routes {sorted(wanted)}", lambda: routes(node.topo) == wanted, proc)
    assert seen
    return time.monotonic() - started


def reals_probed(node: Node) -> bool:
    """Every check has run: the gated reals failed twice, the others passed."""
    vips = node.ask("health")["vips"]
    for address in EVERY_VIP:
        (real,) = vips[vip_key(address)]["reals"].values()
        done = real["probes_failed"] >= 2 if address in GATED else real["probes_ok"] >= 1
        if not done:
            return False
    return True


@contextlib.contextmanager
def data_plane(node: Node) -> Iterator[Balancer]:
    """The daemon's data plane, adopted: its program over its pinned maps
    (connection table, counters), packets run through it with
    BPF_PROG_TEST_RUN."""
    with netns.enter(node.ns):
        lb = Balancer(pin_dir=node.pin_dir)
    try:
        yield lb
    finally:
        lb.close(detach=False)


HELD = (Flow("198.51.100.7", "10.100.0.1", 41000, 80, "tcp"),
        Flow("2001:db8:5::7", "2001:db8:77::1", 41000, 80, "tcp"))  # fmt: skip


def send(lb: Balancer, flow: Flow, flags: str) -> str:
    packet = tcp_packet(flow.src, flow.dst, flow.sport, flow.dport, flags=flags)
    return str(lb.run(packet).action)


def metrics_text(node: Node) -> str:
    url = node.ask("status")["metrics_url"]
    with netns.enter(node.ns), urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())


# -------------------------------------------------------------------- tests


def test_announces_after_first_results_follows_health_and_drains(node: Node) -> None:
    for gate in FLAPPING.values():
        node.gate(gate).touch()
    node.write_config()
    proc = node.start()

    # Session up, every check run, the flapping VIPs healthy: still nothing
    # announced, because the gated reals have no first result yet.
    wait_until("the session established", lambda: node.bgp()["neighbors"] == {
        ROUTER_V4: "established"}, proc)  # fmt: skip
    wait_until("every check run", lambda: reals_probed(node), proc)
    bgp = node.bgp()
    assert not node.ask("status")["ready"]
    assert bgp["announced"] == [] and not any(bgp["vips"].values()), bgp
    assert routes(node.topo) == set()
    assert node.events("announced") == []

    started = time.monotonic()
    node.gate("gateA").touch()
    wait_routes(node, set(EVERY_VIP), proc)
    _timed("first results -> every VIP routed at the router", started)
    assert all(node.bgp()["vips"].values())

    # All reals of one VIP down -> withdrawn; back up -> announced (v4, v6).
    for address, gate in FLAPPING.items():
        started = time.monotonic()
        node.gate(gate).unlink()
        wait_routes(node, set(EVERY_VIP) - {address}, proc)
        _timed(f"{address}'s real down -> withdrawn at the router", started)
        assert node.bgp()["vips"][vip_key(address)] is False
        node.gate(gate).touch()
        wait_routes(node, set(EVERY_VIP), proc)

    text = metrics_text(node)
    assert 'xlb_bgp_vip_announced{vip="10.100.0.2:80/tcp"} 1.0' in text, text
    assert f'xlb_bgp_session_established{{neighbor="{ROUTER_V4}",state="established"}} 1.0' in text

    # Held connections: in the connection table before the drain.
    with data_plane(node) as lb:
        for flow in HELD:
            assert send(lb, flow, "S") == "XDP_TX" and send(lb, flow, "A") == "XDP_TX"

    # Drain: every route gone at the router, the data plane still serving.
    started = time.monotonic()
    drain = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{node.ns}", XLB, "node", "drain",
         "--timeout", "20", "--quiet", "1", "--json", *node.where()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def withdrawn() -> bool:
            assert drain.poll() in (None, 0), drain.communicate()
            return routes(node.topo) == set()

        wait_until("every route withdrawn", withdrawn, proc)
        _timed("xlb node drain -> every route gone at the router", started)
        out, err = drain.communicate(timeout=60)
    finally:
        if drain.poll() is None:
            drain.kill()
            drain.wait()
    assert drain.returncode == 0, (out, err)
    answer = json.loads(out)
    assert answer["drained"] and answer["bgp"]["draining"], answer
    print(f"\n  drain answer: withdrawn in {answer['withdrawn_s'] * 1000:.1f} ms, "
          f"waited {answer['waited_s']} s")  # fmt: skip
    with data_plane(node) as lb:  # the held flows go on, from the table
        before = lb.counters()
        for flow in HELD:
            assert send(lb, flow, "A") == "XDP_TX"
        after = lb.counters()
    assert after["conn_hit"] - before["conn_hit"] == len(HELD), (before, after)
    assert after["conn_miss"] == before["conn_miss"]
    assert_new_flows_keep_a_drain_waiting(node)
    listed = json.loads(node.xlb("list", "--json").stdout)
    assert {v["address"] for v in listed["vips"]} == set(EVERY_VIP), listed
    assert listed["bgp"]["draining"] and not any(listed["bgp"]["vips"].values())
    health = node.ask("health")["vips"]
    assert all(health[vip_key(a)]["healthy"] for a in EVERY_VIP), health
    # Health flips while drained announce nothing.
    node.gate("gate4").unlink()
    wait_until("10.100.0.2 unhealthy", lambda: not node.ask("health")["vips"][
        vip_key("10.100.0.2")]["healthy"], proc)  # fmt: skip
    node.gate("gate4").touch()
    assert routes(node.topo) == set()

    text = node.xlb("node", "status").stdout
    assert "DRAINED" in text and "withdrawn" in text, text
    started = time.monotonic()
    undrain = node.xlb("node", "undrain")
    assert undrain.returncode == 0, undrain.stderr
    wait_routes(node, set(EVERY_VIP), proc)
    _timed("xlb node undrain -> every route back", started)
    assert node.stop(proc) == 0


def test_restart_announces_again_and_bgp_reloads(node: Node) -> None:
    for gate in ("gateA", *FLAPPING.values()):
        node.gate(gate).touch()
    node.write_config()
    proc = node.start()
    wait_routes(node, set(EVERY_VIP), proc)

    # A bad [bgp] on reload: refused, nothing changes (same session, routes).
    good = node.config.read_text()
    node.write_config(local_as=0)
    proc.send_signal(signal.SIGHUP)
    wait_until("the reload refused", lambda: (node.ask("status")["last_reload"] or {}).get(
        "result") == "rejected", proc)  # fmt: skip
    errors = node.ask("status")["last_reload"]["errors"]
    assert any("bgp.local_as" in e for e in errors), errors
    assert node.events("bgp_stopped") == [] and len(node.events("bgp_started")) == 1
    assert routes(node.topo) == set(EVERY_VIP)
    assert node.bgp()["neighbors"] == {ROUTER_V4: "established"}

    # A changed [bgp] (another min_healthy): the engine restarts, routes return.
    node.config.write_text(good.replace("[bgp]\n", "[bgp]\nmin_healthy = 1\n", 1).replace(
        "hold_time = 3", "hold_time = 4"))  # fmt: skip
    proc.send_signal(signal.SIGHUP)
    wait_until("the engine restarted", lambda: len(node.events("bgp_started")) == 2, proc)
    wait_routes(node, set(EVERY_VIP), proc)
    assert node.ask("status")["last_reload"]["result"] == "applied"

    # A [bgp] whose engine cannot start (an "ExaBGP" that exits at once):
    # refused; the running settings' engine is back and announces again.
    applied = node.config.read_text()
    node.config.write_text(applied.replace("[bgp]\n", '[bgp]\nexabgp = "/bin/false"\n', 1))
    proc.send_signal(signal.SIGHUP)
    wait_until("the reload refused", lambda: len(node.events("reload_rejected")) == 2, proc)
    errors = node.ask("status")["last_reload"]["errors"]
    assert any("ExaBGP exited" in e for e in errors), errors
    wait_routes(node, set(EVERY_VIP), proc)
    assert node.bgp()["vips"] == {vip_key(a): True for a in EVERY_VIP}
    node.config.write_text(applied)

    # Stop: ExaBGP ends with the daemon, the router drops every route.
    started = time.monotonic()
    assert node.stop(proc) == 0
    wait_routes_gone = eventually(lambda: routes(node.topo), lambda r: not r)
    assert wait_routes_gone == set()
    _timed("SIGTERM -> every route gone at the router", started)

    # Restarted: announces again (after its first results).
    started = time.monotonic()
    proc = node.start()
    wait_routes(node, set(EVERY_VIP), proc)
    _timed("restart -> every VIP routed again", started)
    announced = node.events("announced")
    ready = node.events("ready")
    assert ready and announced, "no ready/announced event after the restart"
    assert node.stop(proc) == 0


def assert_new_flows_keep_a_drain_waiting(node: Node) -> None:
    """New flows arriving all along: the drain answers "not drained" at its
    timeout (exit 1) and counts them."""
    stop = threading.Event()

    def new_flows() -> None:
        with data_plane(node) as lb:
            for port in range(20000, 60000):
                if stop.wait(0.05):
                    return
                send(lb, Flow("198.51.100.9", "10.100.0.2", port, 80, "tcp"), "S")

    feeder = threading.Thread(target=new_flows, daemon=True)
    feeder.start()
    try:
        drain = node.xlb("node", "drain", "--timeout", "3", "--quiet", "1", "--json")
    finally:
        stop.set()
        feeder.join(10)
    assert drain.returncode == 1, (drain.stdout, drain.stderr)
    answer = json.loads(drain.stdout)
    assert not answer["drained"] and answer["new_flows"] > 0, answer


# `Service(..., drain_on_stop=True).run()`: the daemon as `xlb serve` runs it
# (the config reader has no [bgp] drain_on_stop key yet).
DRAINING_DAEMON = (
    "import logging, sys; from xlb.service import Service, _setup_logging; "
    "_setup_logging('json', 'info'); Service(sys.argv[1], drain_on_stop=True).run()"
)


def test_sigterm_with_drain_on_stop_withdraws_and_waits_before_exiting(node: Node) -> None:
    for gate in ("gateA", *FLAPPING.values()):
        node.gate(gate).touch()
    node.write_config()
    with open(node.log, "ab") as log:
        proc = netns.popen(
            node.ns, [sys.executable, "-c", DRAINING_DAEMON, str(node.config)],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    node.procs.append(proc)
    wait_routes(node, set(EVERY_VIP), proc)

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # Withdrawn while the daemon still runs (it waits for a quiet data plane).
    gone = eventually(lambda: (routes(node.topo), proc.poll()), lambda s: not s[0])
    assert gone == (set(), None), gone
    _timed("SIGTERM (drain_on_stop) -> every route gone, daemon still running", started)
    assert proc.wait(timeout=DEADLINE_S) == 0
    _timed("SIGTERM (drain_on_stop) -> daemon exited", started)
    (drained,) = node.events("drained")
    (stopped,) = node.events("stopped")
    assert drained["time"] <= stopped["time"]


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def exabgp_pid(proc: subprocess.Popen[bytes]) -> int | None:
    """The daemon's ExaBGP child (the daemon is nsenter's child or itself):
    the child one of whose arguments is a file named exabgp (the program,
    or the script an interpreter runs). Not any child whose command line
    says "exabgp": this test's directory does, and with it every health
    check's command reading a gate file there."""
    for pid in [proc.pid, *children(proc.pid)]:
        for child in children(pid):
            with contextlib.suppress(OSError):
                args = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if any(Path(os.fsdecode(arg)).name == "exabgp" for arg in args):
                    return child
    return None


def test_a_killed_exabgp_is_started_again_and_announces(node: Node) -> None:
    for gate in ("gateA", *FLAPPING.values()):
        node.gate(gate).touch()
    node.write_config()
    proc = node.start()
    wait_routes(node, set(EVERY_VIP), proc)
    pid = wait_until("ExaBGP found", lambda: exabgp_pid(proc), proc)

    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_until("the engine restarted", lambda: node.events("bgp_engine_died"), proc)
    wait_routes(node, set(EVERY_VIP), proc)
    _timed("kill -9 of ExaBGP -> restarted, every VIP routed again", started)
    new = exabgp_pid(proc)
    assert new is not None and new != pid
    assert node.ask("status")["counters"]["bgp_engine_restarts"] == 1
    assert node.stop(proc) == 0


def test_bird_on_the_node_announces_follows_health_and_drains(node: Node) -> None:
    """announcer = "bird": the daemon writes the node BIRD's include."""
    (node.dir / "xlb.conf").write_text("")
    bird = node.topo.bird(node.ns, "node", NODE_BIRD)
    for gate in FLAPPING.values():
        node.gate(gate).touch()
    node.write_config(bird=bird)
    proc = node.start()
    wait_until("the session established", lambda: node.bgp()["neighbors"].get(
        "upstream") == "established", proc)  # fmt: skip
    wait_until("every check run", lambda: reals_probed(node), proc)
    assert routes(node.topo) == set() and node.bgp()["announced"] == []

    node.gate("gateA").touch()
    wait_routes(node, set(EVERY_VIP), proc)
    node.gate("gate6").unlink()
    wait_routes(node, set(EVERY_VIP) - {"2001:db8:77::2"}, proc)
    node.gate("gate6").touch()
    wait_routes(node, set(EVERY_VIP), proc)

    started = time.monotonic()
    drain = node.xlb("node", "drain", "--timeout", "20", "--quiet", "1")
    assert drain.returncode == 0, drain.stderr
    wait_routes(node, set(), proc)
    _timed("BIRD: xlb node drain answered -> every route gone", started)
    assert node.xlb("node", "undrain").returncode == 0
    wait_routes(node, set(EVERY_VIP), proc)

    assert node.stop(proc) == 0  # the include is emptied: BIRD withdraws
    assert eventually(lambda: routes(node.topo), lambda r: not r) == set()


#: A frozen node is dropped by BFD in ~0.3 s (100 ms x 3; bench/failover.py
#: reports it); the hold timer would take BFD_HOLD_TIME_S (30 s). Loose
#: enough never to flake on a busy machine, far below the hold timer.
BFD_DROP_BOUND_S = 5.0
assert BFD_DROP_BOUND_S < BFD_HOLD_TIME_S / 3


def test_bfd_drops_a_frozen_node_long_before_the_hold_timer(bfd_node: Node) -> None:
    """announcer = "bird", BFD on the node's session: the node freezes
    (SIGSTOP of its BIRD and its daemon, no TCP close, no withdraw) and the
    router drops its routes within BFD's detection time."""
    node = bfd_node
    (node.dir / "xlb.conf").write_text("")
    bird = node.topo.bird(node.ns, "node", NODE_BIRD_BFD)
    node.gate("gateA").touch()
    for gate in FLAPPING.values():
        node.gate(gate).touch()
    node.write_config(bird=bird)
    proc = node.start()
    wait_routes(node, set(EVERY_VIP), proc)
    node_bird = node.topo.processes[-1]
    frozen = [node_bird.pid, proc.pid]
    started = time.monotonic()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        gone = eventually(lambda: routes(node.topo), lambda r: not r)
        dropped_s = time.monotonic() - started
        assert gone == set(), f"the router still routes {gone}"
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert dropped_s < BFD_DROP_BOUND_S, f"a frozen node dropped after {dropped_s:.2f} s"
    print(
        f"\n  BFD 100 ms x 3: frozen node -> router without its routes: {dropped_s * 1000:.0f} ms"
    )
    assert node.stop(proc) == 0


def test_a_vip_back_from_every_real_down_waits_for_the_others(node: Node) -> None:
    """A VIP with two reals, both down: when one passes its check again the
    VIP is healthy, but it is announced only once the other had time to
    come back too (rise x interval + timeout), so the routers bring flows
    back to a complete ring, the one the other nodes have. The wait is
    bounded: a real that stays down does not keep the VIP unannounced."""
    interval, timeout = 1.0, 1.0
    settle = interval + timeout  # rise 1
    vips = f"""
[[vip]]
address = "{GATED[0]}"
port = 80
"""
    for index in (1, 2):
        vips += f"""
[[vip.reals]]
address = "10.30.9.{index}"
"""
    vips += f"""
[vip.check]
type = "command"
command = ["test", "-e", "{node.dir}/real-{{real}}"]
"""
    node.write_config(
        vips=vips, health=f"interval = {interval}\ntimeout = {timeout}\nrise = 1\nfall = 1"
    )
    proc = node.start()
    wait_until("every real judged down", lambda: reals_down(node) == 2, proc)
    assert routes(node.topo) == set()

    # One real back, the other still down: unannounced while the other could
    # still come back, measured from the daemon's own time of the VIP's
    # return (its log), so a slow test cannot blame the daemon for its delay.
    node.gate("real-10.30.9.1").touch()
    healthy_at = wait_until("the VIP healthy", lambda: node.events("vip_healthy"), proc)[-1]["time"]
    while time.time() < healthy_at + settle * 0.8:
        assert routes(node.topo) == set(), "announced at the first real up"
        assert proc.poll() is None
        time.sleep(0.02)
    wait_routes(node, {GATED[0]}, proc)  # then announced with the one it has
    assert serving(node) == ["10.30.9.1"]

    # Every real down again, then both back at once: their checks run at
    # different moments, yet the route comes with the whole ring.
    node.gate("real-10.30.9.1").unlink()
    wait_until("every real judged down", lambda: reals_down(node) == 2, proc)
    wait_routes(node, set(), proc)
    for index in (1, 2):
        node.gate(f"real-10.30.9.{index}").touch()
    wait_routes(node, {GATED[0]}, proc)
    assert serving(node) == ["10.30.9.1", "10.30.9.2"]
    assert node.stop(proc) == 0


def serving(node: Node) -> list[str]:
    """The addresses of the reals the node's data plane sends flows to."""
    with data_plane(node) as lb:
        return sorted(str(r.address) for r in lb.reals(lb.vips()[0]) if r.weight > 0)


def reals_down(node: Node) -> int:
    vips = node.ask("health")["vips"]
    return sum(1 for vip in vips.values() for r in vip["reals"].values() if r["state"] == "down")


def test_a_daemon_started_before_its_router_announces_once_the_session_is_up(
    topology: Topology,
) -> None:
    """The router is not there when `xlb serve` starts (its address is not
    up): ExaBGP refuses routes with `next-hop self` while it has no local
    address towards the neighbour, so the first announcement fails; it is
    tried again at every session refresh, and the VIPs reach the router
    once it runs (seen failing without the retry: never announced)."""
    node = Node(topology)
    router_address = [f"{ROUTER_V4}/24", "dev", "r0"]
    host.ip("addr", "del", *router_address, ns=topology.router)  # not there yet
    try:
        for gate in ("gateA", *FLAPPING.values()):
            node.gate(gate).touch()
        node.write_config()  # IPv4 next hop: "self"
        proc = node.start()
        wait_until("the first health results", lambda: node.bgp()["announcing"], proc)
        assert wait_until("an announcement refused", lambda: node.events("announce_failed"), proc)
        host.ip("addr", "add", *router_address, ns=topology.router)
        topology.bird(topology.router, "router", ROUTER_BIRD)
        wait_routes(node, set(EVERY_VIP), proc)
        assert node.stop(proc) == 0
    finally:
        node.cleanup()
