"""The balancer's counters as the control plane reads them.

One map, `stats`: a row per possible CPU (struct xlb_cpu_row in
include/xlb_abi.h) holding that CPU's global counters (XDP actions,
reasons, connection-table events, how QUIC datagrams were routed and
the SYN-flood guard's and fragments' events, named by the ABI header's
enums) and its packets and bytes per VIP id and per real id. The control
plane reads it through a shared mapping and sums the rows: no system
call per read. A VIP id or a real id that is handed out again starts
from zero (`CpuStats.zero_*`), so a new owner never inherits its
predecessor's counts.
"""

from __future__ import annotations

import errno

import numpy as np
import numpy.typing as npt

from . import _abi, _limits
from ._bpf import Map, MappedArray, ffi, possible_cpus
from .errors import BpfError
from .model import Counter
from .xdp import ACTION_COUNTERS

STATS = "stats"
_ROW = "struct xlb_cpu_row"


def stats_sizes() -> dict[str, int]:
    """The `stats` map's size on this machine: a row per possible CPU."""
    return {STATS: possible_cpus()}


def counter_names() -> dict[int, str]:
    """Index among a CPU's counters -> name (from the ABI header's enums)."""
    names: dict[int, str] = {}
    for action, text in ACTION_COUNTERS.items():
        names[_limits.XLB_CNT_ACTION + action] = text
    for value, text in _abi.enum_names("enum xlb_reason", "XLB_R_").items():
        if text != "count":
            names[_limits.XLB_CNT_REASON + value] = text
    for value, text in _abi.enum_names("enum xlb_counter_index", "XLB_CNT_").items():
        if text not in ("action", "action_count", "reason", "count", "room"):  # not counters
            names[value] = text
    return names


def _words(row_field: str, count: int) -> slice:
    """Where a field of the row lies, in u64 words."""
    start = ffi.offsetof(_ROW, row_field) // 8
    return slice(start, start + count)


def _traffic(words: npt.NDArray[np.uint64], row_field: str, ids: int) -> npt.NDArray[np.uint64]:
    """A row's array of struct xlb_counter as (CPUs, ids, [packets, bytes])."""
    return words[:, _words(row_field, 2 * ids)].reshape(len(words), ids, 2)


class CpuStats:
    """The `stats` map through its mapping: every CPU's row as u64 words."""

    def __init__(self, stats: Map) -> None:
        if stats.value_size != ffi.sizeof(_ROW):
            raise BpfError(
                f"the stats map's rows are {stats.value_size} bytes where this xlb's are "
                f"{ffi.sizeof(_ROW)}: the program was built with other limits (include/xlb_abi.h)",
                errno.EINVAL,
            )
        self._mapped: MappedArray | None = stats.mapped()
        words = self._mapped.rows.view(np.uint64)  # (CPUs, words of a row)
        self._counters = words[:, _words("counters", _limits.XLB_CNT_COUNT)]
        self._vip = _traffic(words, "vip", _limits.XLB_LIMIT_MAX_VIPS)
        self._real = _traffic(words, "real", _limits.XLB_LIMIT_MAX_REALS)

    def close(self) -> None:
        if self._mapped is not None:
            del self._counters, self._vip, self._real
            self._mapped.close()
            self._mapped = None

    def counters(self) -> dict[str, int]:
        """Every global counter by name, summed over the CPUs."""
        summed = self._counters.sum(axis=0, dtype=np.uint64)
        return {name: int(summed[index]) for index, name in counter_names().items()}

    def vip(self, vip_id: int) -> Counter:
        """Packets and bytes forwarded for one VIP id."""
        return _summed(self._vip[:, vip_id])

    def real(self, real_id: int) -> Counter:
        """Packets and bytes forwarded to one real id."""
        return _summed(self._real[:, real_id])

    def zero_vip(self, vip_id: int) -> None:
        """A VIP id handed out again starts from zero on every CPU."""
        self._vip[:, vip_id] = 0

    def zero_reals(self, ids: list[int]) -> npt.NDArray[np.uint64]:
        """Zero these real ids' counts on every CPU; returns what
        `restore_reals` needs to put the old counts back."""
        old = self._real[:, ids].copy()
        self._real[:, ids] = 0
        return old

    def restore_reals(self, ids: list[int], old: npt.NDArray[np.uint64]) -> None:
        self._real[:, ids] = old


def _summed(per_cpu: npt.NDArray[np.uint64]) -> Counter:
    packets, nbytes = per_cpu.sum(axis=0, dtype=np.uint64)
    return Counter(int(packets), int(nbytes))


__all__ = ["STATS", "CpuStats", "counter_names", "stats_sizes"]
