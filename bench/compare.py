"""Builds of the balancer, the same rows, one process:
`python -m bench.compare OLD.bpf.o [NEW.bpf.o ...] [--rounds N] [--repeat N]`
(NEW defaults to this checkout's object; several NEW objects are each
compared with OLD: variants of one change, measured side by side).

For a change to the data plane: is a path (the established-flow hit, a
new flow, traffic to no VIP) as fast as before? Separate bench runs drift
apart on a shared VM more than the difference sought; here both objects
run interleaved, round after round, behind the same wrapper on the same
CPU, and each row reports the median over rounds of new / old.

Both are programmed by this checkout's control plane with bench/pktpath.py's
services. An older object may lack maps the control plane now programs
(a feature added since): those are given scratch maps of this build, which
the old program never reads. Nothing is written to bench/results.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from xlb import Balancer, BalancerConfig
from xlb._bpf import BpfObject, Map, Program
from xlb.balancer import BALANCER_OBJECT
from xlb.testing import GATEWAY_MAC

from .common import log, pinned
from .pktpath import CPU, FRAMES, WARM_FIRST, configure
from .progs import Flows, Harness

# row -> frame; rows whose frame is absent from an old build's behaviour are left out
ROWS = {
    "v4_tcp_hit": "v4_ack",
    "v6_tcp_hit": "v6_ack",
    "v4_udp_hit": "v4_udp",
    "v4_tcp_syn_existing": "v4_syn",
    "v4_no_conn_table": "v4_bypass",
    "v4_not_vip_pass": "v4_not_vip",
    "v4_gue_hit": "v4_gue",
}
SYN_NEW = "v4_tcp_syn_new"
# maps this control plane programs that an older object may not have
# (`stats`: an older object counts into per-CPU maps of its own)
SCRATCH_MAPS = ("vip_prefixes", "vip_prefix_addrs", "syn_flood", "frags", "stats")


class OlderBalancer(Balancer):
    """A Balancer over an older object: maps it lacks come from `scratch`."""

    scratch: dict[str, Map] = {}

    def _open_object(self, object_path: str | Path, reload: bool) -> BpfObject:
        obj = super()._open_object(object_path, reload)
        for name, scratch_map in self.scratch.items():
            obj.maps.setdefault(name, scratch_map)
        return obj


def measure_syn_new(h: Harness, prog: Program, offset: list[int], repeat: int) -> float:
    """New flows: client addresses never seen by this program (as pktpath's row)."""
    frame = FRAMES["v4_syn"]
    flows = Flows.varying(frame, 1 << 30)
    flows = Flows(
        flows.src_off, (flows.src_base + 0x100 + offset[0]) & 0xFFFFFFFF, 1 << 30,
        flows.dst_off, flows.dst_base, 1,
    )  # fmt: skip
    offset[0] += repeat
    return h.measure(prog, frame, flows, repeat)


def print_rows(ns: dict[tuple[str, str], list[float]], which: str) -> None:
    """Each row's median ns, old and `which`, and the median of their ratios."""
    print(f"{'row':<24}{'old ns':>10}{'new ns':>10}{'new/old':>10}")
    for row in [*ROWS, SYN_NEW]:
        o, n = ns[(row, "old")], ns[(row, which)]
        ratio = statistics.median(b / a for a, b in zip(o, n, strict=True))
        print(f"{row:<24}{statistics.median(o):>10.1f}{statistics.median(n):>10.1f}{ratio:>10.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("old", type=Path, help="the older xlb.bpf.o")
    parser.add_argument("new", type=Path, nargs="*", default=[BALANCER_OBJECT])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=200_000)
    args = parser.parse_args()
    # the SYN-flood guard off: the new-flow row measures inserts, as the old build does
    config = BalancerConfig(gateway_mac=GATEWAY_MAC, syn_flood_threshold=0)
    news = [Balancer(config=config, object_path=path) for path in args.new]
    OlderBalancer.scratch = {name: news[0].map(name) for name in SCRATCH_MAPS}
    old = OlderBalancer(config=config, object_path=args.old)
    balancers = {"old": old} | {f"new{i}": lb for i, lb in enumerate(news)}
    h = Harness()
    try:
        for lb in balancers.values():
            configure(lb)
            for name in ROWS.values():
                if name in WARM_FIRST:
                    lb.program.test_run(FRAMES[WARM_FIRST[name]])
                lb.program.test_run(FRAMES[name])  # learn the flow
        progs = {which: lb.program for which, lb in balancers.items()}
        offsets: dict[str, list[int]] = {which: [0] for which in balancers}
        ns: dict[tuple[str, str], list[float]] = {}
        with pinned(CPU):
            for r in range(args.rounds):
                log(f"compare: round {r + 1} of {args.rounds}")
                # each round starts with another build: none always runs first
                order = list(progs.items())
                order = order[r % len(order) :] + order[: r % len(order)]
                for row, frame_name in ROWS.items():
                    frame = FRAMES[frame_name]
                    repeat = args.repeat // 10 if "syn" in row else args.repeat
                    for which, prog in order:
                        ns.setdefault((row, which), []).append(
                            h.measure(prog, frame, Flows.fixed(frame), repeat)
                        )
                for which, prog in order:
                    syn_new = measure_syn_new(h, prog, offsets[which], args.repeat // 10)
                    ns.setdefault((SYN_NEW, which), []).append(syn_new)
        for i, path in enumerate(args.new):
            print(f"new{i}: {path}")
            print_rows(ns, f"new{i}")
    finally:
        h.close()
        for lb in balancers.values():
            lb.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
