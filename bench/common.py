"""Shared pieces of the benchmarks: building the bench programs, pinning to a
CPU, robust statistics, machine facts. No figure is computed here.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import build  # the repository root's build.py: one way to compile BPF

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
BUILD_DIR = ROOT / "build" / "bench"


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# A section starts once the machine is this idle (CPU time not idle, all
# CPUs, over one window) or after the deadline: the section before it may
# leave the kernel tearing down namespaces and freeing hundreds of MB of maps
# for seconds, and the CPU-bound sections (Maglev, control plane) measured
# half again as slow when they ran into that.
QUIET_BUSY = 0.10
QUIET_WINDOW_S = 0.5
QUIET_DEADLINE_S = 60.0


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user .. steal


def busy_fraction(window_s: float) -> float:
    """The share of the CPUs' time that was not idle over `window_s`."""
    idle0, total0 = _cpu_times()
    time.sleep(window_s)
    idle1, total1 = _cpu_times()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_until_quiet() -> float:
    """Wait until the machine is idle (QUIET_BUSY); the seconds waited."""
    start = time.monotonic()
    while busy_fraction(QUIET_WINDOW_S) > QUIET_BUSY:
        if time.monotonic() - start > QUIET_DEADLINE_S:
            log(f"the machine stayed busy for {QUIET_DEADLINE_S:.0f} s: measuring anyway")
            break
    return round(time.monotonic() - start, 1)


def compile_bpf(name: str, defines: dict[str, int] | None = None) -> Path:
    """Compile bench/<name>.bpf.c (always: the objects are part of the run)."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    obj = BUILD_DIR / f"{name}.bpf.o"
    build.compile_bpf(BENCH_DIR / f"{name}.bpf.c", obj, [BENCH_DIR], defines)
    return obj


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Run the block with the calling thread on one CPU.

    BPF_F_TEST_RUN_ON_CPU is refused for XDP programs (the kernel accepts
    it only for raw tracepoints), and BPF_PROG_TEST_RUN runs on the calling
    thread's CPU with migration disabled, so affinity is what pins it.
    """
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: how much the rounds disagreed."""
    mid = median(values)
    return (max(values) - min(values)) / mid if mid else 0.0


@dataclass
class Rounds:
    """Per-round samples of named figures, measured interleaved."""

    samples: dict[str, list[float]]

    @classmethod
    def collect(cls, cases: dict[str, Callable[[], float]], rounds: int) -> Rounds:
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, case in cases.items():
                samples[name].append(case())
        return cls(samples)

    def median(self, name: str) -> float:
        return median(self.samples[name])

    def ratio(self, name: str, baseline: str) -> float:
        """Median over rounds of the per-round ratio (drift cancels per round)."""
        return median(
            [a / b for a, b in zip(self.samples[name], self.samples[baseline], strict=True)]
        )


def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    os_name = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    tools = {}
    for tool, args in {
        "clang": ["clang", "--version"],
        "gcc": ["gcc", "--version"],
        "nft": ["nft", "--version"],
        "bpftool": ["bpftool", "version"],
    }.items():
        with contextlib.suppress(OSError):
            out = subprocess.run(args, capture_output=True, text=True).stdout
            tools[tool] = out.splitlines()[0].strip() if out else ""
    return {
        "cpu": cpu_model,
        "cpus_online": os.cpu_count(),
        "memory_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
        "tools": tools,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
