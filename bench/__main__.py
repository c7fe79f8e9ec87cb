"""Run the benchmarks: `python3 build.py bench [--quick] [--only NAME ...]`.

Writes bench/results.json (every figure, named) and bench/RESULTS.md (the
table and the analysis). Each section measures its own baselines in the
same run; see the docstring of each module for what exactly is timed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # no BLAS threads spinning beside the runs

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import build  # the repository root's build.py: its progress lines

from . import (
    conntable,
    control,
    failover,
    fleet,
    growth,
    importing,
    maglev_bench,
    pktpath,
    report,
    second_chance,
    throughput,
)
from .common import BENCH_DIR, log, machine, wait_until_quiet

SECTIONS = {
    "pktpath": pktpath.run,
    "conntable": conntable.run,
    "throughput": throughput.run,
    "maglev": maglev_bench.run,
    "control": control.run,
    "growth": growth.run,
    "importing": importing.run,
    "failover": failover.run,
    "second_chance": second_chance.run,
    "fleet": fleet.run,
}


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The named headline figures (worst case over rows)."""
    s = results["sections"]
    ratios: dict[str, Any] = {}
    update: dict[str, Any] = {}
    if "pktpath" in s:
        ratios["hit_vs_min_encap"] = s["pktpath"]["hit_vs_min_encap"]
        ratios["syn_vs_min_encap"] = s["pktpath"]["syn_vs_min_encap"]
        if "udp_vs_min_encap" in s["pktpath"]:
            ratios["udp_vs_min_encap"] = s["pktpath"]["udp_vs_min_encap"]
    if "throughput" in s:
        ratios["xlb_vs_reflector_1core"] = s["throughput"]["xlb_vs_reflector_1core"]
        ratios["xlb_vs_nft_1core"] = s["throughput"]["xlb_vs_nft_1core"]
    if "maglev" in s:
        ratios["maglev_vs_c"] = s["maglev"]["maglev_vs_c"]
    if "importing" in s:
        ratios["import_vs_numpy"] = s["importing"]["import_vs_numpy"]
    if "failover" in s:
        for name, value in s["failover"]["median_ms"].items():
            update[f"failover_{name}"] = value
    if "control" in s:
        for name, value in s["control"]["ms"].items():
            update[name] = value
    return {"ratios": ratios, "update_ms": update}


# The goals of issue 17 ("Ahead of Katran"): Katran's own build, run through
# this harness, costs 3.3-3.4x min-encap on a TCP hit, ~21x on a new-flow
# SYN and 4.5x on a UDP hit.
TARGETS = {
    "ratios.hit_vs_min_encap": ("<=", 2.8),
    "ratios.syn_vs_min_encap": ("<=", 18.0),
    "ratios.udp_vs_min_encap": ("<=", 2.8),
    "ratios.xlb_vs_reflector_1core": (">=", 0.75),
    "ratios.xlb_vs_nft_1core": (">=", 6.0),
    "ratios.maglev_vs_c": ("<=", 3.0),
    "update_ms.set_reals_1000": ("<=", 10.0),
    "ratios.import_vs_numpy": ("<=", 1.5),
}


def keep_sections_not_rerun(results: dict[str, Any], path: str, only: list[str]) -> None:
    """With --only, the other sections stay as the last run wrote them (each
    section's ratios come from baselines of its own run), marked with that
    run's date in `kept_from`."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = json.load(f)
    kept_from = dict(previous.get("kept_from", {}))
    for name, section in previous.get("sections", {}).items():
        if name in SECTIONS and name not in only:
            results["sections"][name] = section
            kept_from.setdefault(name, previous["machine"]["date"])
    for name in only:
        kept_from.pop(name, None)
    results["kept_from"] = kept_from
    results["mode"] = f"{results['mode']}, sections {', '.join(only)} only"


def draw_charts(results: dict[str, Any], out: str) -> dict[str, str]:
    """The report's charts (bench/plots.py); none, said so, without matplotlib."""
    from . import plots

    try:
        return plots.write_charts(results, Path(out) / plots.CHARTS_DIR.name)
    except ImportError as exc:
        log(f"no charts: {exc} (matplotlib is in the bench extra)")
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 2 minutes)")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run these sections")
    parser.add_argument("--out", default=str(BENCH_DIR), help="directory for the two reports")
    args = parser.parse_args()
    if os.geteuid() != 0:
        log("the benchmarks load BPF programs and create namespaces: run as root")
        return 1
    started = time.time()
    results: dict[str, Any] = {
        "machine": machine(),
        "mode": "quick" if args.quick else "full",
        "command": "python3 build.py bench" + (" --quick" if args.quick else ""),
        "sections": {},
        "errors": {},
        "quiet_wait_s": {},
    }
    out = os.path.abspath(args.out)
    if args.only:
        keep_sections_not_rerun(results, os.path.join(out, "results.json"), args.only)
    chosen = args.only or list(SECTIONS)
    for done, name in enumerate(chosen):
        t0 = time.time()
        build.progress(done, len(chosen), f"section {name}", keep=True, who="bench")
        results["quiet_wait_s"][name] = wait_until_quiet()
        try:
            results["sections"][name] = SECTIONS[name](args.quick)
        except Exception:
            results["errors"][name] = traceback.format_exc()
            log(f"{name} failed:\n{results['errors'][name]}")
        log(f"== {name}: {time.time() - t0:.1f}s")
    results.update(summary(results))
    results["targets"] = {key: {"target": f"{op} {value}"} for key, (op, value) in TARGETS.items()}
    for key, entry in results["targets"].items():
        group, name = key.split(".")
        value = results.get(group, {}).get(name)
        op, limit = TARGETS[key]
        entry["value"] = value
        entry["met"] = None if value is None else (value <= limit if op == "<=" else value >= limit)
    results["elapsed_s"] = round(time.time() - started, 1)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=False)
        f.write("\n")
    build.progress(len(chosen), len(chosen), "sections done; drawing the charts", True, "bench")
    charts = draw_charts(results, out)
    with open(os.path.join(out, "RESULTS.md"), "w") as f:
        f.write(report.render(results, charts))
    log(f"wrote {out}/results.json, {out}/RESULTS.md and {len(charts)} charts")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
