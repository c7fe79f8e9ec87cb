"""The balancer's counters as the control plane reads them.

Three per-CPU maps, every read summed over the CPUs: `counters` (XDP
actions, reasons, connection-table events, how QUIC datagrams were
routed and the SYN-flood guard's and fragments' events, named by the ABI
header's enums), `vip_stats` (packets and bytes per VIP id) and
`real_stats` (per real id). A VIP id or a real id that is handed out
again starts from zero (`zero_stats`), so a new owner never inherits its
predecessor's counts.
"""

from __future__ import annotations

from . import _abi, _limits
from ._bpf import Map
from .model import Counter
from .xdp import ACTION_COUNTERS


def counter_names() -> dict[int, str]:
    """Index in the `counters` map -> name (from the ABI header's enums)."""
    names: dict[int, str] = {}
    for action, text in ACTION_COUNTERS.items():
        names[_limits.XLB_CNT_ACTION + action] = text
    for value, text in _abi.enum_names("enum xlb_reason", "XLB_R_").items():
        if text != "count":
            names[_limits.XLB_CNT_REASON + value] = text
    for value, text in _abi.enum_names("enum xlb_counter_index", "XLB_CNT_").items():
        if text not in ("action", "action_count", "reason", "count"):  # markers, not counters
            names[value] = text
    return names


def read_counters(counters: Map) -> dict[str, int]:
    """Every global counter by name, in the `counters` map's order."""
    summed = counters.sum_percpu(_abi.u32(0))  # one value: every counter
    return {name: int(summed[index]) for index, name in counter_names().items()}


def read_traffic(stats: Map, index: int) -> Counter:
    """Packets and bytes of one id in `vip_stats` or `real_stats`."""
    packets, nbytes = stats.sum_percpu(_abi.u32(index))
    return Counter(int(packets), int(nbytes))


def zero_stats(stats: Map, index: int) -> None:
    """Zero one id's counters on every CPU."""
    stats.update(_abi.u32(index), bytes(stats.stored_value_size))


def zero_stats_undoably(stats: Map, ids: list[int]) -> tuple[bytes, bytes, int]:
    """Zero these ids' counters (one batch); returns the batch that puts
    the old counts back (keys, values, count: Map.update_batch's arguments)."""
    size = stats.stored_value_size
    old = b"".join(stats.lookup(_abi.u32(i)) or bytes(size) for i in ids)
    if ids:
        stats.update_batch(_abi.u32_keys(ids), bytes(size * len(ids)), len(ids))
    return _abi.u32_keys(ids), old, len(ids)


__all__ = [
    "counter_names",
    "read_counters",
    "read_traffic",
    "zero_stats",
    "zero_stats_undoably",
]
