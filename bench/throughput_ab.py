"""Builds of the balancer on figure 3's veth path, one process:
`python -m bench.throughput_ab OLD.bpf.o [NEW.bpf.o ...] [--flows N] [--rounds N]`.

bench.compare runs each path with one flow through BPF_PROG_TEST_RUN;
what many flows cost (the memory each flow's state lives in) shows only
when a core carries many of them. Here each round measures the reflector,
then every build on one core with `--flows` flows (figure 3's topology,
generator and window), starting each round with another build; printed:
each build's Mpps and ratio to the reflector of its round, and the
medians of those ratios.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xlb.balancer import BALANCER_OBJECT

from .common import log, median
from .throughput import BUCKET, Topology, interruptible, measure

WARMUP_S, WINDOW_S = 0.3, 1.0


def mpps(topo: Topology, mode: str, flows: int) -> float:
    frame = topo.set_flows(flows)
    return measure(topo, frame, 1, WARMUP_S, WINDOW_S)[BUCKET[mode]] / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("builds", type=Path, nargs="+", help="xlb.bpf.o files, the older first")
    parser.add_argument("--flows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    builds: list[Path] = args.builds if len(args.builds) > 1 else [*args.builds, BALANCER_OBJECT]
    ratios: dict[Path, list[float]] = {path: [] for path in builds}
    topo = Topology()
    try:
        topo.create()
        with interruptible():
            for round_ in range(args.rounds):
                log(f"throughput_ab: round {round_ + 1} of {args.rounds}")
                topo.attach("reflector")
                reflector = mpps(topo, "reflector", args.flows)
                first = round_ % len(builds)
                for path in builds[first:] + builds[:first]:
                    topo.attach("xlb", object_path=path)
                    rate = mpps(topo, "xlb", args.flows)
                    ratios[path].append(rate / reflector)
                    print(f"{path}: {rate:.2f} Mpps, reflector {reflector:.2f}", flush=True)
                topo.detach_dut()
    finally:
        topo.close()
    print(f"xlb / reflector, 1 core, {args.flows} flows, median of {args.rounds} rounds:")
    for path in builds:
        print(f"  {median(ratios[path]):.3f}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
