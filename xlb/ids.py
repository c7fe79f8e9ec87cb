"""Ids of VIPs and reals: which are free, and when a real id may be reused.

A VIP id indexes the VIP's counters and ring slots; a real id indexes the
`reals` map and the real's counters. Every handing-out of a real id comes
with a new generation (never 0: 0 marks an id never handed out), which the
connection table records, so an entry made for an id's earlier owner is a
miss.

A retired real id is handed out again only once the grace ticket issued
after its retirement has passed: a packet that read the old ring just
before a flip may still pick the id, and must not reach its next owner
(the order of a change is in xlb/balancer.py). Ids never handed out go
first: their counters are known zeros and nothing waits on them.

An id that a VIP's previous ring still names (second chance, see
xlb/prevring.py) is held until that ring's window closes: its entry keeps
the departed real's address, which packets carry to the reals. Held ids
are handed out last, only when no other id is free.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable

import numpy as np
import numpy.typing as npt

from . import _limits
from .errors import CapacityError
from .rings import GraceSource

MAX_VIPS = _limits.XLB_LIMIT_MAX_VIPS
MAX_REALS = _limits.XLB_LIMIT_MAX_REALS
_GEN_WRAP = 0xFFFFFFFF  # generations are u32 and skip 0


def free_vip_id(used: Collection[int]) -> int:
    """The lowest VIP id not in `used`."""
    for vip_id in range(MAX_VIPS):
        if vip_id not in used:
            return vip_id
    raise CapacityError(f"all {MAX_VIPS} VIP slots are in use")


# Ids as a list or an array: numpy indexes with either.
IdList = list[int] | npt.NDArray[np.int64]


class RealIds:
    """Which real ids are in use, their generations, and when each retired
    one may be handed out again (a grace ticket of `grace`)."""

    def __init__(
        self, gens: npt.NDArray[np.uint32], in_use: Iterable[int], grace: GraceSource
    ) -> None:
        """`gens`: every id's generation as the `reals` map holds it;
        `in_use`: the ids the adopted VIPs' reals hold. Ids an earlier
        process retired wait for one grace period from now."""
        self._grace = grace
        self._gen = gens
        self._in_use = np.zeros(len(gens), dtype=bool)
        for real_id in in_use:
            self._in_use[real_id] = True
        # Grace ticket after which a retired id may be handed out again.
        self._reusable_after = np.zeros(len(gens), dtype=np.int64)
        # CLOCK_MONOTONIC ns until which a previous ring names it (0: none).
        self._held_until = np.zeros(len(gens), dtype=np.uint64)
        retired = ~self._in_use & (self._gen != 0)
        if retired.any():
            self._reusable_after[retired] = grace.ticket()

    def reserve(self, count: int) -> tuple[list[int], list[int]]:
        """(ids, their next generations) for `count` new reals; the ids stay
        free until `take`. Waits for the grace of any retired id it picks."""
        ids = self._free(count)
        gens: list[int] = (self._gen[ids].astype(np.int64) % _GEN_WRAP + 1).tolist()  # never 0
        return ids.tolist(), gens

    def handed_out_before(self, ids: Iterable[int]) -> list[int]:
        """Those of `ids` that had an owner before (their counters may not
        be zeros), sorted."""
        wanted = np.fromiter(ids, dtype=np.int64)
        before: list[int] = np.sort(wanted[self._gen[wanted] != 0]).tolist()
        return before

    def take(self, ids: list[int], gens: list[int]) -> None:
        """Mark reserved ids in use with their new generations (once the
        change that uses them can no longer fail)."""
        index = np.array(ids, dtype=np.int64)  # one pass per array, not three per id
        self._gen[index] = gens
        self._in_use[index] = True
        self._held_until[index] = 0

    def retire(self, ids: list[int]) -> None:
        """Mark ids out of use; they wait for `reusable_after`'s ticket."""
        self._in_use[ids] = False

    def reusable_after(self, ids: IdList, ticket: int) -> None:
        """Retired `ids` may be handed out again once `ticket` has passed."""
        self._reusable_after[ids] = ticket

    def hold(self, ids: IdList, until_ns: int) -> None:
        """Retired `ids` are named by a previous ring until `until_ns`
        (CLOCK_MONOTONIC); 0 releases them."""
        self._held_until[ids] = until_ns

    def _free(self, count: int) -> npt.NDArray[np.int64]:
        """Ids never handed out first (their stats are known zeros), then
        retired ones, earliest retired first, once their grace has passed;
        ids a previous ring holds come last."""
        free = ~self._in_use
        fresh = np.flatnonzero(free & (self._gen == 0))
        if len(fresh) >= count:  # no retired id needed: skip ordering them
            return fresh[:count]
        retired = np.flatnonzero(free & (self._gen != 0))
        if len(fresh) + len(retired) < count:
            raise CapacityError(f"no room for {count} more reals (limit {MAX_REALS})")
        held = self._held_until[retired] > time.monotonic_ns()
        order = np.lexsort((self._reusable_after[retired], held))
        reused = retired[order][: count - len(fresh)]
        self._grace.wait(int(self._reusable_after[reused].max()))
        return np.concatenate([fresh, reused])


__all__ = ["MAX_REALS", "MAX_VIPS", "RealIds", "free_vip_id"]
