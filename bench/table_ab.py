"""Two builds of the balancer over a full connection table, one process:
`python -m bench.table_ab OLD.bpf.o [NEW.bpf.o] [--replays N]`.

bench.compare measures each path with one flow, whose state stays in the
CPU's caches; a change that adds memory to a packet's path (a cache in
front of the table) can win there and lose where every packet touches
cold memory. Here each build gets its own Balancer filled with figure 2's
1M flows (bench/conntable.py, half per CPU), then the builds replay them
in turn, each replay starting with the other build; printed: each build's
ns per packet per replay, their medians and new / old.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xlb import Balancer, BalancerConfig
from xlb.balancer import BALANCER_OBJECT
from xlb.testing import GATEWAY_MAC

from .common import log, median
from .conntable import FLOWS, REALS, VIP, per_cpu_pass
from .progs import Harness


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("old", type=Path, help="the older xlb.bpf.o")
    parser.add_argument("new", type=Path, nargs="?", default=BALANCER_OBJECT)
    parser.add_argument("--replays", type=int, default=6)
    args = parser.parse_args()
    config = BalancerConfig(gateway_mac=GATEWAY_MAC)
    builds: dict[str, Balancer] = {}
    h = Harness()
    try:
        for which, path in (("old", args.old), ("new", args.new)):
            lb = builds[which] = Balancer(config=config, object_path=path)
            lb.add_vip(VIP)
            lb.set_reals(VIP, REALS)
            log(f"table_ab: {which}: filling {FLOWS} flows")
            per_cpu_pass(h, lb, 0, FLOWS)
        ns: dict[str, list[float]] = {which: [] for which in builds}
        for r in range(args.replays):
            log(f"table_ab: replay {r + 1} of {args.replays}")
            order = list(builds.items())
            for which, lb in order[r % 2 :] + order[: r % 2]:
                ns[which].append(per_cpu_pass(h, lb, 0, FLOWS))
        for which, path in (("old", args.old), ("new", args.new)):
            runs = ", ".join(f"{x:.0f}" for x in ns[which])
            print(f"{which} {path}: ns/packet [{runs}], median {median(ns[which]):.1f}")
        print(f"new / old (medians): {median(ns['new']) / median(ns['old']):.3f}")
    finally:
        h.close()
        for lb in builds.values():
            lb.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
