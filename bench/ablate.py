"""What parts of an established flow's work cost on the live path:
`python -m bench.ablate [--flows N ...] [--rounds N]`.

Builds variants of bpf/xlb.bpf.c with one part of the per-packet work cut
out, and measures each on figure 3's veth path beside the full build,
the reflector and nftables, round after round (bench.throughput_ab).
The variants are wrong programs, for measurement only (one without stats
counts nothing; one without the flow lookup sends every established flow
to real 0): they bound what any change to that part could buy, which is
how bench/RESULTS.md judges a goal that is still missed. A variant is a
copy of bpf/ with text edits; an edit that no longer matches the source
exactly once stops the build (tests/unit/test_bench_ablate.py checks them).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import build

from .common import BUILD_DIR, median
from .throughput_ab import ratios_by_round

SOURCE = build.BPF_SRC
BASELINES = ("reflector", "min_encap", "nft")


@dataclass(frozen=True)
class Edit:
    file: str  # in bpf/
    old: str  # must occur exactly once
    new: str


NO_TRAFFIC_STATS = Edit(
    "stats.h",
    "if (p->has_vip && (p->reason == XLB_R_FORWARD",
    "if (0 && p->has_vip && (p->reason == XLB_R_FORWARD",
)
NO_COUNTERS = (
    Edit("stats.h", "\tif (!row)\n\t\treturn action;", "\tif (1 || !row)\n\t\treturn action;"),
    Edit("stats.h", "if (row && index < XLB_CNT_COUNT)", "if (0 && row && index < XLB_CNT_COUNT)"),
)
# real 0 is the first real of figure 3's VIP: what a flow lookup costing nothing would answer
NO_FLOW_LOOKUP = Edit(
    "select.h",
    "\tif (p->tcp_syn || !may_be_conn_vip_addr(p->flow.daddr))\n\t\treturn NULL;\n",
    "\tif (!p->tcp_syn && (real = lookup_real(0))) {\n"
    "\t\tp->vip_id = real->vip_id;\n"
    "\t\treturn real;\n"
    "\t}\n"
    "\tif (p->tcp_syn || !may_be_conn_vip_addr(p->flow.daddr))\n\t\treturn NULL;\n",
)

VARIANTS: dict[str, tuple[str, tuple[Edit, ...]]] = {
    "no_traffic_stats": ("per-VIP and per-real packets and bytes not counted", (NO_TRAFFIC_STATS,)),
    "no_stats": ("no counter at all", NO_COUNTERS),
    "no_flow_lookup": (
        "established flows: no VIP filter, flow cache or entry check, real 0",
        (NO_FLOW_LOOKUP,),
    ),
    "no_flow_lookup_no_stats": (
        "both of the above",
        (NO_FLOW_LOOKUP, *NO_COUNTERS),
    ),
}


def edited_source(edits: tuple[Edit, ...], into: Path) -> Path:
    """A copy of bpf/ in `into` with `edits` applied; its xlb.bpf.c."""
    shutil.copytree(SOURCE, into, dirs_exist_ok=True)
    for edit in edits:
        path = into / edit.file
        text = path.read_text()
        if text.count(edit.old) != 1:
            raise ValueError(f"{edit.file}: {edit.old!r} is not in it exactly once")
        path.write_text(text.replace(edit.old, edit.new))
    return into / "xlb.bpf.c"


def build_variants(names: list[str]) -> dict[str, Path]:
    """Compile the full program and each named variant; name -> object."""
    out = BUILD_DIR / "ablate"
    out.mkdir(parents=True, exist_ok=True)
    objects = {}
    for name in ["full", *names]:
        edits = VARIANTS[name][1] if name != "full" else ()
        with tempfile.TemporaryDirectory() as tmp:
            objects[name] = out / f"{name}.bpf.o"
            build.compile_bpf(edited_source(edits, Path(tmp)), objects[name])
    return objects


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--flows", type=int, nargs="+", default=[1, 10_000])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("variants", nargs="*", help=f"of {', '.join(VARIANTS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"no such variant: {', '.join(sorted(unknown))}")
    objects = build_variants(args.variants or list(VARIANTS))
    paths = list(objects.values())
    for flows in args.flows:
        ratios = ratios_by_round(paths, flows, args.rounds, BASELINES)
        full = {mode: median(ratios[(objects["full"], mode)]) for mode in BASELINES}
        print(f"1 core, {flows} flows, median of {args.rounds} rounds:")
        print(f"{'build':<26}{'x reflector':>12}{'x min-encap':>12}{'x nft':>8}{'vs full':>9}  cut")
        for name, path in objects.items():
            ref, encap, nft = (median(ratios[(path, mode)]) for mode in BASELINES)
            what = VARIANTS[name][0] if name in VARIANTS else "nothing"
            vs_full = ref / full["reflector"]
            print(f"{name:<26}{ref:>12.3f}{encap:>12.3f}{nft:>8.2f}{vs_full:>9.3f}  {what}")
        print(f"min-encap / nft: {full['nft'] / full['min_encap']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
