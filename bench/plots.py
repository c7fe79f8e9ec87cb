"""Charts of the benchmark results: SVG files in bench/charts/, linked from
bench/RESULTS.md.

    python3 -m bench.plots        # redraw from bench/results.json, relink RESULTS.md

`python3 build.py bench` draws them after each run (`write_charts`). One
chart per section that has the figures for it; a section the results lack
(not run, failed) has none, and the report links only what was drawn.
matplotlib (the `bench` extra) with the Agg backend: no display needed.
The SVGs carry no date and fixed element ids, so redrawing the same
results gives the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import BENCH_DIR, log

CHARTS_DIR = BENCH_DIR / "charts"

# Section -> (file, what it shows: the link text in RESULTS.md).
CHARTS = {
    "pktpath": ("pktpath.svg", "ns per packet per path, beside its baselines"),
    "throughput": ("throughput.svg", "Mpps by cores and flows, against reflector and nftables"),
    "maglev": ("maglev.svg", "Maglev build time against reals and ring size"),
    "growth": ("growth.svg", "cost per packet as VIPs and reals grow"),
    "conntable": ("conntable.svg", "connection-table cost against table fill"),
}

COLORS = {
    "xlb": "#1f77b4",
    "baseline": "#7f7f7f",
    "reflector": "#2ca02c",
    "nft": "#d62728",
    "min_encap": "#9467bd",
    "numpy": "#1f77b4",
    "c": "#2ca02c",
    "python": "#ff7f0e",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "xlb-bench"  # stable element ids
    import matplotlib.pyplot as plt

    return plt


# ================================================================= charts


def pktpath(section: dict[str, Any], plt: Any) -> Any:
    rows = section["rows"]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.6))
    ax.barh(names, [rows[n]["ns"] for n in names], color=COLORS["xlb"], label="xlb")
    for name, colour, style in (
        ("baseline_min_encap_v4", COLORS["min_encap"], "--"),
        ("baseline_tx_v4", COLORS["baseline"], ":"),
    ):
        value = section["baselines_ns"].get(name)
        if value is not None:
            label = name.removeprefix("baseline_").replace("_", " ")
            ax.axvline(value, color=colour, linestyle=style, label=f"{label}: {value} ns")
    for i, name in enumerate(names):
        ax.text(rows[name]["ns"], i, f" {rows[name]['ns']} ns (x{rows[name]['vs_min_encap']})",
                va="center", fontsize=8)  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlabel("ns per packet (BPF_PROG_TEST_RUN, one CPU)")
    ax.set_title("Cost per packet by path, beside a bare encapsulation and XDP_TX")
    ax.set_xlim(0, max(rows[n]["ns"] for n in names) * 1.35)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def throughput(section: dict[str, Any], plt: Any) -> Any:
    rows = section["rows"]
    configs = list(rows)
    kinds = [k for k in ("reflector", "min_encap", "xlb", "nft") if k in rows[configs[0]]["mpps"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        xs = [c + (i - (len(kinds) - 1) / 2) * width for c in range(len(configs))]
        values = [rows[c]["mpps"][kind] for c in configs]
        bars = ax.bar(xs, values, width, label=kind.replace("_", "-"), color=COLORS[kind])
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(configs)), configs)
    ax.set_ylabel("Mpps (all cores)")
    ax.set_xlabel("cores / flows")
    ax.set_title("Forwarded packets per second on a veth path (native XDP)")
    ax.legend(fontsize=8)
    return fig


def maglev(section: dict[str, Any], plt: Any) -> Any:
    rows = list(section["rows"].values())
    fig, (by_reals, by_size) = plt.subplots(1, 2, figsize=(10, 4.2))
    base_size = 65537
    same_size = sorted((r for r in rows if r["size"] == base_size), key=lambda r: r["reals"])
    for key, label, colour in (
        ("c_ms", "C (gcc -O2)", COLORS["c"]),
        ("numpy_ms", "numpy (xlb)", COLORS["numpy"]),
        ("python_loop_ms", "Python loop", COLORS["python"]),
    ):
        by_reals.plot([r["reals"] for r in same_size], [r[key] for r in same_size], "o-",
                      color=colour, label=label)  # fmt: skip
        sized = sorted((r for r in rows if r["reals"] == 1000), key=lambda r: r["size"])
        by_size.plot([r["size"] for r in sized], [r[key] for r in sized], "o-", color=colour,
                     label=label)  # fmt: skip
    by_reals.set(xscale="log", yscale="log", xlabel="reals", ylabel="ms per table build",
                 title=f"Build time against reals (ring {base_size})")  # fmt: skip
    sizes = sorted({r["size"] for r in rows if r["reals"] == 1000})
    by_size.set(xscale="log", yscale="log", xlabel="ring size (slots)",
                title=f"Build time against ring size (1000 reals, {len(sizes)} sizes)")  # fmt: skip
    by_size.set_xticks(sizes, [str(size) for size in sizes])
    by_size.minorticks_off()
    by_reals.legend(fontsize=8)
    fig.tight_layout()
    return fig


def growth(section: dict[str, Any], plt: Any) -> Any:
    rows = section["rows"]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(names, [rows[n]["ns"] for n in names], color=COLORS["xlb"], label="xlb")
    ax.bar_label(bars, fmt="%.1f ns", fontsize=8)
    base = rows[names[0]]["baseline_min_encap_ns"]
    ax.axhline(base, color=COLORS["min_encap"], linestyle="--", label=f"min encap: {base} ns")
    ax.set_ylabel("ns per packet (established flows)")
    ax.set_xlabel("VIPs x reals per VIP")
    ax.set_title("Cost per packet as VIPs and reals grow")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8)
    return fig


def conntable(section: dict[str, Any], plt: Any) -> Any:
    ns = section["ns"]
    # (label, ns key): the table nearly empty against full (1M flows).
    pairs = [
        ("hit", "hit_1_flow", "hit_1m_flows"),
        ("miss (insert)", "miss_filling", "miss_full_table_evicting"),
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for i, (_, empty, full) in enumerate(pairs):
        left = ax.bar(i - width / 2, ns[empty], width, color=COLORS["numpy"],
                      label="empty table (1 flow / filling)" if i == 0 else None)  # fmt: skip
        right = ax.bar(i + width / 2, ns[full], width, color=COLORS["nft"],
                       label="full table (1M flows / evicting)" if i == 0 else None)  # fmt: skip
        ax.bar_label(left, fmt="%.0f ns", fontsize=8)
        ax.bar_label(right, fmt="%.0f ns", fontsize=8)
    base = ns.get("baseline_min_encap")
    if base is not None:
        ax.axhline(base, color=COLORS["min_encap"], linestyle="--", label=f"min encap: {base} ns")
    ax.set_xticks(range(len(pairs)), [label for label, _, _ in pairs])
    ax.set_ylabel("ns per packet")
    ax.set_title("Connection-table cost against table fill")
    ax.legend(fontsize=8)
    return fig


DRAW: dict[str, Callable[[dict[str, Any], Any], Any]] = {
    "pktpath": pktpath,
    "throughput": throughput,
    "maglev": maglev,
    "growth": growth,
    "conntable": conntable,
}


# ================================================================== files


def write_charts(results: dict[str, Any], out_dir: Path = CHARTS_DIR) -> dict[str, str]:
    """Draw every chart the results have figures for; section -> the SVG's
    path relative to RESULTS.md (what report.render links)."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = results.get("sections", {})
    drawable = [name for name in CHARTS if name in sections]
    written: dict[str, str] = {}
    for done, name in enumerate(drawable, 1):
        filename, _ = CHARTS[name]
        log(f"chart {done}/{len(drawable)}: {filename}")
        fig = DRAW[name](sections[name], plt)
        fig.savefig(out_dir / filename, format="svg", metadata={"Date": None},
                    bbox_inches="tight")  # fmt: skip
        plt.close(fig)
        written[name] = f"{out_dir.name}/{filename}"
    for name in CHARTS.keys() - drawable:
        log(f"no chart for {name}: not in the results")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.plots", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results.json")
    args = parser.parse_args(argv)
    from . import report

    results = json.loads(args.results.read_text())
    charts = write_charts(results, args.results.parent / CHARTS_DIR.name)
    (args.results.parent / "RESULTS.md").write_text(report.render(results, charts))
    log(f"wrote {len(charts)} charts and relinked {args.results.parent / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
