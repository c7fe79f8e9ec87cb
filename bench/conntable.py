"""Figure 2: the connection table at scale (1M flows) and its memory.

1M distinct v4 TCP flows (client address counting up, one VIP, 10 reals)
go through xlb behind the wrapper, half on each CPU: BPF_F_NO_COMMON_LRU
gives every CPU its own LRU list holding max_entries / possible CPUs
entries, and with RSS a flow always lands on the same CPU, so this is how
a 2-queue NIC would fill the table. Passes, each timed by the kernel:
  miss (filling)   first packet (ACK) of each flow: lookup miss, ring,
                   insert into a table going from empty to 1M
  hit              the same 1M flows again: every lookup hits, but the
                   entries are spread over ~100 MB, so most are cache misses
  hit (1 flow)     one flow over and over (the pktpath figure): all cached
  miss (full)      new flows into the full table: each insert evicts
Memory: the kernel's own accounting (fdinfo `memlock`, the same figure as
`bpftool map show`), per map, for the whole object.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

from xlb import Balancer, BalancerConfig, Real, Vip
from xlb._bpf import Map
from xlb.testing import GATEWAY_MAC
from xlb.testing.packets import tcp_packet

from .common import log, median, pinned
from .progs import Baselines, Flows, Harness

FLOWS = 1 << 20
CPUS = (0, 1)
VIP = Vip("10.9.0.1", 80, "tcp")
REALS = [Real(f"10.1.0.{i}") for i in range(1, 11)]
FRAME = tcp_packet("10.16.0.0", VIP.address, 40000, 80, "A", b"x" * 10)


def memlock(m: Map) -> int:
    """Bytes the kernel charges for a map (fdinfo `memlock`)."""
    for line in Path(f"/proc/self/fdinfo/{m.fd}").read_text().splitlines():
        if line.startswith("memlock:"):
            return int(line.split()[1])
    raise LookupError(f"no memlock in fdinfo of map {m.name}")


def bpftool_memlock(map_id: int) -> int | None:
    try:
        out = subprocess.run(
            ["bpftool", "-j", "map", "show", "id", str(map_id)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(json.loads(out)["bytes_memlock"])
    except (OSError, subprocess.CalledProcessError, KeyError, ValueError):
        return None


def per_cpu_pass(h: Harness, lb: Balancer, start: int, count: int) -> float:
    """Send flows [start, start + count) split over CPUS; mean ns/packet."""
    share = count // len(CPUS)
    times = []
    base = Flows.fixed(FRAME)
    for i, cpu in enumerate(CPUS):
        flows = Flows(
            base.src_off,
            base.src_base + start + i * share,
            share,
            base.dst_off,
            base.dst_base,
            1,
        )
        with pinned(cpu):
            times.append(h.measure(lb.program, FRAME, flows, share))
    return sum(times) / len(times)


def run(quick: bool) -> dict[str, Any]:
    replays = 2 if quick else 5
    lb = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    h = Harness()
    base = Baselines()
    try:
        lb.add_vip(VIP)
        lb.set_reals(VIP, REALS)
        conn = lb.map("conn_v4")
        log(f"conntable: {FLOWS} flows, {replays} replays")
        c0 = lb.counters()
        miss_fill = per_cpu_pass(h, lb, 0, FLOWS)
        c1 = lb.counters()
        hits = []
        for _ in range(replays):
            hits.append(per_cpu_pass(h, lb, 0, FLOWS))
        c2 = lb.counters()
        fixed = Flows.fixed(FRAME)
        with pinned(CPUS[0]):
            hit_one = median([h.measure(lb.program, FRAME, fixed, 200_000) for _ in range(5)])
            min_encap = median([h.measure(base.min_encap, FRAME, fixed, 200_000) for _ in range(5)])
        miss_full = per_cpu_pass(h, lb, FLOWS, FLOWS // 4)
        c3 = lb.counters()
        entries = sum(1 for _ in conn.keys()) if not quick else None
        inserted = c1["conn_miss"] - c0["conn_miss"]
        replay_hits = (c2["conn_hit"] - c1["conn_hit"]) / replays
        maps = {}
        for name, m in lb._obj.maps.items():  # every map of the loaded object
            if m.fd >= 0:
                maps[name] = {"memlock_bytes": memlock(m), "max_entries": m.max_entries}
        conn_bpftool = bpftool_memlock(conn.id)
        inner_id = lb.map("rings").lookup(struct.pack("<I", 0))
        ring_bytes = 0
        if inner_id is not None:
            ring = Map.from_id(struct.unpack("<I", inner_id)[0], "ring")
            ring_bytes = memlock(ring)
            ring.close()
        ns = {
            "miss_filling": round(miss_fill, 1),
            "hit_1m_flows": round(median(hits), 1),
            "hit_1_flow": round(hit_one, 1),
            "miss_full_table_evicting": round(miss_full, 1),
            "baseline_min_encap": round(min_encap, 1),
        }
        return {
            "method": (
                f"{FLOWS} flows, half per CPU ({CPUS}), one BPF_PROG_TEST_RUN per CPU per pass "
                f"(repeat = {FLOWS // 2}), wrapper counts the client address up; "
                f"hit = median of {replays} replays"
            ),
            "ns": ns,
            "vs_min_encap": {k: round(v / min_encap, 2) for k, v in ns.items()},
            "hit_1m_vs_hit_1_flow": round(ns["hit_1m_flows"] / ns["hit_1_flow"], 2),
            "inserted": inserted,
            "replay_hit_fraction": round(replay_hits / FLOWS, 4),
            "full_pass_misses": c3["conn_miss"] - c2["conn_miss"],
            "entries_after": entries,
            "memory": {
                "conn_v4_bytes": maps["conn_v4"]["memlock_bytes"],
                "conn_v4_bytes_per_entry": round(
                    maps["conn_v4"]["memlock_bytes"] / maps["conn_v4"]["max_entries"], 1
                ),
                "conn_v4_bpftool_bytes": conn_bpftool,
                "conn_v6_bytes": maps["conn_v6"]["memlock_bytes"],
                "all_maps_bytes": sum(m["memlock_bytes"] for m in maps.values()),
                "ring_65537_bytes": ring_bytes,
                "per_map": maps,
                "note": "LRU hashes are preallocated: the figure is the same empty or full",
            },
        }
    finally:
        base.close()
        h.close()
        lb.close()
