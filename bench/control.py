"""Figure 5: control-plane latency, from the call to the ring live in the kernel.

`Balancer.set_reals` returns after its last step, the one-update swap of the
VIP's inner ring map in `rings`: when the call returns the kernel uses the
new ring. Each timed call is checked afterwards (outside the timing): the
outer map points at a new inner map, and a packet of a fresh flow goes to
the real `predict()` names.

Cases (a test-run-only Balancer, ring 65537, IPv4 reals):
  set_reals_10      replace all 10 reals of a VIP by 10 others
  set_reals_1000    replace all 1000 reals by 1000 others (worst case:
                    1000 new ids written, 1000 retired, a new ring)
  add_real_1000     add one real to a VIP of 1000
  remove_real_1000  remove it again
Baseline in the same run: `ring_swap_floor`, the kernel work any ring
change needs (create a 65537-entry inner map, write it through mmap, swap
it into `rings`), with the ring precomputed.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from xlb import Balancer, BalancerConfig, Real, Vip
from xlb.rings import ring_map
from xlb.testing import GATEWAY_MAC
from xlb.testing.packets import decode_encapsulated, tcp_packet

from .common import log, median

VIP = Vip("10.9.0.1", 80, "tcp")
RING_SIZE = 65537


def reals(count: int, second_octet: int) -> list[Real]:
    return [Real(f"10.{second_octet}.{i // 250}.{i % 250 + 1}") for i in range(count)]


def inner_id(lb: Balancer) -> int | None:
    raw = lb.map("rings").lookup(struct.pack("<I", 0))
    return None if raw is None else int(struct.unpack("<I", raw)[0])


class Checker:
    def __init__(self, lb: Balancer) -> None:
        self.lb = lb
        self.port = 1024

    def __call__(self, before: int | None) -> None:
        after = inner_id(self.lb)
        if after is None or after == before:
            raise RuntimeError("set_reals returned but the ring was not swapped")
        from xlb import Flow

        self.port += 1
        flow = Flow("10.2.0.1", VIP.address, self.port, VIP.port)
        frame = tcp_packet("10.2.0.1", VIP.address, self.port, VIP.port, "S")
        sent = decode_encapsulated(self.lb.run(frame).packet).outer_dst
        if sent != self.lb.predict(flow):
            raise RuntimeError(f"packet went to {sent}, the new ring says {self.lb.predict(flow)}")


def timed_ms(lb: Balancer, check: Checker, call: Callable[[], None]) -> float:
    before = inner_id(lb)
    start = time.perf_counter()
    call()
    elapsed = (time.perf_counter() - start) * 1e3
    check(before)
    return elapsed


def ring_swap_floor(lb: Balancer, ring: np.ndarray) -> tuple[float, float]:
    """(ms to create and fill the inner map, ms of the one swap update)."""
    start = time.perf_counter()
    inner = ring_map(ring)
    filled = time.perf_counter()
    lb.map("rings").update_fd(struct.pack("<I", 1), inner.fd)  # a spare slot: vip_id 1
    swapped = time.perf_counter()
    inner.close()
    return (filled - start) * 1e3, (swapped - filled) * 1e3


def run(quick: bool) -> dict[str, Any]:
    calls = 4 if quick else 12
    lb = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    try:
        lb.add_vip(VIP, ring_size=RING_SIZE)
        check = Checker(lb)
        samples: dict[str, list[float]] = {}
        log(f"control: {calls} calls per case")
        for count in (10, 1000):
            sets = [reals(count, 10), reals(count, 11)]
            lb.set_reals(VIP, sets[1])
            key = f"set_reals_{count}"
            for i in range(calls):
                chosen = sets[i % 2]
                samples.setdefault(key, []).append(
                    timed_ms(lb, check, lambda chosen=chosen: lb.set_reals(VIP, chosen))
                )
        extra = Real("10.12.0.1")
        for _ in range(calls):
            samples.setdefault("add_real_1000", []).append(
                timed_ms(lb, check, lambda: lb.add_real(VIP, extra))
            )
            samples.setdefault("remove_real_1000", []).append(
                timed_ms(lb, check, lambda: lb.remove_real(VIP, extra.address))
            )
        ring = np.arange(RING_SIZE, dtype=np.uint32) % 1000
        floor = [ring_swap_floor(lb, ring) for _ in range(calls)]
        lb.map("rings").delete(struct.pack("<I", 1))
    finally:
        lb.close()
    fill_ms, swap_ms = median([f for f, _ in floor]), median([s for _, s in floor])
    floor_ms = median([f + s for f, s in floor])
    ms = {k: round(median(v), 2) for k, v in samples.items()}
    return {
        "method": (
            f"wall time of the call (perf_counter), median of {calls} calls; each checked "
            "afterwards: new inner ring map in `rings`, a SYN goes where predict() says"
        ),
        "ms": ms,
        "max_ms": {k: round(max(v), 2) for k, v in samples.items()},
        "baseline_ring_swap_floor_ms": round(floor_ms, 2),
        "ring_fill_ms": round(fill_ms, 2),
        "ring_swap_update_ms": round(swap_ms, 2),
        "swap_note": (
            "the swap is one update of an ARRAY_OF_MAPS, which the kernel returns from only "
            "after an RCU grace period (maybe_wait_bpf_programs), so no program still runs "
            "with the old ring: that wait is the floor of any ring change"
        ),
        "vs_ring_swap_floor": {k: round(v / floor_ms, 1) for k, v in ms.items()},
    }
