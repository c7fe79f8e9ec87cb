"""The SYN-flood guard's state as the control plane reads it (bpf/flood.h).

`syn_flood` is a per-CPU array of one `struct xlb_syn_flood`: each CPU's
count of SYNs in its current window (XLB_SYN_FLOOD_WINDOW_NS, one second)
and in the window before it. `flood_windows` says which CPUs are under a
flood now, computing what the data plane's next SYN would find.

`rewind_windows` moves every CPU's window start back by some seconds. The
guard's clock is CLOCK_MONOTONIC (coarse), which nothing can set; moving
the windows is how a test makes a window end, or the one before it age
out, without waiting for the time to pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import _abi, _limits
from ._bpf import Map, ffi

WINDOW_NS = _limits.XLB_SYN_FLOOD_WINDOW_NS
#: Linux's CLOCK_MONOTONIC_COARSE (<linux/time.h>), which Python's time module does not name.
CLOCK_MONOTONIC_COARSE = 6
MAP_NAME = "syn_flood"


@dataclass(frozen=True, slots=True)
class CpuFloodWindow:
    """One CPU's SYN-flood guard as its next SYN would find it."""

    cpu: int
    syns: int  # SYNs of the current window (0 if that window has ended)
    last_syns: int  # SYNs of the window just before it
    under_flood: bool  # a SYN without an entry records none


def _dtype() -> np.dtype[np.void]:
    ctype = "struct xlb_syn_flood"
    return np.dtype(
        {
            "names": ["window_ns", "syns", "last_syns"],
            "formats": [np.uint64, np.uint32, np.uint32],
            "offsets": [ffi.offsetof(ctype, f) for f in ("window_ns", "syns", "last_syns")],
            "itemsize": ffi.sizeof(ctype),
        }
    )


def clock_ns() -> int:
    """The guard's clock: what bpf_ktime_get_coarse_ns() reads."""
    return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)


def _rows(flood: Map) -> npt.NDArray[np.void]:
    rows: npt.NDArray[np.void] = flood.lookup_percpu(_abi.u32(0), _dtype())[:, 0]
    return rows


def flood_windows(flood: Map, threshold: int, now_ns: int | None = None) -> list[CpuFloodWindow]:
    """Every CPU's window at `now_ns` (default: now), rolled as the data
    plane rolls it (xlb_abi.h, struct xlb_syn_flood); never under a flood
    with the guard off (threshold 0)."""
    now = clock_ns() if now_ns is None else now_ns
    windows = []
    for cpu, row in enumerate(_rows(flood)):
        age = now - int(row["window_ns"])
        syns, last = int(row["syns"]), int(row["last_syns"])
        if age >= WINDOW_NS:
            syns, last = 0, syns if age < 2 * WINDOW_NS else 0
        under = threshold > 0 and (syns > threshold or last > threshold)
        windows.append(CpuFloodWindow(cpu, syns, last, under))
    return windows


def rewind_windows(flood: Map, seconds: float) -> None:
    """Move every CPU's window start `seconds` into the past, as if that
    much time had gone by (for tests; see the module docstring)."""
    rows = _rows(flood).copy()
    back = np.uint64(int(seconds * 1e9))
    starts = rows["window_ns"]
    rows["window_ns"] = np.where(starts > back, starts - back, np.uint64(0))
    stride = (flood.value_size + 7) // 8 * 8
    raw = np.zeros((len(rows), stride), dtype=np.uint8)
    raw[:, : flood.value_size] = rows.view(np.uint8).reshape(len(rows), -1)
    flood.update(_abi.u32(0), raw.tobytes())


__all__ = ["WINDOW_NS", "CpuFloodWindow", "clock_ns", "flood_windows", "rewind_windows"]
