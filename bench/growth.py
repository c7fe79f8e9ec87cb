"""Figure 6: ns per packet as VIPs and reals grow.

Every row sends the same working set: 10,000 established v4 TCP flows
(client address cycling over 10,000 values) spread evenly over the VIPs
(destination cycling over the VIP addresses), behind the wrapper, pinned
to CPU 0. The flows are learned first (one pass), then timed as hits.
Rows: VIPs 1 / 100 / 10,000 with 2 reals each; VIPs 1 / 50 with 1,000 reals
each (more than 65,536 (VIP, real) ids does not fit: XLB_MAX_REALS); --quick
has 1,000 instead of 10,000 VIPs and 10 instead of 50. The
10,000-VIP row uses ring size 1021 (a prime) to keep 10,000 rings at
40 MB instead of 2.6 GB; the others use 65537. Baseline in the same run:
bench_min_encap on the same frame through the same wrapper.
"""

from __future__ import annotations

import ipaddress
import time
from functools import partial
from typing import Any

from xlb import Balancer, BalancerConfig, Real, Vip
from xlb.testing import GATEWAY_MAC
from xlb.testing.packets import tcp_packet

from .common import Rounds, log, pinned
from .progs import Baselines, Flows, Harness

FLOWS = 10_000
VIP_BASE = ipaddress.IPv4Address("10.100.0.0")
CLIENT = "10.16.0.0"


def rows_for(quick: bool) -> list[tuple[int, int, int]]:
    """(VIPs, reals per VIP, ring size)."""
    many = 1_000 if quick else 10_000  # 10,000 VIPs take ~2 min to set up (RCU waits)
    rows = [(1, 2, 65537), (100, 2, 65537), (many, 2, 1021), (1, 1000, 65537)]
    rows.append((10, 1000, 65537) if quick else (50, 1000, 65537))
    return rows


def build(vips: int, reals: int, ring: int) -> tuple[Balancer, float]:
    lb = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    members = [Real(f"10.1.{i // 250}.{i % 250 + 1}") for i in range(reals)]
    start = time.perf_counter()
    for i in range(vips):
        vip = Vip(VIP_BASE + i, 80, "tcp")
        lb.add_vip(vip, ring_size=ring)
        lb.set_reals(vip, members)
    return lb, time.perf_counter() - start


def run(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 7
    repeat = 100_000 if quick else 300_000
    frame = tcp_packet(CLIENT, VIP_BASE, 40000, 80, "A", b"x" * 10)
    h = Harness()
    base = Baselines()
    rows: dict[str, Any] = {}
    try:
        for vips, reals, ring in rows_for(quick):
            key = f"{vips}vips_x_{reals}reals"
            log(f"growth: {key} (ring {ring})")
            lb, setup_s = build(vips, reals, ring)
            try:
                flows = Flows.varying(frame, FLOWS, vips)
                with pinned(0):
                    h.measure(lb.program, frame, flows, FLOWS)  # learn the flows
                    before = lb.counters()
                    r = Rounds.collect(
                        {
                            "xlb": partial(h.measure, lb.program, frame, flows, repeat),
                            "min_encap": partial(h.measure, base.min_encap, frame, flows, repeat),
                        },
                        rounds,
                    )
                    after = lb.counters()
                hits = after["conn_hit"] - before["conn_hit"]
                rows[key] = {
                    "vips": vips,
                    "reals_per_vip": reals,
                    "ring_size": ring,
                    "ns": round(r.median("xlb"), 1),
                    "baseline_min_encap_ns": round(r.median("min_encap"), 1),
                    "vs_min_encap": round(r.ratio("xlb", "min_encap"), 2),
                    "hit_fraction": round(hits / (rounds * repeat), 4),
                    "setup_s": round(setup_s, 2),
                }
            finally:
                lb.close()
    finally:
        base.close()
        h.close()
    return {
        "method": (
            f"{FLOWS} established flows over all VIPs, conn-table hits, repeat={repeat}, "
            f"median of {rounds} rounds, CPU 0"
        ),
        "rows": rows,
    }
