"""Second chance in the control plane: each VIP's previous ring.

When a VIP's ring changes, the ring that was live stays readable for the
VIP's window (`second_chance`, seconds; math.inf: until its next change).
The VIP's `prev_rings` entry (struct xlb_prev_ring) names that slot and the
end of the window; the data plane (bpf/prev_ring.h) then carries, in a TCP
packet the ring sent to another real than the previous ring would have,
that previous real's address, and the reals (bpf/handoff.h) hand a packet
that is not theirs on to it. A connection thus keeps its real across a
ring change even on a balancer node whose connection table never saw it.

The order of a change (Balancer.set_reals): the new ring goes into a slot
that is neither live nor held (rings.py); the entry is written naming the
live slot; the VIP flips to the new slot; reals that left are retired with
XLB_REAL_F_ALTERNATE (their entries keep address and vip_id) and their ids
are held until the window closes (ids.py), so the previous ring names them
and nobody else. Before the flip the entry names the live slot: a packet
then reads one ring twice, and nothing is carried.

There is one previous ring: a second change within the window replaces it
with the ring just before that second change (docs/ecmp.md says what that
means for flows the first change moved).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from . import _abi, _limits
from ._bpf import Map
from .model import IPAddress

NO_RING = _limits.XLB_RING_SLOT_NONE
#: xlb_prev_ring.until_ns / window_ns: "until the VIP's next change".
UNTIL_CHANGE_NS = 2**64 - 1


def window_ns(seconds: float) -> int:
    """A window (model.check_second_chance's seconds) as the map holds it."""
    if seconds == math.inf:
        return UNTIL_CHANGE_NS
    return round(seconds * 1e9)


def window_seconds(ns: int) -> float:
    """The inverse of window_ns()."""
    return math.inf if ns == UNTIL_CHANGE_NS else ns / 1e9


def window_end(changed_ns: int, window: int) -> int:
    """CLOCK_MONOTONIC ns at which a window of `window` ns that opened at
    `changed_ns` closes (UNTIL_CHANGE_NS: never by itself)."""
    if window == UNTIL_CHANGE_NS:
        return UNTIL_CHANGE_NS
    return min(changed_ns + window, UNTIL_CHANGE_NS - 1)


@dataclass(slots=True)
class Transition:
    """A VIP's last ring change, while its previous ring is carried.

    ring: the previous ring (real id per slot); changed_ns: when the change
    flipped (CLOCK_MONOTONIC); until_ns: when the window closes; departed:
    the reals that left the VIP at the change, which the previous ring still
    names (real id -> address: an int key hashes far faster than an
    address, and a change may retire a thousand), less those dropped as
    dead."""

    ring: npt.NDArray[np.uint32]
    changed_ns: int
    until_ns: int
    departed: dict[int, IPAddress] = field(default_factory=dict)

    def is_open(self) -> bool:
        return time.monotonic_ns() < self.until_ns


class PrevRings:
    """The `prev_rings` map: one struct xlb_prev_ring per VIP id."""

    def __init__(self, prev_rings: Map) -> None:
        self.map = prev_rings

    def read(self, vip_id: int) -> tuple[int, int, int]:
        """(ring_slot, until_ns, window_ns) of a VIP id."""
        raw = self.map.lookup(_abi.u32(vip_id))
        if raw is None:  # an ARRAY has every key: only past its end
            return NO_RING, 0, 0
        return _abi.parse_prev_ring(raw)

    def write(self, vip_id: int, ring_slot: int, until_ns: int, window: int) -> bytes:
        """Set a VIP id's entry; returns the entry it replaced (for an undo)."""
        key = _abi.u32(vip_id)
        old = self.map.lookup(key) or bytes(self.map.value_size)
        self.map.update(key, _abi.prev_ring_entry(ring_slot, until_ns, window))
        return old

    def closed(self, vip_id: int, window: int) -> bytes:
        """No previous ring for the VIP id; its window setting kept."""
        return self.write(vip_id, NO_RING, 0, window)

    def restore(self, vip_id: int, raw: bytes) -> None:
        self.map.update(_abi.u32(vip_id), raw)


__all__ = [
    "NO_RING",
    "UNTIL_CHANGE_NS",
    "PrevRings",
    "Transition",
    "window_end",
    "window_ns",
    "window_seconds",
]
