"""Builds of the balancer on figure 3's veth path, one process:
`python -m bench.throughput_ab OLD.bpf.o [NEW.bpf.o ...] [--flows N] [--rounds N] [--nft]`.

bench.compare runs each path with one flow through BPF_PROG_TEST_RUN;
what many flows cost (the memory each flow's state lives in) shows only
when a core carries many of them. Here each round measures the reflector
(and with --nft nftables), then every build on one core with `--flows`
flows (figure 3's topology, generator and window), starting each round
with another build; printed: each build's Mpps and ratio to the baselines
of its round, and the medians of those ratios.
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


def ratios_by_round(
    builds: list[Path], flows: int, rounds: int, baselines: tuple[str, ...] = ("reflector",)
) -> dict[tuple[Path, str], list[float]]:
    """(build, baseline) -> the build's Mpps over the baseline's, one per
    round; the baselines run first in each round, the builds in turn."""
    ratios: dict[tuple[Path, str], list[float]] = {}
    topo = Topology()
    try:
        topo.create()
        with interruptible():
            for round_ in range(rounds):
                log(f"throughput_ab: {flows} flows, round {round_ + 1} of {rounds}")
                base = {}
                for mode in baselines:
                    topo.attach(mode)
                    base[mode] = mpps(topo, mode, flows)
                first = round_ % len(builds)
                for path in builds[first:] + builds[:first]:
                    topo.attach("xlb", object_path=path)
                    rate = mpps(topo, "xlb", flows)
                    for mode, baseline in base.items():
                        ratios.setdefault((path, mode), []).append(rate / baseline)
                    shown = ", ".join(f"{mode} {base_rate:.2f}" for mode, base_rate in base.items())
                    print(f"{path}: {rate:.2f} Mpps; {shown}", flush=True)
                topo.detach_dut()
    finally:
        topo.close()
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("builds", type=Path, nargs="+", help="xlb.bpf.o files, the older first")
    parser.add_argument("--flows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--nft", action="store_true", help="also measure nftables each round")
    args = parser.parse_args()
    builds: list[Path] = args.builds if len(args.builds) > 1 else [*args.builds, BALANCER_OBJECT]
    baselines = ("reflector", "nft") if args.nft else ("reflector",)
    ratios = ratios_by_round(builds, args.flows, args.rounds, baselines)
    for mode in baselines:
        print(f"xlb / {mode}, 1 core, {args.flows} flows, median of {args.rounds} rounds:")
        for path in builds:
            print(f"  {median(ratios[(path, mode)]):.3f}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
