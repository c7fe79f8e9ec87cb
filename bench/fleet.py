"""Fleet simulation: TCP connections broken per hour in a fleet far larger
than this machine, with no connection table, with the table, and with the
table plus second chance. Pure Python over `xlb.maglev` (the rings) and
`xlb.flowhash` (the data plane's flow hash); no kernel. The lab tests
(tests/e2e/test_second_chance_lab.py, tests/e2e/test_ecmp.py) check its claims
at small scale: what the data plane does with one flow is the same rule.

The model (every number is a parameter of `Fleet`):

- One VIP served by R reals (Maglev ring of 65537 slots, 655373 from 200
  reals) and N balancer nodes behind a router doing hash-threshold ECMP
  over the live nodes (a node's failure or return moves flows between
  the others too, as Linux does).
- Connections arrive at a steady rate. Lifetimes are heavy-tailed: most are
  short (log-normal, median 3 s, a packet every 2 s); some are long and busy
  (Pareto, alpha 1.2, from 60 s, a packet every 30 s); some are pooled
  database connections, long and idle (Pareto from 10 min, a packet every
  30 min). Lifetimes are capped at 12 h.
- A connection's socket is on the real its SYN reached (the ring's, on the
  node its SYN took). A packet that reaches another real breaks it (a RST);
  it sends nothing after that.
- Ring changes: reals are added (new addresses), removed and drained
  (weight 0) at given rates, each a new ring; a drained real is removed
  `drain_s` later. A removed real keeps serving the connections it has (an
  operator's removal, not a crash).
- Nodes fail at a given rate per node and come back `down_s` later with an
  empty connection table; the router rehashes both times.
- "table": each node has a connection table of `table_capacity` entries,
  least recently used out. A SYN records its real on its node; a packet
  that finds a valid entry goes to that real (an entry of a removed real
  is not valid: xlb retires its id); a miss goes to the ring and is recorded.
- "table+sc": the same, and a miss whose ring real differs from the real
  the VIP's previous ring gives it, within `window_s` of the last ring
  change that altered the ring, reaches its socket through that real
  (second chance: the carrier and the reals' hand-off) and is not recorded.
  One previous ring: a second change replaces it.
- "none": every packet goes to the ring.

Capacity: the real table holds 1M entries, which a busy node churns through
in seconds, so idle pooled connections lose their entries. The simulation is
scaled down (a few connections per second), and so is its table: by default
ten minutes of a node's new connections.
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlb import maglev
from xlb.flowhash import flow_hash

MODES = ("none", "table", "table+sc")
VIP = ipaddress.IPv4Address("10.100.0.1")
CLIENTS = ipaddress.IPv4Network("10.64.0.0/10")
SEED = 0x786C62
ECMP_SEED = 0x51C0


@dataclass(frozen=True)
class Fleet:
    """One simulated fleet (see the module docstring)."""

    reals: int
    nodes: int
    hours: float = 4.0
    flows_per_s: float = 2.0
    adds_per_h: float = 1.0
    removes_per_h: float = 1.0
    drains_per_h: float = 1.0
    drain_s: float = 1800.0
    node_failures_per_h: float = 0.05  # per node
    down_s: float = 600.0
    window_s: float = 3600.0
    table_capacity: int | None = None  # None: ten minutes of a node's new connections
    seed: int = 1

    @property
    def capacity(self) -> int:
        if self.table_capacity is not None:
            return self.table_capacity
        return max(16, int(self.flows_per_s / self.nodes * 600))


@dataclass
class Flows:
    start: np.ndarray
    end: np.ndarray
    gap: np.ndarray
    ring_hash: list[int]
    ecmp_hash: list[int]


def make_flows(fleet: Fleet, rng: np.random.Generator) -> Flows:
    seconds = fleet.hours * 3600
    n = int(rng.poisson(fleet.flows_per_s * seconds))
    start = np.sort(rng.uniform(0, seconds, n))
    kind = rng.choice(3, size=n, p=[0.9, 0.07, 0.03])
    pareto = (1 + rng.pareto(1.2, n)).astype(float)
    life = np.where(
        kind == 0,
        rng.lognormal(math.log(3.0), 1.0, n),
        np.where(kind == 1, 60.0 * pareto, 600.0 * pareto),
    )
    life = np.minimum(life, 12 * 3600.0)
    gap = np.choose(kind, [2.0, 30.0, 1800.0])
    clients = rng.integers(0, CLIENTS.num_addresses, n)
    sports = rng.integers(1024, 65536, n)
    ring_hash, ecmp_hash = [], []
    for client, sport in zip(clients.tolist(), sports.tolist(), strict=True):
        src = (CLIENTS.network_address + client).packed
        ring_hash.append(flow_hash(src, VIP.packed, sport, 80, 6, SEED, 0))
        ecmp_hash.append(flow_hash(src, VIP.packed, sport, 80, 6, ECMP_SEED, 0))
    return Flows(start, start + life, gap, ring_hash, ecmp_hash)


@dataclass
class Ring:
    """A VIP's ring: the real (an int) of each slot."""

    slots: list[int]
    size: int

    def real(self, h: int) -> int:
        return self.slots[h % self.size]


def ring_size_for(reals: int) -> int:
    return 655373 if reals > 200 else 65537


@dataclass
class Reals:
    """The VIP's reals: weights by real id (0: drained), and the removed."""

    weights: dict[int, int]
    next_id: int
    size: int
    removed: set[int] = field(default_factory=set)

    def ring(self) -> Ring:
        ids = sorted(self.weights)
        addresses = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in ids]
        table = maglev.build_table(addresses, self.size, [self.weights[i] for i in ids])
        return Ring(np.asarray(ids)[table].tolist(), self.size)


@dataclass
class Mode:
    """One way of running the fleet: its tables, its transition, its breaks."""

    name: str
    capacity: int
    tables: dict[int, OrderedDict[int, int]] = field(default_factory=dict)
    prev: Ring | None = None
    prev_until: float = 0.0
    broken: int = 0
    # table+sc: why a break got no second chance
    past_window: int = 0  # the previous ring named the socket's real, too late
    chained: int = 0  # the previous ring did not name it: two changes or more ago

    def forget(self, node: int) -> None:
        self.tables[node] = OrderedDict()

    def record(self, node: int, flow: int, real: int) -> None:
        table = self.tables.setdefault(node, OrderedDict())
        table[flow] = real
        table.move_to_end(flow)
        if len(table) > self.capacity:
            table.popitem(last=False)

    def reaches(self, node: int, flow: int, h: int, ring: Ring, state: Reals) -> int:
        """The real a (non-SYN) packet goes to: its valid entry's, else the ring's."""
        if self.name == "none":
            return ring.real(h)
        table = self.tables.setdefault(node, OrderedDict())
        real = table.get(flow)
        if real is not None and real not in state.removed:
            table.move_to_end(flow)
            return real
        return ring.real(h)


class Simulation:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.rng = np.random.default_rng(fleet.seed)
        self.flows = make_flows(fleet, self.rng)
        self.state = Reals(
            {i: 1 for i in range(fleet.reals)}, fleet.reals, ring_size_for(fleet.reals)
        )
        self.ring = self.state.ring()
        self.live = list(range(fleet.nodes))
        self.modes = [Mode(name, fleet.capacity) for name in MODES]
        n = len(self.flows.start)
        self.socket = [0] * n
        self.alive = [[True] * n for _ in MODES]
        self.ring_changes = 0
        self.node_changes = 0

    # ------------------------------------------------------------ events

    def events(self) -> list[tuple[float, int, str, int]]:
        """Every event but the packets: (time, order, kind, argument)."""
        f, rng, seconds = self.fleet, self.rng, self.fleet.hours * 3600
        out: list[tuple[float, int, str, int]] = []
        for kind, rate in (("add", f.adds_per_h), ("remove", f.removes_per_h),
                           ("drain", f.drains_per_h)):  # fmt: skip
            for t in rng.uniform(0, seconds, rng.poisson(rate * f.hours)):
                out.append((float(t), 0, kind, 0))
        for node in range(f.nodes):
            for t in rng.uniform(0, seconds, rng.poisson(f.node_failures_per_h * f.hours)):
                out.append((float(t), 0, "node_down", node))
                out.append((float(t) + f.down_s, 0, "node_up", node))
        for i, t in enumerate(self.flows.start.tolist()):
            out.append((t, 1, "syn", i))
        heapq.heapify(out)
        return out

    def run(self) -> dict[str, Any]:
        queue = self.events()
        seconds = self.fleet.hours * 3600
        while queue:
            t, _, kind, arg = heapq.heappop(queue)
            if t > seconds:
                break
            if kind == "syn":
                self.syn(arg, t, queue)
            elif kind == "packet":
                self.packet(arg, t, queue)
            elif kind in ("node_down", "node_up"):
                self.node(kind, arg)
            elif kind == "removal":
                self.change(t, "removal", queue, arg)
            else:
                self.change(t, kind, queue)
        hours = self.fleet.hours
        return {
            "connections": len(self.flows.start),
            "ring_changes": self.ring_changes,
            "node_changes": self.node_changes,
            "broken_per_h": {m.name: round(m.broken / hours, 1) for m in self.modes},
            "broken_per_1000": {
                m.name: round(1000 * m.broken / max(1, len(self.flows.start)), 2)
                for m in self.modes
            },
            "sc_breaks": {
                "past_window": self.modes[2].past_window,
                "chained": self.modes[2].chained,
            },
        }

    def node_of(self, flow: int) -> int:
        return self.live[(self.flows.ecmp_hash[flow] * len(self.live)) >> 32]

    def syn(self, flow: int, t: float, queue: list[tuple[float, int, str, int]]) -> None:
        if not self.live:
            return
        node, real = self.node_of(flow), self.ring.real(self.flows.ring_hash[flow])
        self.socket[flow] = real
        for mode in self.modes:
            if mode.name != "none":
                mode.record(node, flow, real)
        self.next_packet(flow, t, queue)

    def next_packet(self, flow: int, t: float, queue: list[tuple[float, int, str, int]]) -> None:
        after = t + float(self.flows.gap[flow])
        if after <= float(self.flows.end[flow]) and any(alive[flow] for alive in self.alive):
            heapq.heappush(queue, (after, 2, "packet", flow))

    def packet(self, flow: int, t: float, queue: list[tuple[float, int, str, int]]) -> None:
        if not self.live:
            self.next_packet(flow, t, queue)
            return
        node, h, sock = self.node_of(flow), self.flows.ring_hash[flow], self.socket[flow]
        for mode, alive in zip(self.modes, self.alive, strict=True):
            if not alive[flow]:
                continue
            real = mode.reaches(node, flow, h, self.ring, self.state)
            if real == sock:
                if mode.name != "none":
                    mode.record(node, flow, real)
                continue
            if self.second_chance(mode, h, t, sock):
                continue  # handed on to the socket's real, not recorded
            if mode.name != "none":
                mode.record(node, flow, real)
            alive[flow] = False
            mode.broken += 1
            if mode.name == "table+sc":
                late = mode.prev is not None and mode.prev.real(h) == sock
                mode.past_window += late
                mode.chained += not late
        self.next_packet(flow, t, queue)

    def second_chance(self, mode: Mode, h: int, t: float, sock: int) -> bool:
        if mode.name != "table+sc" or mode.prev is None or t >= mode.prev_until:
            return False
        return mode.prev.real(h) == sock

    def node(self, kind: str, node: int) -> None:
        self.node_changes += 1
        if kind == "node_down":
            if node in self.live:
                self.live.remove(node)
        elif node not in self.live:
            bisect.insort(self.live, node)
        for mode in self.modes:
            mode.forget(node)  # a node comes back with an empty table

    def change(
        self, t: float, kind: str, queue: list[tuple[float, int, str, int]], real: int = -1
    ) -> None:
        state = self.state
        serving = [i for i, w in state.weights.items() if w > 0]
        if kind == "add":
            state.weights[state.next_id] = 1
            state.next_id += 1
        elif kind == "removal":  # a drained real's end
            if real not in state.weights:
                return
            del state.weights[real]
            state.removed.add(real)
        elif len(serving) > 1:
            victim = int(self.rng.choice(serving))
            if kind == "remove":
                del state.weights[victim]
                state.removed.add(victim)
            else:
                state.weights[victim] = 0
                heapq.heappush(queue, (t + self.fleet.drain_s, 0, "removal", victim))
        ring = state.ring()
        if ring.slots != self.ring.slots:  # a change that keeps the ring keeps the previous ring
            self.ring_changes += 1
            for mode in self.modes:
                mode.prev, mode.prev_until = self.ring, t + self.fleet.window_s
        self.ring = ring


GRID_REALS = (10, 100, 1000)
GRID_NODES = (2, 16, 64)


def run(quick: bool) -> dict[str, Any]:
    hours = 2.0 if quick else 4.0
    rows: dict[str, Any] = {}
    started = time.perf_counter()
    for reals in GRID_REALS:
        for nodes in GRID_NODES:
            fleet = Fleet(reals, nodes, hours=hours)
            rows[f"{reals} reals x {nodes} nodes"] = Simulation(fleet).run()
    default = Fleet(10, 2)
    return {
        "method": (
            f"bench/fleet.py: {hours:g} simulated hours per fleet, {default.flows_per_s:g} new "
            f"connections/s, {default.adds_per_h:g} add + {default.removes_per_h:g} remove + "
            f"{default.drains_per_h:g} drain per hour (a drained real removed "
            f"{default.drain_s / 60:g} min later), {default.node_failures_per_h:g} failures per "
            f"node per hour ({default.down_s / 60:g} min down), second-chance window "
            f"{default.window_s:g} s, table of ten minutes of a node's new connections"
        ),
        "rows": rows,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
