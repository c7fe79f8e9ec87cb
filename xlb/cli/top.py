"""`xlb top`: the running data plane, live, like `ipvsadm -Ln --rate` and
`top` together.

    xlb top                   refresh every second until Ctrl-C
    xlb top --sort bps        heaviest VIPs (and reals within each) first
    xlb top --once --json     one frame for scripts

A frame is the difference of two samples of the pinned maps taken
`--interval` seconds apart: per VIP and per real packets/s, bits/s and new
flows/s, each real's share of its VIP's traffic beside its share of the
ring, health and BGP announcement state (asked of `xlb serve` on its
control socket; "-" without a daemon), the pass/drop reasons that moved,
and how full the connection table is.

New flows per VIP and real are the connection-table entries that appeared
between the samples (the table's own record of which real each flow went
to); a table of more than FLOW_SCAN_LIMIT entries is not read that way
(too slow for a one-second refresh), and then only the total, from the
conn_miss counter, is shown.

The sampling takes its clock and its sleep as arguments (`run`), so a test
can make the interval exact and send known traffic in it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from .common import EXIT_OK, Target, daemon_pid, open_balancer, resolve_target
from .node import describe as describe_bgp
from .show import Health, daemon_bgp, daemon_health, header_line, human, vip_snapshot

if TYPE_CHECKING:
    from ..balancer import Balancer
    from ..flows import TableFill

SORT_KEYS = ("pps", "bps", "flows", "name")
# Reading the table (in batches, Balancer.flow_owners) costs ~2 µs an
# entry on the development VM: 100000 entries take a fifth of a one-second
# refresh, once per frame (each sample is the next frame's first).
FLOW_SCAN_LIMIT = 100_000
# Counters that are not reasons: XDP actions and connection-table events.
_NOT_REASONS = ("xdp_", "conn_")

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# ================================================================ sampling


@dataclass(frozen=True, slots=True)
class Sample:
    """What the maps held at one moment."""

    taken: float  # the clock's seconds
    vips: list[dict[str, Any]]  # show.vip_snapshot: counters, shares, health
    counters: dict[str, int]
    flows: dict[bytes, tuple[str, str]] | None  # entry key -> (VIP, real); None: not read
    fill: dict[int, TableFill]


def take_sample(lb: Balancer, health: Health, clock: Clock) -> Sample:
    taken, vips, counters = clock(), vip_snapshot(lb, health), lb.counters()
    fill = lb.conn_table_fill()
    # A table too big to read is known from its count: not counted twice.
    small = sum(table.entries for table in fill.values()) <= FLOW_SCAN_LIMIT
    return Sample(taken, vips, counters, _flow_owners(lb) if small else None, fill)


def _flow_owners(lb: Balancer) -> dict[bytes, tuple[str, str]] | None:
    """Each connection-table entry's VIP and real, by raw key; None when
    the table holds more than FLOW_SCAN_LIMIT entries."""
    owners = lb.flow_owners(FLOW_SCAN_LIMIT)
    if owners is None:
        return None
    return {key: (str(vip), str(real)) for key, (vip, real) in owners.items()}


# ================================================================== frames


def frame(before: Sample, after: Sample, bgp: dict[str, Any] | None, sort: str) -> dict[str, Any]:
    """One view: rates between two samples (pure, for the tests)."""
    seconds = after.taken - before.taken
    if seconds <= 0:
        raise ValueError(f"samples must be taken in order, {seconds} s apart")

    def rate(now: int, then: int) -> float:
        return round(max(0, now - then) / seconds, 3)

    delta = {k: rate(v, before.counters.get(k, v)) for k, v in after.counters.items()}
    new_flows = _new_flows(before.flows, after.flows)
    announced = bgp.get("vips", {}) if bgp else {}
    vips = [
        _vip_row(vip, before.vips, seconds, new_flows, announced.get(vip["vip"]))
        for vip in after.vips
    ]
    _sort(vips, sort)
    return {
        "interval_s": round(seconds, 3),
        "sort": sort,
        "totals": {
            "forwarded_pps": delta.get("xdp_tx", 0.0),
            "passed_pps": delta.get("xdp_pass", 0.0),
            "dropped_pps": delta.get("xdp_drop", 0.0) + delta.get("xdp_aborted", 0.0),
            "new_flows_per_s": delta.get("conn_miss", 0.0),
        },
        "reasons": {
            name: value
            for name, value in delta.items()
            if value and name != "forward" and not name.startswith(_NOT_REASONS)
        },
        "conn_table": {
            f"ipv{family}": {
                "entries": t.entries,
                "capacity": t.capacity,
                "fill": round(t.ratio, 6),
            }
            for family, t in sorted(after.fill.items())
        },
        "new_flows_per_vip": new_flows is not None,
        "vips": vips,
        "bgp": bgp,
    }


def _new_flows(
    before: dict[bytes, tuple[str, str]] | None, after: dict[bytes, tuple[str, str]] | None
) -> Tally[tuple[str, str]] | None:
    """(VIP, real) -> flows that appeared (or moved to that real) between
    the samples; None when a table was too big to read."""
    if before is None or after is None:
        return None
    return Tally(owner for flow, owner in after.items() if before.get(flow) != owner)


def _vip_row(
    vip: dict[str, Any],
    earlier: list[dict[str, Any]],
    seconds: float,
    new_flows: Tally[tuple[str, str]] | None,
    announced: bool | None,
) -> dict[str, Any]:
    prev = next((v for v in earlier if v["vip"] == vip["vip"]), {})
    prev_reals = {r["address"]: r for r in prev.get("reals", [])}
    row = {
        "vip": vip["vip"],
        "health": vip["health"],
        "announced": announced,
        "ring_size": vip["ring_size"],
        "packets": vip["packets"],
        "bytes": vip["bytes"],
        **_traffic(vip, prev, seconds),
        "new_flows_per_s": None,
        "reals_up": sum(1 for r in vip["reals"] if r["health"] == "up"),
        "reals": [],
    }
    rates = [_traffic(real, prev_reals.get(real["address"], {}), seconds) for real in vip["reals"]]
    # Shares of what the reals received: the VIP's counter is read a moment
    # before theirs, so under load it would not quite match their sum.
    received = sum(r["pps"] for r in rates)
    for real, rate in zip(vip["reals"], rates, strict=True):
        share = rate["pps"] / received if received else None
        row["reals"].append(
            {
                "address": real["address"],
                "health": real["health"],
                "weight": real["weight"],
                **rate,
                "new_flows_per_s": _per_second(new_flows, (vip["vip"], real["address"]), seconds),
                "traffic_share": round(share, 6) if share is not None else None,
                "ring_share": real["share"],
            }
        )
    if new_flows is not None:
        total = sum(n for (v, _), n in new_flows.items() if v == vip["vip"])
        row["new_flows_per_s"] = round(total / seconds, 3)
    return row


def _traffic(now: dict[str, Any], then: dict[str, Any], seconds: float) -> dict[str, float]:
    """pps and bps (bits) from two snapshots of one VIP or real; a real
    new since the first sample counts from 0."""
    packets = max(0, now["packets"] - then.get("packets", 0))
    nbytes = max(0, now["bytes"] - then.get("bytes", 0))
    return {"pps": round(packets / seconds, 3), "bps": round(nbytes * 8 / seconds, 3)}


def _per_second(
    new_flows: Tally[tuple[str, str]] | None, key: tuple[str, str], seconds: float
) -> float | None:
    return None if new_flows is None else round(new_flows[key] / seconds, 3)


def _sort(vips: list[dict[str, Any]], key: str) -> None:
    """Busiest first (by name: in address order, as `xlb list`)."""
    if key == "name":
        return
    field = {"pps": "pps", "bps": "bps", "flows": "new_flows_per_s"}[key]

    def busiest(row: dict[str, Any]) -> float:
        value = row[field]
        return -1.0 if value is None else float(-value)

    for vip in vips:
        vip["reals"].sort(key=busiest)
    vips.sort(key=busiest)


# =============================================================== rendering


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _rate(value: float | None) -> str:
    return "-" if value is None else human(value)


def _announced(value: bool | None) -> str:
    return "-" if value is None else ("announced" if value else "WITHDRAWN")


COLUMNS = ("VIP / real", "health", "BGP", "pkt/s", "bit/s", "new/s", "traffic", "ring", "weight")


def rows(view: dict[str, Any]) -> Iterator[tuple[bool, tuple[str, ...]]]:
    """(is a VIP row, cells) in display order."""
    for vip in view["vips"]:
        up = f"{vip['reals_up']}/{len(vip['reals'])} up" if vip["health"] != "-" else ""
        yield True, (
            vip["vip"], vip["health"], _announced(vip["announced"]), _rate(vip["pps"]),
            _rate(vip["bps"]), _rate(vip["new_flows_per_s"]), up, str(vip["ring_size"]), "",
        )  # fmt: skip
        for real in vip["reals"]:
            yield False, (
                f"  -> {real['address']}", real["health"], "", _rate(real["pps"]),
                _rate(real["bps"]), _rate(real["new_flows_per_s"]),
                _pct(real["traffic_share"]), _pct(real["ring_share"]), str(real["weight"]),
            )  # fmt: skip


def summary_lines(view: dict[str, Any]) -> list[str]:
    """The lines above the table: totals, moving reasons, conn table, BGP."""
    t = view["totals"]
    lines = [
        f"forwarded {human(t['forwarded_pps'])} pkt/s, passed {human(t['passed_pps'])}, "
        f"dropped {human(t['dropped_pps'])}, new flows {human(t['new_flows_per_s'])}/s "
        f"(over {view['interval_s']:.1f} s, sorted by {view['sort']})"
    ]
    reasons = sorted(view["reasons"].items(), key=lambda kv: -kv[1])
    moving = ", ".join(f"{name} {human(value)}/s" for name, value in reasons)
    lines.append(f"moving: {moving or 'no pass, drop or ICMP reason moved'}")
    tables = ", ".join(
        f"{family} {t['entries']}/{t['capacity']} ({t['fill'] * 100:.1f}%)"
        for family, t in view["conn_table"].items()
    )
    lines.append(f"conn table: {tables}")
    if not view["new_flows_per_vip"]:
        lines.append(f"(new flows per VIP not counted: the table holds over {FLOW_SCAN_LIMIT})")
    if view["bgp"] is not None:
        lines.extend(describe_bgp(view["bgp"]).splitlines()[:1])
    return lines


def render_plain(header: str, view: dict[str, Any]) -> str:
    table = [COLUMNS, *(cells for _, cells in rows(view))]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = [header, *summary_lines(view)]
    for cells in table:
        first = cells[0].ljust(widths[0])
        rest = "".join(
            cell.rjust(width + 2) for cell, width in zip(cells[1:], widths[1:], strict=True)
        )
        lines.append((first + rest).rstrip())
    return "\n".join(lines) + "\n"


def render_rich(header: str, view: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    lines = list(rows(view))
    # Names whole (an IPv6 VIP is long): on a narrow terminal the numbers give way.
    widest = max((len(cells[0]) for _, cells in lines), default=len(COLUMNS[0]))
    table.add_column(COLUMNS[0], no_wrap=True, min_width=widest)
    for name in COLUMNS[1:]:
        table.add_column(name, justify="right", no_wrap=True)
    for is_vip, cells in lines:
        style = "bold" if is_vip else None
        if "UNHEALTHY" in cells or "down" in cells[1:2] or "WITHDRAWN" in cells:
            style = "bold red" if is_vip else "red"
        table.add_row(*cells, style=style)
    return Group(Text(header, style="bold"), *(Text(line) for line in summary_lines(view)), table)


# ===================================================================== run


def live_capable(stream: IO[str]) -> bool:
    """A live view needs a terminal and rich; otherwise plain frames."""
    if not stream.isatty():
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def run(
    lb: Balancer,
    target: Target,
    args: argparse.Namespace,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    out: IO[str] | None = None,
) -> int:
    """Sample, wait `args.interval`, sample, show a frame; again until
    Ctrl-C, `--count` frames, or one with `--once`. `out`: sys.stdout (as
    it is when called, so a redirection made since counts)."""
    out = sys.stdout if out is None else out
    pid = daemon_pid(target)
    limit = 1 if args.once else args.count
    before = take_sample(lb, _health(target, pid), clock)
    live = None if args.json or not live_capable(out) else _start_live(out)
    shown = 0
    try:
        while limit is None or shown < limit:
            sleep(args.interval)
            health = _health(target, pid)
            after = take_sample(lb, health, clock)
            view = frame(before, after, daemon_bgp(target) if pid else None, args.sort)
            _show(view, header_line(target, lb, pid), args, live, out)
            before, shown = after, shown + 1
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    return EXIT_OK


def _health(target: Target, pid: int | None) -> Health:
    return daemon_health(target) if pid else Health({}, {})


def _start_live(out: IO[str]) -> Any:
    from rich.console import Console
    from rich.live import Live

    live = Live(console=Console(file=out), auto_refresh=False, screen=False)
    live.start()
    return live


def _show(
    view: dict[str, Any], header: str, args: argparse.Namespace, live: Any, out: IO[str]
) -> None:
    if args.json:
        out.write(json.dumps({"time": round(time.time(), 3), **view}) + "\n")
    elif live is not None:
        live.update(render_rich(header, view), refresh=True)
    else:
        out.write(render_plain(header, view) + ("" if args.once else "\n"))
    out.flush()


def cmd_top(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    with open_balancer(target) as lb:
        return run(lb, target, args)


__all__ = [
    "FLOW_SCAN_LIMIT",
    "SORT_KEYS",
    "Sample",
    "cmd_top",
    "frame",
    "render_plain",
    "render_rich",
    "run",
    "take_sample",
]
