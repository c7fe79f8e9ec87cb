"""Where one packet path's time goes, by source line:
`python -m bench.hotlines [ROW] [--seconds S] [--top N]` (ROW: a frame of
bench/pktpath.py, default v4_ack: the TCP hit).

This VM has no hardware counters, but perf's cpu-clock sampling lands in
JITed BPF programs. The row runs through BPF_PROG_TEST_RUN on one pinned
CPU while `perf record -e cpu-clock -C CPU` samples it; each sample in the
balancer is an offset in its JIT image, which the kernel's jited line info
maps to an instruction, and bpftool's xlated dump (`linum`) maps that to a
source line. A sample counts against the line whose instructions were
running or waiting (a load that misses shows up on the line that waits
for it). Printed: the share of the balancer's samples per line and per file.
"""

from __future__ import annotations

import argparse
import bisect
import re
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path

from xlb import Balancer, BalancerConfig
from xlb._bpf import Program
from xlb.testing import GATEWAY_MAC

from .common import log, pinned
from .pktpath import CPU, FRAMES, WARM_FIRST, configure
from .progs import Flows, Harness

REPEAT = 200_000
LINE = re.compile(r"\s*;\s*(.*?)\s*\[file:(\S+) line_num:(\d+)")
INSN = re.compile(r"\s*(\d+):")


def source_of_insns(program: Program) -> dict[int, tuple[str, str]]:
    """Instruction index -> (file:line, source text), from bpftool's xlated dump."""
    info = program.info()
    dump = subprocess.run(
        ["bpftool", "prog", "dump", "xlated", "id", str(info["id"]), "linum"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    source: dict[int, tuple[str, str]] = {}
    line = ("?", "")
    for text in dump.splitlines():
        if m := LINE.match(text):
            line = (f"{Path(m[2]).name}:{m[3]}", m[1])
        elif m := INSN.match(text):
            source[int(m[1])] = line
    return source


def sampled_offsets(perf_data: Path, symbol_suffix: str) -> Counter[int]:
    """Samples per offset in the symbol ending with `symbol_suffix`."""
    script = subprocess.run(
        ["perf", "script", "-i", str(perf_data), "-F", "ip,sym,symoff"],  # sym needs ip
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    offsets: Counter[int] = Counter()
    for text in script.split():
        name, _, offset = text.partition("+0x")
        if name.endswith(symbol_suffix) and offset:
            offsets[int(offset, 16)] += 1
    return offsets


def by_line(program: Program, offsets: Counter[int]) -> Counter[tuple[str, str]]:
    """Samples per source line: each offset goes to the line-info record
    at or before it."""
    lines = program.jited_lines()
    starts = [start for start, _ in lines]
    source = source_of_insns(program)
    counts: Counter[tuple[str, str]] = Counter()
    for offset, samples in offsets.items():
        i = bisect.bisect_right(starts, offset) - 1
        insn = lines[i][1] if i >= 0 else -1
        counts[source.get(insn, ("?", f"insn {insn}"))] += samples
    return counts


def run_row(
    lb: Balancer, h: Harness, row: str, running: threading.Event, stop: threading.Event
) -> None:
    """The row's packet, again and again on CPU, until `stop`."""
    frame = FRAMES[row]
    with pinned(CPU):
        while not stop.is_set():
            h.measure(lb.program, frame, Flows.fixed(frame), REPEAT)
            running.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("row", nargs="?", default="v4_ack", choices=sorted(FRAMES))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    lb = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    h = Harness()
    running, stop = threading.Event(), threading.Event()
    try:
        configure(lb)
        if args.row in WARM_FIRST:
            lb.program.test_run(FRAMES[WARM_FIRST[args.row]])
        lb.program.test_run(FRAMES[args.row])  # learn the flow
        runner = threading.Thread(target=run_row, args=(lb, h, args.row, running, stop))
        runner.start()
        running.wait()
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "perf.data"
            log(f"hotlines: sampling CPU {CPU} for {args.seconds} s while {args.row} runs")
            subprocess.run(
                ["perf", "record", "-q", "-e", "cpu-clock", "-C", str(CPU), "-o", str(data),
                 "--", "sleep", str(args.seconds)],
                check=True, capture_output=True,
            )  # fmt: skip
            stop.set()
            runner.join()
            counts = by_line(lb.program, sampled_offsets(data, "_" + lb.program.name))
    finally:
        stop.set()
        h.close()
        lb.close()
    total = sum(counts.values()) or 1
    print(f"{args.row}: {total} samples in {lb.program.name}, by source line")
    for (where, text), samples in counts.most_common(args.top):
        print(f"{100 * samples / total:5.1f}%  {where:<18} {text[:90]}")
    files: Counter[str] = Counter()
    for (where, _), samples in counts.items():
        files[where.split(":")[0]] += samples
    print("by file: " + ", ".join(f"{f} {100 * n / total:.0f}%" for f, n in files.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
