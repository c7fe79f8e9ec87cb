"""The network-namespace lab: clients, a balancer and reals on one machine.

    from xlb.lab import Lab

    with Lab(reals=4) as lab:                  # routed, native XDP, IPv4 + IPv6
        services = lab.add_default_services()  # TCP 80 + UDP 7 on lab.vip4 and lab.vip6
        replies = lab.client.http_get(lab.vip4, count=200)
        print(replies.by_real())               # Counter({'real3': 55, 'real1': 52, ...})
        print(lab.balancer.counters(), lab.decap_counters())

Topology (every link carries IPv4 and IPv6):

  routed   client(s) --- router --- balancer(s)      VIP routes on the router point
                           |------- real1..N         at the balancer(s): one ECMP
                                                     route over every announced
                                                     balancer node; each balancer
                                                     sends encapsulated packets back
                                                     to the router's MAC (gateway)
  bridged  client(s), balancer, reals on one bridge; the client routes the
           VIPs to the balancer, which sends to each real's MAC directly.

Each balancer node (an `xlb.Balancer` in its namespace, pinned under its own
directory; `lab.balancer` is the first node's) XDP_TXes encapsulated packets
out of its only interface; each real strips them with `xlb.decap.Decap`, has
the VIPs on loopback, runs the lab server (xlb/lab/server.py) and answers
the client directly (direct server return).

Several balancer nodes (`Lab(balancers=N)`, routed only) are what operators
run behind routers doing ECMP (see docs/ecmp.md):

    with Lab(reals=3, balancers=2) as lab:
        lab.add_default_services()             # programs every node the same way
        lab.balancers_do(lambda lb: lb.set_weight(vip, addr, 2))   # any change, every node
        lab.withdraw("lb1")                    # the router's ECMP routes drop lb1 (BGP withdraw)
        lab.kill_data_plane("lb1")             # detach its XDP (or how="link-down")
        lab.restore_data_plane("lb1")          # a fresh Balancer, configured like its peers
        lab.announce("lb1")                    # back into the ECMP routes

`router` says who makes the router's VIP routes (xlb/lab/routers.py):

    Lab(balancers=2)                  # "static": the lab writes the ECMP route
    Lab(balancers=2, router="bird")   # BIRD in the router, BGP to ExaBGP on
                                      # every node: withdraw/announce go through
                                      # ExaBGP, BIRD installs the ECMP route;
                                      # lab.crash_node("lb1"): ExaBGP -9 + detach
    Lab(balancers=2, router="vrrp")   # keepalived on both nodes (one shared
                                      # segment), a static route to the floating
                                      # next hop; lab.fail_over() kills the
                                      # active node's keepalived and blackholes it
    Lab(balancers=2, router="bird", serve=True)   # no data plane or speaker
                                      # of the lab's: lab.start_serve("lb1")
                                      # runs `xlb serve` on the node, as
                                      # operators do (xlb/lab/serving.py)

The router hashes on the L4 5-tuple (fib_multipath_hash_policy=1, IPv4 and
IPv6), so the client's flows to one VIP spread over the nodes by port.

Things this kernel needs (each found the hard way, each handled here):
- native XDP_TX on a veth reaches the peer only if the peer runs an XDP
  program (NAPI mode; GRO alone loses frames): hub ports facing a balancer
  get bpf/pass.bpf.c;
- packets that reach native XDP must carry complete checksums: TX checksum
  offload is turned off on every lab veth (else reals see bad TCP checksums);
- links from the balancer to the reals have room for the outer header
  (`server_mtu`, 1600 by default, clients keep 1500);
- veths get one queue per CPU before XDP is attached;
- `ip netns exec` remounts /sys and hides bpffs pins: everything here uses
  xlb.netns (setns of one thread, or nsenter --net);
- the router's default multipath hash is L3 only (every flow of one client
  to one VIP takes the same node) and, for IPv6, includes the flow label,
  which the client's kernel re-rolls after a TCP retransmission timeout
  (net.core.txrehash: a flow could hop nodes by itself): the router hashes
  L4 instead;
- taking a balancer's link down deletes its IPv6 addresses and its routes:
  bringing it back re-adds them (`restore_data_plane`).

Everything a lab creates is recorded in its state file before it is
created (its daemons, BIRD, ExaBGP and keepalived, right after: they run in
the lab's namespaces, whose processes a cleanup kills anyway; they also die
with the lab's process); `Lab.close()` (context manager,
SIGTERM/SIGINT/SIGHUP, interpreter exit) removes it all, and
`python -m xlb.lab cleanup` what a crashed run left (xlb/lab/state.py).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TypeVar

from .. import host, netns
from .._bpf import BpfObject, XdpLink, XdpMode
from ..announce import AnnounceError, BirdControl, ExaBgpAnnouncer, die_with_parent
from ..balancer import RING_SIZE_DEFAULT, Balancer
from ..config import BgpSettings, Neighbor
from ..decap import Decap, DecapMode
from ..errors import ConfigError, XlbError
from ..model import (
    SECOND_CHANCE_DEFAULT_S,
    BalancerConfig,
    IPAddress,
    IPNetwork,
    Real,
    Vip,
    VipFlags,
)
from .nodes import BalancerNode, ClientNode, KillHow, RealNode
from .routers import (
    FLOATING_V4,
    FLOATING_V6,
    HOLD_TIME_S,
    NODE_AS,
    NOTIFY_SCRIPT,
    ROUTER_AS,
    ROUTER_KINDS,
    VRRP_PREFIX4,
    VRRP_PREFIX6,
    VRRP_PRIORITIES,
    OwnerThread,
    RouterKind,
    bird_router_config,
    keepalived_config,
    route_hops,
)
from .serving import NodeSettings, ServeDaemon, serve_config
from .state import (
    LAB_PREFIX,
    LABSERVER,
    PIN_ROOT,
    STATE_DIR,
    kill_pids,
    pids_in_netns,
    private_dir,
    private_file,
    proc_start_time,
    process_name,
    remove_state,
)

log = logging.getLogger("xlb.lab")

PASS_OBJECT = Path(__file__).resolve().parents[1] / "_bpf_objects" / "pass.bpf.o"
PASS_PROGRAM = "xlb_pass"

Topology = Literal["routed", "bridged"]
TOPOLOGIES: tuple[Topology, ...] = ("routed", "bridged")
Family = Literal[4, 6]

DEFAULT_VIP4 = ipaddress.IPv4Address("10.100.0.1")
DEFAULT_VIP6 = ipaddress.IPv6Address("fd00:100::1")
#: Source ports below this are never ephemeral in a lab client: callers may
#: pick them to replay the same 5-tuple (see `ClientNode.http_get(sports=...)`).
FIXED_SPORT_BASE = 10000
EPHEMERAL_PORTS = "32768 60999"

T = TypeVar("T")

_KIND_CODE = {"client": 1, "lb": 2, "real": 3}

#: router="vrrp": the balancers' shared segment, a bridge in the router namespace.
VRRP_BRIDGE = "lbs"
VRRP_GW4 = ipaddress.IPv4Address("10.20.0.1")
VRRP_GW6 = ipaddress.IPv6Address("fd00:20::1")
#: How long the lab waits for a routing engine (BGP session, VRRP election).
ROUTER_DEADLINE_S = 30.0


class Lab:
    """Build a lab of network namespaces, always tear it down (see module doc).

    reals / clients / balancers: how many of each. Several balancers need
        the routed topology: the router spreads each VIP over them with one
        ECMP route (L4 hash); every lab helper that configures the balancer
        configures every node the same way (`balancers_do`).
    topology: "routed" (through a router namespace, the balancer sends to
        the router's MAC) or "bridged" (one L2 segment, the balancer sends to
        each real's MAC).
    xdp_mode: the balancer's attach mode; decap_mode: the reals' ("native",
        "generic" XDP or "tc").
    tcp_port / udp_port: where the lab servers listen (the default services).
    server_mtu: MTU of the links the balancer and the reals are on.
    router: "static" (the lab's own routes), "bird" (BGP: BIRD in the
        router, ExaBGP on each node) or "vrrp" (two nodes, keepalived, a
        floating next hop); routed topology only.
    serve: the balancer nodes are run by `xlb serve` daemons the caller
        starts (`start_serve`, xlb/lab/serving.py): the lab opens no
        Balancer and, with router="bird", runs no BGP speaker of its own.
    """

    def __init__(
        self,
        *,
        reals: int = 4,
        clients: int = 1,
        balancers: int = 1,
        topology: Topology = "routed",
        xdp_mode: XdpMode = "native",
        decap_mode: DecapMode = "native",
        vip4: str | ipaddress.IPv4Address = DEFAULT_VIP4,
        vip6: str | ipaddress.IPv6Address = DEFAULT_VIP6,
        tcp_port: int = 80,
        udp_port: int = 7,
        server_mtu: int = 1600,
        balancer_config: BalancerConfig | None = None,
        name: str | None = None,
        router: RouterKind = "static",
        serve: bool = False,
    ) -> None:
        if topology not in TOPOLOGIES:
            raise ConfigError(f"invalid topology {topology!r}: one of {', '.join(TOPOLOGIES)}")
        if not 1 <= reals <= 200 or not 1 <= clients <= 200:
            raise ConfigError("a lab has 1-200 reals and 1-200 clients")
        if not 1 <= balancers <= 254:
            raise ConfigError("a lab has 1-254 balancers")
        if balancers != 1 and topology != "routed":
            raise ConfigError(
                f"a {topology} lab has one balancer: several balancer nodes need the "
                "routed topology, where the router spreads the VIPs over them (ECMP)"
            )
        if router not in ROUTER_KINDS:
            raise ConfigError(f"invalid router {router!r}: one of {', '.join(ROUTER_KINDS)}")
        if router != "static" and topology != "routed":
            raise ConfigError(f"router={router!r} needs the routed topology")
        if router == "vrrp" and balancers != 2:
            raise ConfigError("router='vrrp' is an active/backup pair: balancers=2")
        self.topology: Topology = topology
        self.router: RouterKind = router
        self.serve = serve
        #: serve=True: the `xlb serve` daemon of each node (by role) once started.
        self.daemons: dict[str, ServeDaemon] = {}
        self.xdp_mode: XdpMode = xdp_mode
        self.decap_mode: DecapMode = decap_mode
        self.vip4 = ipaddress.IPv4Address(vip4)
        self.vip6 = ipaddress.IPv6Address(vip6)
        self.tcp_port = tcp_port
        self.udp_port = udp_port
        self.server_mtu = server_mtu
        self._n_reals, self._n_clients, self._n_balancers = reals, clients, balancers
        self._balancer_config = balancer_config
        self.name = name or ""
        self._requested_name = name
        self.hub = ""
        self.clients: list[ClientNode] = []
        self.balancers: list[BalancerNode] = []
        self.reals: list[RealNode] = []
        #: Roles of the balancer nodes in the router's VIP routes (all, until withdrawn).
        self.announced: set[str] = set()
        #: Prefixes of prefix VIPs (`add_prefix_service`), routed like vip4 and vip6.
        self.prefixes: list[IPNetwork] = []
        self._pass_obj: BpfObject | None = None
        #: Starts the daemons that die with the lab (BIRD, ExaBGP, keepalived).
        self._owner: OwnerThread | None = None
        self._daemons: list[subprocess.Popen[bytes]] = []
        self.bird_socket: Path | None = None
        #: The measured time of the last `fail_over()` (kill -> next hop moved).
        self.last_fail_over_s: float | None = None
        self._pass_links: list[XdpLink] = []
        #: Processes of `start_real_process` (stopped with the lab servers).
        self._extra_processes: list[subprocess.Popen[bytes]] = []
        self._state: dict[str, Any] = {}
        self._started = False
        self._closed = False
        self._old_handlers: dict[signal.Signals, Any] = {}
        self.setup_seconds = 0.0

    # ------------------------------------------------------------- naming

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"{self.name}.json"

    @property
    def run_dir(self) -> Path:
        return STATE_DIR / self.name

    @property
    def pin_root(self) -> Path:
        return PIN_ROOT / self.name

    def _claim_name(self) -> None:
        private_dir(STATE_DIR)
        for _ in range(100):
            self.name = self._requested_name or f"{LAB_PREFIX}{secrets.token_hex(3)}"
            if not self.name.startswith(LAB_PREFIX):
                raise ConfigError(f"lab names start with {LAB_PREFIX!r}")
            try:
                fd = os.open(self.state_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                if self._requested_name:
                    raise XlbError(f"a lab named {self.name} exists (xlb lab cleanup?)") from None
                continue
            os.close(fd)
            break
        else:  # pragma: no cover
            raise XlbError("could not find a free lab name")
        self._state = {
            "name": self.name,
            "owner_pid": os.getpid(),
            "owner_start": proc_start_time(os.getpid()),
            "created": time.time(),
            "topology": self.topology,
            "namespaces": [],
            "processes": [],
            "pin_dirs": [str(self.pin_root)],
            "run_dir": str(self.run_dir),
        }
        self._save_state()

    def _save_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        with private_file(tmp) as out:
            out.write(json.dumps(self._state, indent=1))
        tmp.replace(self.state_file)

    def _ns(self, role: str) -> str:
        return f"{self.name}-{role}"

    # ----------------------------------------------------------- building

    def start(self) -> Lab:
        """Build everything; on any failure tear down what was built and raise."""
        if self._started:
            return self
        self._started = True
        started = time.monotonic()
        self._install_signal_handlers()
        atexit.register(self.close)
        try:
            self._claim_name()
            private_dir(self.run_dir)
            self._build_hub()
            for i in range(1, self._n_clients + 1):
                self.clients.append(self._add_node(ClientNode, "client", i))
            for i in range(1, self._n_balancers + 1):
                self.balancers.append(self._add_node(BalancerNode, "lb", i))
            # With daemons, only what they announce (BIRD's routes) counts.
            self.announced = set() if self.serve else {node.role for node in self.balancers}
            for i in range(1, self._n_reals + 1):
                self.reals.append(self._add_node(RealNode, "real", i))
            self._route_vips()
            self._attach_pass_programs()
            for real in self.reals:
                self._start_real(real)
            self._wait_servers(self.reals)
            for client in self.clients:
                client.start()
            for node in self.balancers:
                self._start_balancer(node)
            if self.router == "bird":
                self._start_bgp()
            elif self.router == "vrrp":
                self._start_vrrp()
        except BaseException:
            self.close()
            raise
        self.setup_seconds = time.monotonic() - started
        log.info("lab %s up in %.2f s", self.name, self.setup_seconds)
        return self

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_netns(self, role: str) -> str:
        name = self._ns(role)
        self._state["namespaces"].append(name)
        self._save_state()
        host.ip("netns", "add", name)
        with netns.enter(name):
            settings: dict[host.SysctlKey | str, str | int] = {
                # Set before any interface exists: new interfaces copy "default".
                "net.ipv6.conf.all.accept_dad": 0,
                "net.ipv6.conf.default.accept_dad": 0,
                "net.ipv6.conf.default.accept_ra": 0,
                "net.ipv6.conf.all.accept_ra": 0,
                "net.ipv4.conf.all.rp_filter": 0,
                "net.ipv4.conf.default.rp_filter": 0,
            }
            host.write_sysctls(settings)
        host.ip("link", "set", "lo", "up", ns=name)
        return name

    def _build_hub(self) -> None:
        if self.topology == "routed":
            self.hub = self._create_netns("router")
            with netns.enter(self.hub):
                host.write_sysctls(
                    {
                        "net.ipv4.ip_forward": 1,
                        "net.ipv6.conf.all.forwarding": 1,
                        # ECMP over balancer nodes by the L4 5-tuple (see the module doc)
                        "net.ipv4.fib_multipath_hash_policy": 1,
                        "net.ipv6.fib_multipath_hash_policy": 1,
                    }
                )
            if self.router == "vrrp":
                # VRRP needs one L2 segment: the two balancer nodes and the router.
                host.ip_batch(
                    [
                        f"link add {VRRP_BRIDGE} type bridge stp_state 0 mcast_snooping 0",
                        f"addr add {VRRP_GW4}/{VRRP_PREFIX4} dev {VRRP_BRIDGE}",
                        f"addr add {VRRP_GW6}/{VRRP_PREFIX6} dev {VRRP_BRIDGE} nodad",
                        f"link set {VRRP_BRIDGE} up",
                    ],
                    ns=self.hub,
                )
        else:
            self.hub = self._create_netns("switch")
            host.ip_batch(
                ["link add br0 type bridge stp_state 0 mcast_snooping 0", "link set br0 up"],
                ns=self.hub,
            )

    def _plan(self, kind: str, index: int) -> dict[str, Any]:
        code = _KIND_CODE[kind]
        if not 1 <= index <= 254:
            raise ConfigError(f"{kind} index {index} out of range 1-254")
        mac = f"02:00:00:{code:02x}:00:{index:02x}"
        hub_mac = f"02:00:00:{code:02x}:01:{index:02x}"
        if self.router == "vrrp" and kind == "lb":
            return {
                "ipv4": ipaddress.IPv4Address(int(VRRP_GW4) + index),
                "ipv6": ipaddress.IPv6Address(int(VRRP_GW6) + index),
                "gw4": VRRP_GW4,
                "gw6": VRRP_GW6,
                "prefix4": VRRP_PREFIX4,
                "prefix6": VRRP_PREFIX6,
                "mac": mac,
                "hub_mac": hub_mac,
            }
        if self.topology == "routed":
            subnet = {"client": 10, "lb": 20, "real": 30}[kind]
            return {
                "ipv4": ipaddress.IPv4Address(f"10.{subnet}.{index}.2"),
                "ipv6": ipaddress.IPv6Address(f"fd00:{subnet}:{index:x}::2"),
                "gw4": ipaddress.IPv4Address(f"10.{subnet}.{index}.1"),
                "gw6": ipaddress.IPv6Address(f"fd00:{subnet}:{index:x}::1"),
                "prefix4": 24,
                "prefix6": 64,
                "mac": mac,
                "hub_mac": hub_mac,
            }
        return {
            "ipv4": ipaddress.IPv4Address(f"10.0.{code}.{index}"),
            "ipv6": ipaddress.IPv6Address(f"fd00::{code}:{index:x}"),
            "gw4": None,
            "gw6": None,
            "prefix4": 16,
            "prefix6": 64,
            "mac": mac,
            "hub_mac": hub_mac,
        }

    def _add_node(self, cls: type[Any], kind: str, index: int) -> Any:
        role = f"{kind}{index}"
        plan = self._plan(kind, index)
        ns = self._create_netns(role)
        port = {"client": "c", "lb": "lb", "real": "r"}[kind] + str(index)
        mtu = 1500 if kind == "client" else self.server_mtu
        queues = f"numtxqueues {os.cpu_count() or 1} numrxqueues {os.cpu_count() or 1}"
        hub_cmds = [
            f"link add {port} address {plan['hub_mac']} mtu {mtu} {queues} type veth "
            f"peer name eth0 netns {ns} address {plan['mac']} mtu {mtu} {queues}",
            f"link set {port} up",
        ]
        if self.router == "vrrp" and kind == "lb":
            hub_cmds.insert(1, f"link set {port} master {VRRP_BRIDGE}")
        elif self.topology == "routed":
            hub_cmds += [
                f"addr add {plan['gw4']}/{plan['prefix4']} dev {port}",
                f"addr add {plan['gw6']}/{plan['prefix6']} dev {port} nodad",
            ]
        else:
            hub_cmds.insert(1, f"link set {port} master br0")
        host.ip_batch(hub_cmds, ns=self.hub)
        node_cmds = [
            "link set eth0 up",
            f"addr add {plan['ipv4']}/{plan['prefix4']} dev eth0",
            f"addr add {plan['ipv6']}/{plan['prefix6']} dev eth0 nodad",
        ]
        if self.topology == "routed":
            node_cmds += [
                f"route add default via {plan['gw4']}",
                f"route add default via {plan['gw6']}",
            ]
        if kind == "real":
            node_cmds += [
                f"addr add {self.vip4}/32 dev lo",
                f"addr add {self.vip6}/128 dev lo nodad",
            ]
        host.ip_batch(node_cmds, ns=ns)
        with netns.enter(ns):
            host.disable_tx_checksum("eth0")
            if kind == "real":
                host.write_sysctls(
                    {
                        "net.ipv4.conf.all.arp_ignore": 1,
                        "net.ipv4.conf.all.arp_announce": 2,
                        host.conf_key("eth0", "rp_filter"): 0,
                    }
                )
            if kind == "client":
                host.write_sysctls({"net.ipv4.ip_local_port_range": EPHEMERAL_PORTS})
        with netns.enter(self.hub):
            host.disable_tx_checksum(port)
        return cls(
            role=role,
            kind=kind,
            index=index,
            netns=ns,
            ipv4=plan["ipv4"],
            ipv6=plan["ipv6"],
            prefix4=plan["prefix4"],
            prefix6=plan["prefix6"],
            mac=plan["mac"],
            hub_port=port,
            hub_mac=plan["hub_mac"],
        )

    def _route_vips(self) -> None:
        """Send VIP traffic to the balancer(s): one ECMP route over every
        announced balancer node, in node order (the same set of nodes always
        gives the same flow -> node mapping); none announced: no route.
        router="vrrp": one route to the floating next hop; "bird": none (BIRD's)."""
        if self.router == "bird":
            return  # BIRD installs them, from what the nodes announce
        if self.topology == "routed":
            where, targets = self.hub, self.balancers
        else:
            where, targets = "", self.balancers
        targets = [b for b in targets if b.role in self.announced]
        destinations = [ipaddress.ip_network(self.vip4), ipaddress.ip_network(self.vip6)]
        for destination in destinations + self.prefixes:
            family = destination.version
            hops: list[IPAddress] = [b.address(family) for b in targets]
            if self.router == "vrrp":  # whoever holds the floating address
                hops = [FLOATING_V4 if family == 4 else FLOATING_V6]
            if not hops:
                # Nodes are withdrawn one at a time: the route has one hop left.
                routes = [f"route del {destination}"]
            elif len(hops) == 1:
                routes = [f"route replace {destination} via {hops[0]}"]
            else:
                # One replace swaps the whole multipath route atomically.
                routes = [
                    f"route replace {destination} " + " ".join(f"nexthop via {h}" for h in hops)
                ]
            if where:
                host.ip_batch(routes, ns=where)
            else:
                for client in self.clients:
                    host.ip_batch(routes, ns=client.netns)

    def vip_routes(self, family: int) -> str:
        """The router's route to the VIP of `family`, as `ip route` shows it."""
        vip = self.vip_address(family)
        where = self.hub if self.topology == "routed" else self.client.netns
        return host.ip(f"-{family}", "route", "show", str(vip), ns=where).strip()

    def _attach_pass_programs(self) -> None:
        """XDP_PASS on every hub port facing a balancer, and facing a real
        whose decap runs at native XDP: a real hands packets of flows that
        are not its own on with XDP_TX (second chance, bpf/handoff.h). See
        the module doc."""
        if not PASS_OBJECT.is_file():
            raise XlbError(f"{PASS_OBJECT} is missing: run `python3 build.py build`")
        self._pass_obj = BpfObject(PASS_OBJECT)
        prog = self._pass_obj.program(PASS_PROGRAM)
        facing = [*self.balancers, *(self.reals if self.decap_mode == "native" else [])]
        with netns.enter(self.hub):
            for node in facing:
                self._pass_links.append(XdpLink.attach(prog, node.hub_port, "native"))

    def _start_real(self, real: RealNode) -> None:
        with netns.enter(real.netns):
            real.decap = Decap(
                real.interface, addresses=[real.ipv4, real.ipv6], mode=self.decap_mode
            )
        real.control = self.run_dir / f"{real.role}.sock"
        errors = private_file(self.run_dir / f"{real.role}.log", "wb")
        try:
            real.server = netns.popen(
                real.netns,
                [
                    sys.executable,
                    str(LABSERVER),
                    "--name",
                    real.role,
                    "--tcp",
                    str(self.tcp_port),
                    "--udp",
                    str(self.udp_port),
                    "--control",
                    str(real.control),
                    "--parent",
                    str(os.getpid()),
                ],
                stdout=subprocess.PIPE,
                stderr=errors,
                stdin=subprocess.DEVNULL,
            )
        finally:
            errors.close()
        self._state["processes"].append(
            {"pid": real.server.pid, "start": proc_start_time(real.server.pid), "role": real.role}
        )
        self._save_state()

    def start_real_process(
        self, real: RealNode | str, argv: Sequence[str], name: str, timeout: float = 10.0
    ) -> subprocess.Popen[bytes]:
        """Run `argv` in a real's namespace as one of the lab's processes
        (recorded in the state file, stopped with the lab; its stderr in
        the run directory as <real>-<name>.log) and wait for it to print
        `ready` (xlb/lab/quicserver.py is one)."""
        node = self.real(real) if isinstance(real, str) else real
        log_path = self.run_dir / f"{node.role}-{name}.log"
        with private_file(log_path, "wb") as errors:
            process = netns.popen(
                node.netns, list(argv), stdout=subprocess.PIPE, stderr=errors,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self._extra_processes.append(process)
        self._record_process(process.pid, f"{node.role}-{name}")
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready or process.stdout.readline().strip() != b"ready":
            raise XlbError(
                f"{name} on {node.role} did not start: "
                f"{log_path.read_text(errors='replace').strip() or 'no ready line'}"
            )
        return process

    def _wait_servers(self, reals: Sequence[RealNode], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for real in reals:
            assert real.server is not None and real.server.stdout is not None
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([real.server.stdout], [], [], left)
            line = real.server.stdout.readline() if ready else b""
            if line.strip() != b"ready":
                log_text = (self.run_dir / f"{real.role}.log").read_text(errors="replace")
                raise XlbError(f"lab server of {real.role} did not start: {log_text.strip()}")

    def _start_balancer(self, node: BalancerNode) -> None:
        node.pin_dir = self.pin_root / node.role
        if not self.serve:  # else the node's `xlb serve` attaches its own
            node.balancer = self._open_balancer(node)

    def _open_balancer(self, node: BalancerNode) -> Balancer:
        config = self._balancer_config or BalancerConfig(mtu=self.server_mtu)
        if self.topology == "routed":
            config = BalancerConfig(
                **{
                    **{f: getattr(config, f) for f in config.__dataclass_fields__},
                    "gateway_mac": node.hub_mac,
                }
            )
        with netns.enter(node.netns):
            return Balancer(node.interface, self.xdp_mode, pin_dir=node.pin_dir, config=config)

    # ---------------------------------------------------- routing engines

    def _daemon(self, ns: str, role: str, cmd: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """Start a daemon in `ns` from the owner thread (it dies with the lab
        by SIGKILL), recorded in the state file."""
        if self._owner is None:
            self._owner = OwnerThread(f"xlb-lab-{self.name}-owner")
        owner_pid = os.getpid()

        def start() -> subprocess.Popen[bytes]:
            with private_file(self.run_dir / log_name, "wb") as output:
                return netns.popen(
                    ns,
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent(owner_pid, signal.SIGKILL),
                )

        process = self._owner.run(start)
        self._daemons.append(process)
        self._record_process(process.pid, role)
        return process

    def _record_process(self, pid: int, role: str) -> None:
        self._state["processes"].append({"pid": pid, "start": proc_start_time(pid), "role": role})
        self._save_state()

    def _wait_until(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise XlbError(f"lab {self.name}: {what} did not happen within {timeout:.0f} s")
            time.sleep(0.005)

    # BGP (router="bird")

    def _start_bgp(self) -> None:
        """BIRD in the router, ExaBGP on every node announcing both VIPs; back
        when the router's routes hold every node."""
        peers = [(b.role, self._plan("lb", b.index)["gw4"], b.ipv4) for b in self.balancers]
        config = self.run_dir / "bird.conf"
        config.write_text(bird_router_config(peers[0][1], str(self.run_dir / "bird.log"), peers))
        self.bird_socket = self.run_dir / "bird.ctl"
        bird = self._daemon(
            self.hub,
            "router-bird",
            [
                "bird",
                "-f",
                "-c",
                str(config),
                "-s",
                str(self.bird_socket),
                "-P",
                str(self.run_dir / "bird.pid"),
            ],
            "bird.out",
        )
        self._wait_until(
            "BIRD's start",
            lambda: bird.poll() is not None or self._bird_answers(),
            ROUTER_DEADLINE_S,
        )
        if bird.poll() is not None:
            output = (self.run_dir / "bird.out").read_text(errors="replace").strip()
            raise XlbError(f"BIRD did not start in the lab's router: {output}")
        if self.serve:
            return  # the nodes' daemons run the BGP speakers
        for node in self.balancers:
            self._start_announcer(node)
        for node in self.balancers:
            for vip in (self.vip4, self.vip6):
                assert node.announcer is not None
                node.announcer.announce(vip)
        self._wait_for_routes()

    def _bird_answers(self) -> bool:
        assert self.bird_socket is not None
        try:
            BirdControl(self.bird_socket, timeout=2).command("show status")
        except AnnounceError:
            return False
        return True

    def _start_announcer(self, node: BalancerNode) -> None:
        gw4 = self._plan("lb", node.index)["gw4"]
        settings = BgpSettings(
            local_as=NODE_AS,
            router_id=node.ipv4,
            neighbors=(Neighbor(gw4, ROUTER_AS, hold_time=HOLD_TIME_S),),
            next_hop_v6=node.ipv6,
        )
        announcer = ExaBgpAnnouncer(settings, self.run_dir / f"{node.role}-exabgp")
        node.announcer = announcer
        if self._owner is None:
            self._owner = OwnerThread(f"xlb-lab-{self.name}-owner")

        def start() -> None:
            with netns.enter(node.netns):
                announcer.start()

        try:
            self._owner.run(start)
        finally:
            if announcer.process is not None:
                self._record_process(announcer.process.pid, f"{node.role}-exabgp")

    def router_hops(self, family: int) -> set[str]:
        """The next hops of the router's kernel route to the VIP of `family`."""
        vip = self.vip_address(family)
        found = host.routes(f"{vip}/{vip.max_prefixlen}", family=family, ns=self.hub)
        return route_hops(found)

    def _wait_for_routes(self, timeout: float = ROUTER_DEADLINE_S) -> None:
        """Until the router's routes to both VIPs go over exactly the announced nodes."""
        wanted = {
            family: {str(b.address(family)) for b in self.balancers if b.role in self.announced}
            for family in (4, 6)
        }
        self._wait_until(
            f"the router's VIP routes over {sorted(self.announced)}",
            lambda: all(self.router_hops(f) == wanted[f] for f in (4, 6)),
            timeout,
        )

    def _announce_over_bgp(self, node: BalancerNode, announce: bool) -> None:
        if node.announcer is None and announce:  # it crashed: a new speaker
            self._start_announcer(node)
        if node.announcer is None:
            raise XlbError(f"{node.role} runs no BGP speaker")
        for vip in (self.vip4, self.vip6):
            if announce:
                node.announcer.announce(vip)
            else:
                node.announcer.withdraw(vip)
        self._wait_for_routes()

    def crash_node(self, node: BalancerNode | str, timeout: float = ROUTER_DEADLINE_S) -> float:
        """A BGP node dies: its data plane is detached and its ExaBGP killed
        (-9; the kernel closes the session and BIRD drops the node at once).
        Back when the router's routes no longer hold it; the seconds that took.
        `restore_data_plane` and `announce` bring it back (a new ExaBGP)."""
        target = self._ecmp_node(node)
        if self.router != "bird" or target.announcer is None:
            raise XlbError(f"{target.role} runs no BGP speaker (router='bird')")
        process = target.announcer.process
        started = time.monotonic()
        self.kill_data_plane(target, "detach")
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        self.announced.discard(target.role)
        self._wait_for_routes(timeout)
        took = time.monotonic() - started
        target.announcer.close()  # reaps the dead ExaBGP, removes its pipes
        target.announcer = None
        return took

    # `xlb serve` daemons (serve=True)

    def serve_settings(self, node: BalancerNode | str) -> NodeSettings:
        """What a node's daemon configuration says about the node itself."""
        target = self.balancer_node(node)
        plan = self._plan("lb", target.index)
        assert target.pin_dir is not None
        return NodeSettings(
            interface=target.interface,
            xdp_mode=self.xdp_mode,
            gateway_mac=target.hub_mac,
            mtu=self.server_mtu,
            pin_dir=target.pin_dir,
            lock_dir=self.run_dir / target.role,
            router_id=str(target.ipv4),
            next_hop_v6=str(target.ipv6),
            neighbor=str(plan["gw4"]) if self.router == "bird" else None,
        )

    def serve_config(self, node: BalancerNode | str, drain_on_stop: bool = False) -> str:
        """The node's `xlb serve` file: TCP on both VIPs over every real,
        HTTP checks; a [bgp] table peering with the router (router="bird")."""
        vips = [
            (str(self.vip_address(f)), self.tcp_port, [str(r.address(f)) for r in self.reals])
            for f in (4, 6)
        ]
        return serve_config(
            self.serve_settings(node),
            vips,
            local_as=NODE_AS,
            router_as=ROUTER_AS,
            hold_time=HOLD_TIME_S,
            drain_on_stop=drain_on_stop,
        )

    def start_serve(
        self, node: BalancerNode | str, config: str | None = None, timeout: float = 30.0
    ) -> ServeDaemon:
        """Start `xlb serve` on a node (it dies with the lab) on `config`
        (default: `serve_config`); back when its control socket answers."""
        if not self.serve:
            raise XlbError("start_serve needs Lab(serve=True): the lab runs the data planes")
        target = self.balancer_node(node)
        previous = self.daemons.get(target.role)
        if previous is not None and previous.running:
            raise XlbError(f"{target.role} already runs xlb serve (pid {previous.process.pid})")
        settings = self.serve_settings(target)
        private_dir(settings.lock_dir)
        path = self.run_dir / f"{target.role}.toml"
        path.write_text(config if config is not None else self.serve_config(target))
        starts = previous.starts + 1 if previous is not None else 1
        log_name = f"{target.role}-serve-{starts}.log"  # one per start: a restart keeps the old
        cmd = [sys.executable, "-c", "import sys, xlb.cli; sys.exit(xlb.cli.main())"]
        cmd += ["serve", str(path), "--log-format", "json"]
        process = self._daemon(target.netns, f"{target.role}-serve", cmd, log_name)
        daemon = ServeDaemon(
            role=target.role,
            config=path,
            lock_dir=settings.lock_dir,
            log=self.run_dir / log_name,
            interface=target.interface,
            process=process,
            starts=starts,
        )
        self.daemons[target.role] = daemon
        self._wait_until(
            f"{target.role}'s xlb serve answering",
            lambda: not daemon.running or daemon.answers(),
            timeout,
        )
        if not daemon.running:
            raise XlbError(
                f"xlb serve on {target.role} exited ({process.returncode}): "
                + daemon.log.read_text(errors="replace")[-2000:]
            )
        return daemon

    @contextlib.contextmanager
    def data_plane(self, node: BalancerNode | str) -> Iterator[Balancer]:
        """A handle on a daemon's pinned data plane (its connection table and
        counters), closed without detaching anything."""
        target = self.balancer_node(node)
        with netns.enter(target.netns):
            lb = Balancer(pin_dir=target.pin_dir)
        try:
            yield lb
        finally:
            lb.close(detach=False)

    # VRRP (router="vrrp")

    def _start_vrrp(self) -> None:
        """keepalived on both nodes; back when the first node holds the
        floating addresses (the router's static route points at them)."""
        for node, priority in zip(self.balancers, VRRP_PRIORITIES, strict=True):
            self._start_keepalived(node, priority)
        try:
            self._wait_until(
                "the VRRP election",
                lambda: self.vrrp_active() is self.balancers[0],
                ROUTER_DEADLINE_S,
            )
        except XlbError as exc:
            holders = {f: [b.role for b in self.floating_holders(f)] for f in (4, 6)}
            logs = {
                b.role: (self.run_dir / f"{b.role}-keepalived.log")
                .read_text(errors="replace")
                .splitlines()[-8:]
                for b in self.balancers
            }
            raise XlbError(f"{exc}; floating addresses on {holders}; keepalived: {logs}") from None

    def _start_keepalived(self, node: BalancerNode, priority: int) -> None:
        directory = self.run_dir / f"{node.role}-vrrp"
        private_dir(directory)
        notify = directory / "notify.sh"
        with private_file(notify) as out:
            out.write(NOTIFY_SCRIPT.format(directory=directory, interface=node.interface))
        notify.chmod(0o700)
        config = directory / "keepalived.conf"
        floating: list[tuple[int, IPAddress, int]] = [
            (4, FLOATING_V4, VRRP_PREFIX4),
            (6, FLOATING_V6, VRRP_PREFIX6),
        ]
        config.write_text(
            keepalived_config(node.role, priority, node.interface, str(notify), floating)
        )
        node.keepalived = self._daemon(
            node.netns,
            f"{node.role}-keepalived",
            [
                "keepalived",
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--vrrp",
                "--use-file",
                str(config),
                "--pid",
                str(directory / "keepalived.pid"),
                "--vrrp_pid",
                str(directory / "vrrp.pid"),
            ],
            f"{node.role}-keepalived.log",
        )

    def floating_holders(self, family: int = 4) -> list[BalancerNode]:
        """The balancer nodes that have the floating next hop of `family`."""
        floating = FLOATING_V4 if family == 4 else FLOATING_V6
        return [
            node
            for node in self.balancers
            if any(
                e.address.ip == floating
                for e in host.address_entries(node.interface, ns=node.netns)
            )
        ]

    def vrrp_active(self) -> BalancerNode | None:
        """The node holding both floating addresses, alone; None otherwise."""
        v4, v6 = self.floating_holders(4), self.floating_holders(6)
        return v4[0] if len(v4) == 1 and v4 == v6 else None

    def router_next_hop_mac(self, family: int) -> str | None:
        """The MAC the router sends the floating next hop's traffic to."""
        floating = FLOATING_V4 if family == 4 else FLOATING_V6
        for entry in host.ip_json("neigh", "show", "dev", VRRP_BRIDGE, ns=self.hub) or []:
            if entry.get("dst") == str(floating) and entry.get("state") != ["FAILED"]:
                return str(entry.get("lladdr")) if entry.get("lladdr") else None
        return None

    def kill_keepalived(self, node: BalancerNode | str) -> None:
        """kill -9 of every keepalived process of a node (what a crash does:
        keepalived removes nothing itself)."""
        target = self.balancer_node(node)
        pids = [pid for pid in pids_in_netns(target.netns) if process_name(pid) == "keepalived"]
        # Stopped first: a VRRP process whose parent died first would get
        # SIGTERM (keepalived's own PR_SET_PDEATHSIG) and resign politely
        # (priority 0), which is not a crash; a parent would respawn a child.
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in sorted(pids, reverse=True):  # children (younger) first
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if target.keepalived is not None:
            target.keepalived.wait()
            target.keepalived = None

    def fail_over(self, timeout: float = ROUTER_DEADLINE_S) -> float:
        """The active node dies: its keepalived is killed (-9) and its link
        taken down (a blackhole). Back when the router sends the floating
        next hop of both families to the backup's MAC (or, where the router
        has no entry yet, when only the backup holds the address); the
        seconds that took (also in `last_fail_over_s`)."""
        if self.router != "vrrp":
            raise XlbError("fail_over needs router='vrrp'")
        active = self.vrrp_active()
        if active is None:
            raise XlbError("no single node holds the floating next hop")
        backup = next(b for b in self.balancers if b is not active)
        started = time.monotonic()
        self.kill_keepalived(active)
        self.kill_data_plane(active, "link-down")

        def moved(family: int) -> bool:
            mac = self.router_next_hop_mac(family)
            if mac is None:  # the router has not used it yet: it will ask the holder
                return self.floating_holders(family) == [backup]
            return mac == backup.mac

        self._wait_until(
            f"{backup.role} taking over the floating next hop",
            lambda: moved(4) and moved(6),
            timeout,
        )
        self.last_fail_over_s = time.monotonic() - started
        return self.last_fail_over_s

    def _stop_routing(self) -> None:
        """Close the BGP speakers (orderly), then every daemon, then the owner thread."""
        for node in self.balancers:
            if node.announcer is not None:
                node.announcer.close()
                node.announcer = None
            node.keepalived = None
        daemons, self._daemons = self._daemons, []
        kill_pids([d.pid for d in daemons if d.poll() is None])
        for daemon in daemons:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(5)
        if self._owner is not None:
            self._owner.stop()
            self._owner = None

    # ------------------------------------------------------------ access

    @property
    def client(self) -> ClientNode:
        return self.clients[0]

    @property
    def balancer(self) -> Balancer:
        """The (first) balancer node's xlb.Balancer."""
        lb = self.balancers[0].balancer
        if lb is None:
            raise XlbError("the lab's balancer is not running")
        return lb

    def balancer_node(self, node: BalancerNode | str) -> BalancerNode:
        """A balancer node by itself or by its role ("lb2")."""
        if isinstance(node, BalancerNode):
            if node not in self.balancers:
                raise XlbError(f"{node.role} is not a balancer node of this lab")
            return node
        for candidate in self.balancers:
            if candidate.role == node:
                return candidate
        raise XlbError(f"no balancer node {node!r} (have {[b.role for b in self.balancers]})")

    def running_balancers(self) -> list[BalancerNode]:
        """The balancer nodes whose data plane runs (not killed), in node order."""
        return [b for b in self.balancers if b.balancer is not None]

    def _balancer_of(self, node: BalancerNode | str | None) -> Balancer:
        """`node`'s Balancer; None: the first running node's."""
        if node is None:
            running = self.running_balancers()
            if not running:
                raise XlbError("no balancer node of the lab is running")
            node = running[0]
        lb = self.balancer_node(node).balancer
        if lb is None:
            raise XlbError(f"the data plane of {self.balancer_node(node).role} is killed")
        return lb

    def balancers_do(self, fn: Callable[[Balancer], T]) -> list[T]:
        """Apply one configuration step to every running balancer node, in
        node order (what a config push to the fleet does); the results.

        Nodes whose data plane is killed are skipped: `restore_data_plane`
        configures them like their peers when they come back. A node whose
        handle was released (`release_balancer`) still forwards and cannot
        be skipped: that is an error, before any node is changed."""
        released = [b.role for b in self.balancers if b.balancer is None and b.killed is None]
        if released:
            raise XlbError(
                f"the Balancer of {', '.join(released)} is released (reopen_balancer first): "
                "changing only the other nodes would make the nodes disagree"
            )
        return [fn(b.balancer) for b in self.running_balancers() if b.balancer is not None]

    def real(self, name: str) -> RealNode:
        for real in self.reals:
            if real.role == name:
                return real
        raise XlbError(f"no real named {name!r} (have {[r.role for r in self.reals]})")

    def real_by_address(self, address: IPAddress | str) -> RealNode:
        addr = ipaddress.ip_address(address)
        for real in self.reals:
            if addr in (real.ipv4, real.ipv6):
                return real
        raise XlbError(f"no real has address {addr}")

    def name_of(self, address: IPAddress | None) -> str | None:
        """The lab name (real3) of a real's address, e.g. from lb.predict()."""
        return None if address is None else self.real_by_address(address).role

    def vip_address(self, family: int) -> IPAddress:
        return self.vip4 if family == 4 else self.vip6

    def vip(self, family: int = 4, proto: str = "tcp") -> Vip:
        """The Vip of a default service (the port follows the protocol)."""
        port = self.tcp_port if proto == "tcp" else self.udp_port
        return Vip(self.vip_address(family), port, proto)

    def backends(
        self,
        family: int,
        names: Iterable[str] | None = None,
        weights: dict[str, int] | None = None,
    ) -> list[Real]:
        """xlb.Real objects for lab reals (their `family` address; the MAC
        too in bridged mode, where the balancer has no gateway)."""
        chosen = [self.real(n) for n in names] if names is not None else self.reals
        weights = weights or {}
        return [
            Real(
                r.address(family),
                weights.get(r.role, 1),
                r.mac if self.topology == "bridged" else None,
            )
            for r in chosen
        ]

    def add_default_services(
        self,
        names: Iterable[str] | None = None,
        flags: VipFlags = VipFlags.NONE,
        ring_size: int | None = None,
        second_chance: float = SECOND_CHANCE_DEFAULT_S,
    ) -> list[Vip]:
        """TCP and UDP VIPs on vip4 and vip6 with every real (or `names`)."""
        chosen = list(names) if names is not None else None
        size = RING_SIZE_DEFAULT if ring_size is None else ring_size
        vips = []
        for family in (4, 6):
            for proto in ("tcp", "udp"):
                vip = self.vip(family, proto)
                reals = self.backends(family, chosen)

                def program(lb: Balancer, vip: Vip = vip, reals: list[Real] = reals) -> None:
                    lb.add_vip(vip, flags, size, second_chance)
                    lb.set_reals(vip, reals)

                self.balancers_do(program)
                vips.append(vip)
        return vips

    def add_prefix_service(
        self,
        vip: Vip,
        names: Iterable[str] | None = None,
        flags: VipFlags = VipFlags.NONE,
        ring_size: int = 65537,
    ) -> Vip:
        """A prefix VIP (10.101.0.0/24:80/tcp) on every balancer node, with
        the reals (or `names`), and what makes its addresses reach them: the
        router (or in bridged mode the clients) routes the prefix to the
        balancers, and every real takes every address of the prefix as its
        own (an IPv4 prefix on lo; an IPv6 local route, and nonlocal binds
        so the UDP server can answer from any of them)."""
        if not vip.is_prefix:
            raise ConfigError(f"{vip} is not a prefix VIP: add_default_services has the others")
        if self.router == "bird":
            raise ConfigError("router='bird' announces the lab's two VIPs only, not prefixes")
        network = vip.network
        for real in self.reals:
            if network.version == 4:
                host.ip("addr", "replace", str(network), "dev", "lo", ns=real.netns)
            else:
                host.ip("-6", "route", "replace", "local", str(network), "dev", "lo", ns=real.netns)
                with netns.enter(real.netns):
                    host.write_sysctls({"net.ipv6.ip_nonlocal_bind": 1})
        if network not in self.prefixes:
            self.prefixes.append(network)
            self._route_vips()
        reals = self.backends(vip.family, names)

        def program(lb: Balancer) -> None:
            lb.add_vip(vip, flags, ring_size)
            lb.set_reals(vip, reals)

        self.balancers_do(program)
        return vip

    def predict(
        self,
        vip: Vip,
        sports: Iterable[int],
        client: ClientNode | None = None,
        node: BalancerNode | str | None = None,
    ) -> dict[int, str | None]:
        """sport -> the real (name) the ring gives a new flow from the client,
        on balancer `node` (default: the first running one)."""
        from ..model import Flow

        lb = self._balancer_of(node)
        c = client or self.client
        src = c.address(vip.family)
        return {
            sport: self.name_of(lb.predict(Flow(src, vip.address, sport, vip.port, vip.proto)))
            for sport in sports
        }

    def ring_shares(self, vip: Vip, node: BalancerNode | str | None = None) -> dict[str, float]:
        """The ring's share of each real, by lab name (on `node`, default the first running)."""
        shares = self._balancer_of(node).ring_shares(vip)
        return {self.real_by_address(a).role: s for a, s in shares.items()}

    # ---------------------------------------------------------- counters

    def decap_counters(self) -> dict[str, dict[str, int]]:
        """Each real's decap counters by name."""
        return {r.role: r.decap.counters() for r in self.reals if r.decap is not None}

    def server_stats(self) -> dict[str, dict[str, Any]]:
        return {r.role: r.server_stats() for r in self.reals if r.server is not None}

    def hub_port_stats(self) -> dict[str, tuple[int, int]]:
        """(rx, tx) packets of every hub port, by node role (router/switch side)."""
        with netns.enter(self.hub):
            return {
                node.role: host.link_packets(node.hub_port)
                for node in [*self.clients, *self.balancers, *self.reals]
            }

    # ------------------------------------------------------ balancer life

    def reopen_balancer(self, node: BalancerNode | None = None) -> Balancer:
        """Drop the Balancer handle without detaching and open a new one that
        adopts the pinned data plane (what a restarted control plane does)."""
        node = node or self.balancers[0]
        if node.balancer is not None:
            node.balancer.close(detach=False)
            node.balancer = None
        node.balancer = self._open_balancer(node)
        return node.balancer

    def release_balancer(self, node: BalancerNode | None = None) -> None:
        """Close the Balancer handle, leave the data plane forwarding (pinned)."""
        node = node or self.balancers[0]
        if node.balancer is not None:
            node.balancer.close(detach=False)
            node.balancer = None

    # ------------------------------------------------------- ECMP (routed)

    def withdraw(self, node: BalancerNode | str) -> None:
        """Take a balancer node out of the router's ECMP routes to the VIPs
        (what a BGP withdraw does): one `ip route replace` per family (a
        delete for the last node), so flows of the other nodes never see a
        gap; with router="bird", the node's ExaBGP withdraws the VIPs and this
        returns when BIRD's kernel route no longer holds the node. Its data
        plane keeps running: packets already on their way are still forwarded."""
        target = self._ecmp_node(node)
        if target.role not in self.announced:
            raise XlbError(f"{target.role} is not announced")
        self.announced.discard(target.role)
        if self.router == "bird":
            self._announce_over_bgp(target, announce=False)
        else:
            self._route_vips()

    def announce(self, node: BalancerNode | str) -> None:
        """Put a balancer node back into the router's ECMP routes."""
        target = self._ecmp_node(node)
        if target.role in self.announced:
            raise XlbError(f"{target.role} is already announced")
        self.announced.add(target.role)
        if self.router == "bird":
            self._announce_over_bgp(target, announce=True)
        else:
            self._route_vips()

    def _ecmp_node(self, node: BalancerNode | str) -> BalancerNode:
        if self.topology != "routed":
            raise XlbError("announce/withdraw need the routed topology (a router doing ECMP)")
        return self.balancer_node(node)

    def kill_data_plane(self, node: BalancerNode | str, how: KillHow = "detach") -> None:
        """Stop a balancer node from forwarding anything.

        "detach": close its Balancer, detaching XDP and removing its pins:
            its connection table is gone (a node that crashed and rebooted);
            packets that still reach it go to its stack, which drops them.
        "link-down": take its interface down (Balancer and maps stay). The
            router is not told: until the node is withdrawn its share of the
            flows is black-holed, as with a real link failure before BGP
            notices.
        """
        target = self.balancer_node(node)
        if target.killed is not None:
            raise XlbError(f"the data plane of {target.role} is already killed ({target.killed})")
        if how == "detach":
            if target.balancer is not None:
                target.balancer.close(detach=True)
                target.balancer = None
        elif how == "link-down":
            host.ip("link", "set", target.interface, "down", ns=target.netns)
        else:
            raise ConfigError(f"invalid how {how!r}: 'detach' or 'link-down'")
        target.killed = how

    def restore_data_plane(self, node: BalancerNode | str) -> Balancer:
        """Bring a killed node back, configured like its peers: after a
        detach, a fresh Balancer (empty connection table) that gets every
        VIP, flag, ring size and real of the first running peer (in a real
        deployment: the same config file); after a link-down, the link (and
        the addresses and routes the kernel dropped with it). Does not
        announce it: `announce` when it is ready, as a BGP speaker would."""
        target = self.balancer_node(node)
        if target.killed == "link-down":
            self._link_up(target)
        elif target.killed == "detach":
            peers = [b.balancer for b in self.running_balancers() if b is not target]
            fresh = self._open_balancer(target)
            try:
                if peers and peers[0] is not None:
                    _copy_services(peers[0], fresh)
            except BaseException:
                fresh.close(detach=True)
                raise
            target.balancer = fresh
        target.killed = None
        return self._balancer_of(target)

    def _link_up(self, node: BalancerNode) -> None:
        plan = self._plan(node.kind, node.index)
        host.ip_batch(
            [
                f"link set {node.interface} up",
                f"addr replace {plan['ipv4']}/{plan['prefix4']} dev {node.interface}",
                f"addr replace {plan['ipv6']}/{plan['prefix6']} dev {node.interface} nodad",
                f"route replace default via {plan['gw4']}",
                f"route replace default via {plan['gw6']}",
            ],
            ns=node.netns,
        )

    # ----------------------------------------------------------- teardown

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # SystemExit raised while a cffi callback runs (libbpf's log hook)
            # is printed and dropped: until the teardown starts, signal again.
            def resend() -> None:
                time.sleep(0.5)
                if not self._closed:
                    os.kill(os.getpid(), signum)

            threading.Thread(target=resend, daemon=True).start()
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, on_signal)

    def close(self) -> None:
        """Tear everything down (idempotent; every step is attempted)."""
        if self._closed or not self._started:
            return
        self._closed = True
        in_main = threading.current_thread() is threading.main_thread()
        masked: dict[signal.Signals, Any] = {}
        if in_main:  # a second Ctrl-C must not interrupt the teardown
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                masked[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            self._teardown()
        finally:
            if in_main:
                for sig, handler in masked.items():
                    signal.signal(sig, self._old_handlers.get(sig, handler))
            with contextlib.suppress(Exception):
                atexit.unregister(self.close)

    def _teardown(self) -> None:
        def attempt(what: str, fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # keep tearing down
                log.error("lab %s: %s failed: %s", self.name, what, exc)

        for client in self.clients:
            attempt(f"stopping {client.role}", client.stop)
        attempt("stopping the routing daemons", self._stop_routing)
        servers = [r.server for r in self.reals if r.server is not None] + self._extra_processes
        attempt("stopping lab servers", kill_pids, [s.pid for s in servers])
        for server in servers:
            with contextlib.suppress(Exception):
                server.wait(1)
                if server.stdout is not None:
                    server.stdout.close()
        for real in self.reals:
            if real.decap is not None:
                decap = real.decap
                real.decap = None

                def close_decap(ns: str = real.netns, d: Decap = decap) -> None:
                    with netns.enter(ns):  # tc detach goes through this netns' netlink
                        d.close()

                attempt(f"closing decap of {real.role}", close_decap)
        for node in self.balancers:
            if node.balancer is not None:
                attempt(f"closing balancer {node.role}", node.balancer.close, True)
                node.balancer = None
        for link in self._pass_links:
            attempt("detaching pass program", link.detach)
        self._pass_links.clear()
        if self._pass_obj is not None:
            self._pass_obj.close()
            self._pass_obj = None
        if self.name:
            attempt("removing the lab's leftovers", remove_state, self._state)


def _copy_services(source: Balancer, target: Balancer) -> None:
    """Give `target` every VIP of `source`: flags, ring size, second-chance
    window, reals, weights (not the previous rings: history is not config)."""
    for vip in source.vips():
        size, window = source.ring_size(vip), source.second_chance(vip)
        target.add_vip(vip, source.vip_flags(vip), size, window)
        target.set_reals(vip, source.reals(vip))
