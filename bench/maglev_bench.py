"""Time xlb.maglev.build_table against the C reference (bench/maglev_ref.c).

Usage: python3 bench/maglev_bench.py [--repeat R] [--literal] [--cc gcc]

For each configuration it compiles nothing twice: maglev_ref is built once
with ``gcc -O2`` into a temporary directory. Both sides are timed from
packed addresses to finished table (the C side times only the build, not
reading stdin; the numpy side gets `bytes` so it parses no text either),
taking the best of R runs (under `python -m bench`: of 30, in alternating
batches of 5, so that a slow spell of the shared VM falls on both sides).
The tables must agree: the C checksum is
compared with the same checksum of the numpy table. With --literal it also
times the pure-Python sequential loop once (slow: tens of seconds).
Prints a table; nothing is written to disk besides the temporary build.
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # after PYTHONPATH, so an installed xlb wins

from xlb import maglev  # noqa: E402

CONFIGS = [(10, 65537), (100, 65537), (1000, 65537), (5000, 65537), (1000, 655373)]


def compile_reference(directory: Path, cc: str) -> Path:
    binary = directory / "maglev_ref"
    source = ROOT / "bench" / "maglev_ref.c"
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-o", str(binary), str(source)], check=True)
    return binary


def checksum(table: npt.NDArray[np.int32]) -> int:
    """sum((table[i] + 1) * (2i + 1)) mod 2**64, as maglev_ref prints it."""
    odd = np.arange(table.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    return int(np.sum((table.astype(np.int64) + 1).astype(np.uint64) * odd, dtype=np.uint64))


def addresses(count: int) -> list[ipaddress.IPv4Address]:
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    return [ipaddress.IPv4Address(base + 1 + i) for i in range(count)]


def time_c(
    binary: Path, reals: list[ipaddress.IPv4Address], size: int, repeat: int
) -> tuple[float, float, int]:
    """(best wall seconds, least thread CPU seconds, checksum) of `repeat` builds."""
    stdin = "".join(f"{real}\n" for real in reals)
    out = subprocess.run(
        [str(binary), str(size), str(repeat)],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = dict(item.split("=") for item in out.split())
    return int(fields["best_ns"]) / 1e9, int(fields["best_cpu_ns"]) / 1e9, int(fields["checksum"])


def best_time(
    build: Callable[[], npt.NDArray[np.int32]], repeat: int
) -> tuple[float, float, npt.NDArray[np.int32]]:
    """(best wall seconds, least thread CPU seconds, table) of `repeat` builds."""
    best, best_cpu, table = float("inf"), float("inf"), build()  # the first call warms caches
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.thread_time()
        table = build()
        best_cpu = min(best_cpu, time.thread_time() - start_cpu)
        best = min(best, time.perf_counter() - start)
    return best, best_cpu, table


def interleaved(
    binary: Path,
    reals: list[ipaddress.IPv4Address],
    packed: list[bytes],
    size: int,
    batches: int,
    repeat: int,
) -> tuple[float, float, int, float, float, npt.NDArray[np.int32]]:
    """C and numpy timed in alternating batches of `repeat` builds: (C best
    wall, C least CPU, C checksum, numpy best wall, numpy least CPU, table)."""
    c_wall = c_cpu = np_wall = np_cpu = float("inf")
    c_sum, table = 0, np.empty(0, dtype=np.int32)
    for _ in range(batches):
        wall, cpu, c_sum = time_c(binary, reals, size, repeat)
        c_wall, c_cpu = min(c_wall, wall), min(c_cpu, cpu)
        wall, cpu, table = best_time(partial(maglev.build_table, packed, size), repeat)
        np_wall, np_cpu = min(np_wall, wall), min(np_cpu, cpu)
    return c_wall, c_cpu, c_sum, np_wall, np_cpu, table


def run(quick: bool) -> dict[str, Any]:
    """Figure 4 for `python -m bench`: every CONFIGS row, C vs numpy vs Python loop."""
    batches, repeat = (1, 3) if quick else (6, 5)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        binary = compile_reference(Path(tmp), "gcc")
        for count, size in CONFIGS:
            reals = addresses(count)
            packed = [real.packed for real in reals]
            c_seconds, c_cpu, c_sum, np_seconds, np_cpu, table = interleaved(
                binary, reals, packed, size, batches, repeat
            )
            start = time.perf_counter()
            literal = maglev.build_table_literally(packed, size)
            py_seconds = time.perf_counter() - start
            rows[f"{count}x{size}"] = {
                "reals": count,
                "size": size,
                "c_ms": round(c_seconds * 1e3, 3),
                "numpy_ms": round(np_seconds * 1e3, 3),
                "python_loop_ms": round(py_seconds * 1e3, 1),
                "numpy_vs_c": round(np_seconds / c_seconds, 2),
                "c_cpu_ms": round(c_cpu * 1e3, 3),
                "numpy_cpu_ms": round(np_cpu * 1e3, 3),
                "numpy_vs_c_cpu": round(np_cpu / c_cpu, 2),
                "python_loop_vs_c": round(py_seconds / c_seconds, 1),
                "tables_equal": checksum(table) == c_sum and bool(np.array_equal(literal, table)),
            }
    return {
        "method": (
            f"best of {batches * repeat} builds each, in {batches} alternating batches of "
            f"{repeat} (C, then numpy after one warm-up build, and again), so that a slow "
            "spell of this shared VM falls on both sides; from packed addresses to finished "
            "table; C = bench/maglev_ref.c built with gcc -O2 in this run, timed inside the "
            "binary; Python loop = xlb.maglev.build_table_literally, one build; the CPU "
            "columns: the least CPU time of the building thread among the same builds "
            "(what preemption on this shared VM does not inflate)"
        ),
        "rows": rows,
        "maglev_vs_c": max(r["numpy_vs_c"] for r in rows.values()),
        "maglev_vs_c_cpu": max(r["numpy_vs_c_cpu"] for r in rows.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--literal", action="store_true", help="also time the pure-Python loop")
    parser.add_argument("--cc", default="gcc")
    args = parser.parse_args()

    header = f"{'reals':>6} {'size':>7} {'C ms':>8} {'numpy ms':>9} {'ratio':>6}"
    print(header + (f" {'python ms':>10}" if args.literal else "") + "  tables")
    with tempfile.TemporaryDirectory() as tmp:
        binary = compile_reference(Path(tmp), args.cc)
        for count, size in CONFIGS:
            reals = addresses(count)
            packed = [real.packed for real in reals]
            c_seconds, _, c_sum = time_c(binary, reals, size, args.repeat)
            np_seconds, _, table = best_time(partial(maglev.build_table, packed, size), args.repeat)
            line = f"{count:>6} {size:>7} {c_seconds * 1e3:>8.2f} {np_seconds * 1e3:>9.2f}"
            line += f" {np_seconds / c_seconds:>6.2f}"
            if args.literal:
                start = time.perf_counter()
                literal = maglev.build_table_literally(packed, size)
                line += f" {(time.perf_counter() - start) * 1e3:>10.0f}"
                assert np.array_equal(literal, table), "literal loop disagrees"
            line += "  equal" if checksum(table) == c_sum else "  DIFFER"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
