"""Figure 5: control-plane latency, from the call to the ring live in the kernel.

`Balancer.set_reals` returns after its flip: the one update of the VIP's
`vips` entry that names the ring slot holding the new ring (xlb/rings.py).
Programs that start after that update read the new ring. Each timed call
is checked afterwards (outside the timing): the VIP entry names another
slot than before, and a packet of a fresh flow goes to the real
`predict()` names.

Cases (a test-run-only Balancer, ring 65537, IPv4 reals), calls back to
back, after warm-up calls that gave the VIP's ring slots their maps:
  set_reals_10      replace all 10 reals of a VIP by 10 others
  set_reals_1000    replace all 1000 reals by 1000 others (worst case:
                    1000 new ids written, 1000 retired, a new ring)
  add_real_1000     add one real to a VIP of 1000
  remove_real_1000  remove it again
  set_reals_1000_settled  as set_reals_1000, each call made once every
                    grace period an earlier change started has passed:
                    the call's own cost, without the pacing below
Back-to-back changes to one VIP are paced by RCU grace periods: a change
writes the ring slot that went out of use two changes before, once the
grace period started then has passed (xlb/rings.py). `grace_wait_ms` is
the part of each call spent waiting for one (median).
Baselines in the same run, with the ring precomputed:
  ring_flip_floor   the kernel work of a change: open a spare slot's inner
                    map, write the ring through mmap, update the VIP entry
  map_swap          the same ring swapped in as a new inner map (create,
                    fill, one update of `rings`): what each change cost
                    before ring slots, and what a slot's first use costs
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from xlb import Balancer, BalancerConfig, Real, Vip
from xlb._abi import parse_vip_meta, read_u32, u32, vip_key, vip_meta
from xlb._bpf import Map
from xlb.rings import RINGS_PER_VIP, fill_ring, ring_index, ring_map
from xlb.testing import GATEWAY_MAC
from xlb.testing.packets import decode_encapsulated, tcp_packet

from .common import log, median

VIP = Vip("10.9.0.1", 80, "tcp")
SPARE_VIP = Vip("10.9.0.2", 80, "tcp")  # vip_id 1: the baselines' own slots
RING_SIZE = 65537


def reals(count: int, second_octet: int) -> list[Real]:
    return [Real(f"10.{second_octet}.{i // 250}.{i % 250 + 1}") for i in range(count)]


def live_slot(lb: Balancer, vip: Vip) -> int:
    raw = lb.map("vips").lookup(vip_key(vip))
    assert raw is not None
    return parse_vip_meta(raw)[3]


class Checker:
    def __init__(self, lb: Balancer) -> None:
        self.lb = lb
        self.port = 1024

    def __call__(self, before: int) -> None:
        if live_slot(self.lb, VIP) == before:
            raise RuntimeError("set_reals returned but the VIP still names the old ring")
        from xlb import Flow

        self.port += 1
        flow = Flow("10.2.0.1", VIP.address, self.port, VIP.port)
        frame = tcp_packet("10.2.0.1", VIP.address, self.port, VIP.port, "S")
        sent = decode_encapsulated(self.lb.run(frame).packet).outer_dst
        if sent != self.lb.predict(flow):
            raise RuntimeError(f"packet went to {sent}, the new ring says {self.lb.predict(flow)}")


class GraceWaits:
    """Time the calling thread spends in the Balancer's grace-period waits."""

    def __init__(self, lb: Balancer) -> None:
        self.grace = lb._slots.grace
        self._wait = self.grace.wait
        self.grace.wait = self._timed_wait  # type: ignore[method-assign]
        self.total_s = 0.0

    def _timed_wait(self, ticket: int) -> None:
        start = time.perf_counter()
        try:
            self._wait(ticket)
        finally:
            self.total_s += time.perf_counter() - start

    def settle(self) -> None:
        """Return once every ticket issued so far has passed."""
        self._wait(self.grace.ticket())


def timed_ms(
    lb: Balancer, check: Checker, waits: GraceWaits, call: Callable[[], None]
) -> tuple[float, float]:
    """(ms of the call, ms of it spent waiting for grace periods)."""
    before = live_slot(lb, VIP)
    waited = waits.total_s
    start = time.perf_counter()
    call()
    elapsed = (time.perf_counter() - start) * 1e3
    check(before)
    return elapsed, (waits.total_s - waited) * 1e3


def ring_flip_floor(lb: Balancer, ring: np.ndarray, slot: int) -> float:
    """ms to write `ring` into SPARE_VIP's slot through mmap and flip to it
    (no grace wait: no packet is sent to SPARE_VIP)."""
    vip_id = 1
    start = time.perf_counter()
    raw = lb.map("rings").lookup(u32(ring_index(vip_id, slot)))
    assert raw is not None
    inner = Map.from_id(read_u32(raw))
    fill_ring(inner, ring)
    inner.close()
    lb.map("vips").update(vip_key(SPARE_VIP), vip_meta(vip_id, 0, RING_SIZE, slot))
    return (time.perf_counter() - start) * 1e3


def map_swap(lb: Balancer, ring: np.ndarray, slot: int) -> tuple[float, float]:
    """(ms to create and fill an inner map, ms of the one update of `rings`)."""
    start = time.perf_counter()
    inner = ring_map(ring)
    filled = time.perf_counter()
    lb.map("rings").update_fd(struct.pack("<I", ring_index(1, slot)), inner.fd)
    swapped = time.perf_counter()
    inner.close()
    return (filled - start) * 1e3, (swapped - filled) * 1e3


def run(quick: bool) -> dict[str, Any]:
    calls = 4 if quick else 12
    lb = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    try:
        lb.add_vip(VIP, ring_size=RING_SIZE)
        check, waits = Checker(lb), GraceWaits(lb)
        samples: dict[str, list[tuple[float, float]]] = {}
        log(f"control: {calls} calls per case")
        warm_ups = RINGS_PER_VIP + 1  # the first use of each slot
        sets_of = {count: [reals(count, 10), reals(count, 11)] for count in (10, 1000)}
        for count, sets in sets_of.items():
            for warm_up in range(warm_ups):
                lb.set_reals(VIP, sets[warm_up % 2])
            key = f"set_reals_{count}"
            for i in range(warm_ups, warm_ups + calls):  # each call changes every real
                chosen = sets[i % 2]
                samples.setdefault(key, []).append(
                    timed_ms(lb, check, waits, partial(lb.set_reals, VIP, chosen))
                )
        # the 1000 reals again, alternating on from the last call, each call
        # once the grace periods are over
        for i in range(warm_ups + calls, warm_ups + 2 * calls):
            waits.settle()
            chosen = sets_of[1000][i % 2]
            samples.setdefault("set_reals_1000_settled", []).append(
                timed_ms(lb, check, waits, partial(lb.set_reals, VIP, chosen))
            )
        extra = Real("10.12.0.1")
        for _ in range(calls):
            samples.setdefault("add_real_1000", []).append(
                timed_ms(lb, check, waits, lambda: lb.add_real(VIP, extra))
            )
            samples.setdefault("remove_real_1000", []).append(
                timed_ms(lb, check, waits, lambda: lb.remove_real(VIP, extra.address))
            )
        ring = np.arange(RING_SIZE, dtype=np.uint32) % 1000
        lb.add_vip(SPARE_VIP, ring_size=RING_SIZE)  # vip_id 1, never given reals
        swaps = [map_swap(lb, ring, i % RINGS_PER_VIP) for i in range(calls)]
        flips = [ring_flip_floor(lb, ring, i % RINGS_PER_VIP) for i in range(calls)]
    finally:
        lb.close()
    fill_ms, swap_ms = median([f for f, _ in swaps]), median([s for _, s in swaps])
    floor_ms = median(flips)
    ms = {k: round(median([call for call, _ in v]), 2) for k, v in samples.items()}
    return {
        "method": (
            f"wall time of the call (perf_counter), median of {calls} back-to-back calls after "
            "warm-up (set_reals_1000_settled: each call once every grace period an earlier "
            "change started has passed); each checked afterwards: the VIP entry names a new "
            "ring slot, a SYN goes where predict() says; grace wait: the part of a call spent "
            "waiting for a ring slot's grace period"
        ),
        "ms": ms,
        "max_ms": {k: round(max(call for call, _ in v), 2) for k, v in samples.items()},
        "grace_wait_ms": {k: round(median([w for _, w in v]), 2) for k, v in samples.items()},
        "baseline_ring_flip_floor_ms": round(floor_ms, 2),
        "map_swap_fill_ms": round(fill_ms, 2),
        "map_swap_update_ms": round(swap_ms, 2),
        "swap_note": (
            "an update of an ARRAY_OF_MAPS returns only after an RCU grace period "
            "(maybe_wait_bpf_programs); a ring change pays it only the first time each of the "
            "VIP's ring slots is used, the flip of a hash-map entry does not wait"
        ),
        "vs_ring_flip_floor": {k: round(v / floor_ms, 1) for k, v in ms.items()},
    }
