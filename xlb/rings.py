"""Maglev rings in the data plane: ring slots per VIP, flips, grace periods.

Each VIP owns RINGS_PER_VIP slots of the outer `rings` map (index vip_id *
RINGS_PER_VIP + slot) and its `vips` entry names the live one. A ring change
writes the new ring into a slot no packet reads, through mmap (one copy, no
syscall per entry), then flips the VIP entry to that slot: a hash-map
update, which the kernel publishes at once. Swapping an inner map into the
outer map instead costs an RCU grace period per change (~11 ms here: the
kernel waits in every update of a map of maps, maybe_wait_bpf_programs).

A packet whose program read the VIP entry just before a flip may still read
the old ring for the rest of that one run, so a slot stops being live with a
grace ticket and is written again only once that ticket has passed (the
same holds for the ids of reals retired at a flip: see Balancer). Tickets
pass on a helper thread that waits out grace periods with updates of a
private map of maps, so by the time a slot is needed again its wait is over.

Second chance (xlb/prevring.py) keeps the slot that was live before a
change readable as the VIP's previous ring until its window closes: such a
slot is "held" and never written. Four slots per VIP leave two spares: the
next change writes the slot that went out of use two changes ago, so
changes back to back (a health checker pulling reals one by one) do not
wait for the grace period the last change started (5-8 ms on an idle
host, by its timer tick, past ten beside busy CPUs: about what a change
of 1000 reals takes). A change of a few reals is quicker than that, and
back to back it waits for part of one (bench/RESULTS.md, figure 5).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from . import _abi, _limits, maglev
from ._bpf import Map, MappedArray, lib
from .errors import BpfError, XlbError
from .model import IPAddress, Real

log = logging.getLogger("xlb.rings")

RINGS_PER_VIP = _limits.XLB_RINGS_PER_VIP
NO_RING = _limits.XLB_RING_SLOT_NONE
RING_MAP_FLAGS = lib.BPF_F_INNER_MAP | lib.BPF_F_MMAPABLE
GRACE_TIMEOUT_S = 10.0  # a grace period takes milliseconds; this is "the kernel is stuck"


def build_ring(size: int, reals: Mapping[int, Real]) -> npt.NDArray[np.uint32] | None:
    """The Maglev ring of `reals` (by real id) as a real id per slot; None
    if no real has weight: the VIP has no ring and drops its packets."""
    weights = [real.weight for real in reals.values()]
    if not reals or not any(weights):
        return None
    addresses = [real.address for real in reals.values()]
    table = maglev.build_table(addresses, size=size, weights=weights)
    return np.array(list(reals), dtype=np.uint32)[table]


def ring_addresses(
    ring: npt.NDArray[np.uint32] | None, size: int, owners: Mapping[int, IPAddress]
) -> list[IPAddress | None]:
    """A ring as the address of each slot's real (None: no ring, or an id
    no real in `owners` holds)."""
    if ring is None:
        return [None] * size
    return [owners.get(int(i)) for i in ring]


def ring_fractions(
    ring: npt.NDArray[np.uint32] | None, size: int, ids: Mapping[IPAddress, int]
) -> dict[IPAddress, float]:
    """Fraction of the ring's slots each real (address -> real id) owns."""
    if ring is None:
        return {addr: 0.0 for addr in ids}
    owned, counts = np.unique(ring, return_counts=True)
    share = dict(zip(owned.tolist(), (counts / size).tolist(), strict=True))
    return {addr: share.get(real_id, 0.0) for addr, real_id in ids.items()}


def ring_pairs(ring_size: int) -> int:
    """Elements of a ring map: two slots each (struct xlb_ring_pair)."""
    return (ring_size + 1) // 2


def fill_ring(inner: Map, ring: npt.NDArray[np.uint32]) -> None:
    """Write `ring` (real id per slot) into an inner ring map, through a
    mapping made for this one write."""
    mapped = inner.mapped()
    try:
        write_pairs(mapped, ring)
    finally:
        mapped.close()


def write_pairs(mapped: MappedArray, ring: npt.NDArray[np.uint32]) -> None:
    """Write `ring` into a ring map through its shared mapping: slot s is
    the (s % 2)-th id of element s / 2 (an odd ring leaves the last
    element's second id 0, no slot)."""
    pairs = mapped.rows.view(np.uint32)  # (elements, 2)
    if pairs.size != 2 * ring_pairs(len(ring)):
        raise XlbError(f"a ring of {len(ring)} slots does not fit a map of {len(pairs)} pairs")
    half = len(ring) // 2
    pairs[:, 0] = ring[0::2]
    pairs[:half, 1] = ring[1::2]
    pairs[half:, 1] = 0


def ring_map(ring: npt.NDArray[np.uint32]) -> Map:
    """A new inner ring map holding `ring` (real id per slot)."""
    size = ring_pairs(len(ring))
    inner = Map.create(lib.BPF_MAP_TYPE_ARRAY, "xlb_ring", 4, 8, size, RING_MAP_FLAGS)
    try:
        fill_ring(inner, ring)
    except BaseException:
        inner.close()
        raise
    return inner


class GraceSource(Protocol):
    """Where grace tickets come from. `GracePeriods` waits for the kernel's
    RCU; a test injects its own source to decide when tickets pass (which
    ring slot a change takes depends on it)."""

    def ticket(self) -> int: ...
    def passed(self, ticket: int) -> bool: ...
    def wait(self, ticket: int) -> None: ...
    def close(self) -> None: ...


class GracePeriods:
    """Tickets that pass once no BPF program still runs from before them.

    `ticket()` marks now; `passed(t)` says whether a whole RCU grace period
    has elapsed since. A daemon thread updates a private ARRAY_OF_MAPS, which
    the kernel returns from only after a grace period that began after the
    update started: every ticket handed out before that start has passed.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._issued = 0
        self._passed = 0
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._inner = Map.create(lib.BPF_MAP_TYPE_ARRAY, "xlb_grace_in", 4, 4, 1)
        try:
            self._outer = Map.create(
                lib.BPF_MAP_TYPE_ARRAY_OF_MAPS, "xlb_grace", 4, 4, 1, inner_map_fd=self._inner.fd
            )
        except BaseException:
            self._inner.close()
            raise

    def ticket(self) -> int:
        """A ticket for "now", and a grace period started to pass it."""
        with self._cond:
            if self._closed:
                raise XlbError("grace periods: closed")
            self._issued += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="xlb-grace", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self._issued

    def passed(self, ticket: int) -> bool:
        return ticket <= self._passed

    def wait(self, ticket: int) -> None:
        """Block until `ticket` has passed."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: ticket <= self._passed or self._error is not None or self._closed,
                GRACE_TIMEOUT_S,
            )
            if self._error is not None:
                raise XlbError(f"waiting for an RCU grace period failed: {self._error}")
            if not ok or ticket > self._passed:
                raise XlbError(f"no RCU grace period completed within {GRACE_TIMEOUT_S} s")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        self._outer.close()
        self._inner.close()

    def _run(self) -> None:
        key = _abi.u32(0)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._issued > self._passed)
                if self._closed:
                    return
                target = self._issued
            try:
                self._outer.update_fd(key, self._inner.fd)  # returns after a grace period
            except BaseException as exc:  # report to waiters, never die silently
                log.exception("grace period wait failed")
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._passed = target
                self._cond.notify_all()


# The data plane reads its window's end with a clock that lags CLOCK_MONOTONIC
# by up to one tick (bpf_ktime_get_coarse_ns): a held slot is kept that much
# longer, and then some.
HOLD_MARGIN_NS = 100_000_000


@dataclass(slots=True)
class VipRings:
    """One VIP's ring slots: which is live, which is held as the previous
    ring (until when, CLOCK_MONOTONIC ns), and when each other is free.

    reusable_after[slot]: None = no inner map in that slot yet; otherwise
    the grace ticket after which no packet reads it (0 = never live)."""

    live: int = NO_RING
    reusable_after: list[int | None] = field(default_factory=lambda: [None] * RINGS_PER_VIP)
    prev: int = NO_RING
    prev_until_ns: int = 0

    def held(self, slot: int) -> bool:
        """Whether packets may read `slot` as the previous ring."""
        if slot != self.prev or slot == NO_RING:
            return False
        return time.monotonic_ns() < self.prev_until_ns + HOLD_MARGIN_NS

    def release_prev(self, ticket: int) -> None:
        """The previous ring is no longer read from `ticket` on."""
        if self.prev != NO_RING and self.prev != self.live:
            self.reusable_after[self.prev] = ticket
        self.prev, self.prev_until_ns = NO_RING, 0


class RingSlots:
    """Writes rings into the `rings` map's slots (see the module docstring)."""

    def __init__(self, rings: Map, grace: GraceSource | None = None) -> None:
        self.outer = rings
        self.grace: GraceSource = grace if grace is not None else GracePeriods()
        self._adopted = 0  # ticket covering slots found written by an earlier process
        # index in `rings` -> (id of the inner map there, its shared mapping),
        # kept across changes: a mapping made per write costs more than the
        # copy (open by id, mmap, page faults, munmap). A mapping keeps its
        # map, and so its id, alive: an id seen again is the same map.
        self._mapped: dict[int, tuple[int, MappedArray]] = {}

    def close(self) -> None:
        self.grace.close()
        for index in list(self._mapped):
            self._forget(index)

    def adopt(
        self, vip_id: int, live: int, size: int
    ) -> tuple[VipRings, npt.NDArray[np.uint32] | None]:
        """A pinned VIP's slots (every written one not live is reusable after
        one grace period) and its live ring, read back from the kernel."""
        state = VipRings(live if live < RINGS_PER_VIP else NO_RING)
        live_ring = None
        for slot in range(RINGS_PER_VIP):
            inner = self._open(vip_id, slot)
            if inner is None:
                continue
            with contextlib.closing(inner):
                if slot == state.live:
                    live_ring = _read_ring(inner, size)
                elif inner.max_entries == ring_pairs(size):
                    if not self._adopted:
                        self._adopted = self.grace.ticket()
                    state.reusable_after[slot] = self._adopted
        if live_ring is None:
            state.live = NO_RING
        return state, live_ring

    def write(self, vip_id: int, state: VipRings, ring: npt.NDArray[np.uint32]) -> int:
        """Put `ring` into a slot no packet reads; returns the slot to flip to.

        Prefers a written slot whose grace ticket passed (one copy through
        mmap); then an empty slot (a new inner map swapped in: that update
        waits a grace period, paid once per slot); else waits for the slot
        that went out of use first."""
        others = [s for s in range(RINGS_PER_VIP) if s != state.live and not state.held(s)]
        written = {s: t for s in others if (t := state.reusable_after[s]) is not None}
        ready = [s for s, t in written.items() if self.grace.passed(t)]
        empty = [s for s in others if s not in written]
        if ready or not empty:
            slot = ready[0] if ready else min(written, key=written.__getitem__)
            self.grace.wait(written[slot])  # at once if it passed
            mapped = self._mapping(vip_id, slot)
            if mapped is not None:
                write_pairs(mapped, ring)
                return slot
            empty = [slot]  # its inner map went away: make a new one
        slot = empty[0]
        inner = ring_map(ring)
        try:
            self.outer.update_fd(_abi.u32(ring_index(vip_id, slot)), inner.fd)
        finally:
            inner.close()  # the outer map holds its own reference
        state.reusable_after[slot] = 0
        return slot

    def flipped(
        self, state: VipRings, slot: int, ticket: int, prev_until_ns: int | None = 0
    ) -> None:
        """The VIP entry now names `slot`; the slot it named before is
        reusable once `ticket` (issued after the flip) has passed, unless
        it is now the previous ring. `prev_until_ns` says what the
        `prev_rings` entry (written before the flip) names: 0, no previous
        ring; > 0, the slot that was live, held until then; None, the
        previous ring stays as it was. A previous ring that no longer is
        one is reusable once `ticket` has passed."""
        old_live = state.live
        if prev_until_ns is not None:
            state.release_prev(ticket)
        if old_live != NO_RING and old_live != slot:
            state.reusable_after[old_live] = ticket
            if prev_until_ns:
                state.prev, state.prev_until_ns = old_live, prev_until_ns
        state.live = slot

    def read(self, vip_id: int, slot: int, size: int) -> npt.NDArray[np.uint32] | None:
        """The ring in one of the VIP's slots, read back from the kernel."""
        inner = self._open(vip_id, slot) if slot < RINGS_PER_VIP else None
        if inner is None:
            return None
        with contextlib.closing(inner):
            if inner.max_entries != ring_pairs(size):
                return None
            return _read_ring(inner, size)

    def remove(self, vip_id: int) -> None:
        """Drop a removed VIP's inner maps (each delete waits a grace period,
        so the vip_id is then free for a new VIP)."""
        for slot in range(RINGS_PER_VIP):
            self._forget(ring_index(vip_id, slot))
            with contextlib.suppress(BpfError):
                self.outer.delete(_abi.u32(ring_index(vip_id, slot)))

    def _inner_id(self, index: int) -> int | None:
        """The id of the inner map at `index` of `rings` (None: none there)."""
        raw = self.outer.lookup(_abi.u32(index))
        return None if raw is None else _abi.read_u32(raw)

    def _open(self, vip_id: int, slot: int) -> Map | None:
        inner_id = self._inner_id(ring_index(vip_id, slot))
        return None if inner_id is None else Map.from_id(inner_id, "ring")

    def _mapping(self, vip_id: int, slot: int) -> MappedArray | None:
        """The shared mapping of the ring map in a slot (None: no map there),
        made once per map: the outer entry is read each time, so a map
        that replaced another in the slot gets its own."""
        index = ring_index(vip_id, slot)
        inner_id = self._inner_id(index)
        known = self._mapped.get(index)
        if known is not None and known[0] == inner_id:
            return known[1]
        self._forget(index)
        if inner_id is None:
            return None
        with contextlib.closing(Map.from_id(inner_id, "ring")) as inner:
            mapped = inner.mapped()
        self._mapped[index] = (inner_id, mapped)
        return mapped

    def _forget(self, index: int) -> None:
        known = self._mapped.pop(index, None)
        if known is not None:
            known[1].close()


def ring_index(vip_id: int, slot: int) -> int:
    """The VIP's slot in the outer `rings` map."""
    return vip_id * RINGS_PER_VIP + slot


def _read_ring(inner: Map, size: int) -> npt.NDArray[np.uint32]:
    _, values, _ = inner.lookup_batch(chunk=65536)
    return np.frombuffer(values, dtype=np.uint32, count=size).copy()
