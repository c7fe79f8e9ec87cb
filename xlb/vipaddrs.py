"""What the data plane keeps per VIP address, beside the VIPs themselves.

`vip_filter`: a bit per address hash, set while a VIP that uses the
connection table may have that address (xlb_abi.h), so that packets to
other addresses skip the connection-table lookup. Reference counts per
bit; a bit is set before such a VIP exists and cleared after the last one
went, though a wrong bit would only cost speed.

`vip_addrs`: address -> number of VIPs on it; it makes the data plane
answer pings to every VIP address. `vip_prefix_addrs` does the same for
the prefixes of prefix VIPs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable

import numpy as np

from . import _abi, _limits
from ._bpf import Map
from .errors import BpfError
from .model import Vip, VipFlags

#: VIPs that never use the connection table (QUIC VIPs route by connection ID).
TABLELESS = VipFlags.NO_CONN_TABLE | VipFlags.QUIC


class VipFilter:
    """The `vip_filter` map's bits and the reference counts behind them."""

    def __init__(self, filter_map: Map, vips: Iterable[tuple[Vip, VipFlags]]) -> None:
        """Count the adopted `vips` in, and write the words the map gets
        wrong: all of a fresh data plane's, or those an older process left."""
        self.map = filter_map  # the Balancer points it at a new object's map on upgrade
        self._refs = np.zeros(1 << _limits.XLB_VIP_FILTER_BITS_LOG2, dtype=np.int64)
        for vip, flags in vips:
            if not flags & TABLELESS and not vip.is_prefix:
                self._refs[_abi.vip_filter_bit(vip.address)] += 1
        bits = np.packbits(self._refs > 0, bitorder="little")
        words = bits.view(np.uint64).copy()  # bit i of word w is filter bit 64 * w + i
        _, raw, count = filter_map.lookup_batch()
        stale = np.flatnonzero(np.frombuffer(raw, dtype=np.uint64, count=count) != words)
        if stale.size:
            keys = stale.astype(np.uint32).tobytes()
            filter_map.update_batch(keys, words[stale].tobytes(), stale.size)
        self._words = words

    def mark(self, vip: Vip, flags: VipFlags, delta: int) -> None:
        """Count a VIP with `flags` in (+1) or out (-1) of its address's bit.
        A prefix VIP has no bit: its established flows take the VIP path
        (the filter cannot mark every address of a prefix)."""
        if flags & TABLELESS or vip.is_prefix:
            return
        bit = _abi.vip_filter_bit(vip.address)
        self._refs[bit] += delta
        word, mask = bit // 64, 1 << (bit % 64)
        old = int(self._words[word])
        new = old | mask if self._refs[bit] > 0 else old & ~mask
        if new != old:
            self.map.update(_abi.u32(word), new.to_bytes(8, sys.byteorder))
            self._words[word] = new


def count_vip_address(addrs: Map, vip: Vip, delta: int) -> None:
    """Count a VIP in (+1) or out (-1) of `vip_addrs`; an address no VIP
    has any more leaves the map."""
    key = _abi.vip_address_key(vip.address)
    count = (_abi.read_u32(addrs.lookup(key) or _abi.u32(0))) + delta
    if count > 0:
        addrs.update(key, _abi.u32(count))
    else:
        with contextlib.suppress(BpfError):
            addrs.delete(key)


def count_vip_prefix(prefix_addrs: Map, vip: Vip, delta: int) -> None:
    """Count a prefix VIP in (+1) or out (-1) of `vip_prefix_addrs`; a
    prefix no VIP has any more leaves the map."""
    key = _abi.vip_prefix_key(vip, address_only=True)
    count = (_abi.read_u32(prefix_addrs.lookup(key) or _abi.u32(0))) + delta
    if count > 0:
        prefix_addrs.update(key, _abi.u32(count))
    else:
        with contextlib.suppress(BpfError):
            prefix_addrs.delete(key)


__all__ = ["VipFilter", "count_vip_address", "count_vip_prefix"]
