"""`xlb top`'s frames from two samples: rates over an exact interval,
new flows from the connection table, shares, sorting, both renderings."""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

import pytest
from rich.console import Console

from xlb import cli
from xlb.cli import top
from xlb.flows import TableFill

VIP_A, VIP_B = "10.100.0.1:80/tcp", "10.100.0.2:53/udp"
FILL = {4: TableFill(3, 1000), 6: TableFill(0, 1000)}


def real(address: str, packets: int, nbytes: int, share: float, health: str = "up") -> Any:
    return {"address": address, "weight": 1, "share": share, "health": health,
            "packets": packets, "bytes": nbytes}  # fmt: skip


def vip(name: str, packets: int, nbytes: int, reals: list[Any], health: str = "healthy") -> Any:
    return {"vip": name, "health": health, "ring_size": 65537, "packets": packets,
            "bytes": nbytes, "reals": reals}  # fmt: skip


def flow(sport: int) -> bytes:
    """A connection-table key (what Balancer.flow_owners keys entries by)."""
    return sport.to_bytes(16, "little")


def sample(taken: float, vips: list[Any], counters: dict[str, int], flows: Any) -> top.Sample:
    return top.Sample(taken, vips, counters, flows, FILL)


def counters(tx: int, passed: int, dropped: int, misses: int, hits: int) -> dict[str, int]:
    actions = {"xdp_tx": tx, "xdp_pass": passed, "xdp_drop": dropped}
    reasons = {"forward": tx, "pass_not_vip": passed, "drop_no_real": dropped}
    return {**actions, **reasons, "conn_miss": misses, "conn_hit": hits}


A_REALS_BEFORE = [real("10.0.1.1", 60, 6000, 0.5), real("10.0.1.2", 40, 4000, 0.5)]
A_REALS_AFTER = [real("10.0.1.1", 360, 36000, 0.5), real("10.0.1.2", 140, 14000, 0.5)]
BEFORE = sample(
    10.0,
    [vip(VIP_A, 100, 10_000, A_REALS_BEFORE), vip(VIP_B, 0, 0, [real("10.0.2.1", 0, 0, 1.0)])],
    counters(tx=100, passed=7, dropped=0, misses=2, hits=98),
    {flow(1): (VIP_A, "10.0.1.1"), flow(2): (VIP_A, "10.0.1.2")},
)
AFTER = sample(
    12.0,  # exactly 2 s later
    [
        vip(VIP_A, 500, 50_000, A_REALS_AFTER),
        vip(VIP_B, 20, 4000, [real("10.0.2.1", 20, 4000, 1.0)]),
    ],
    counters(tx=520, passed=9, dropped=6, misses=10, hits=500),
    {
        flow(1): (VIP_A, "10.0.1.1"),  # the same flow: not new
        flow(2): (VIP_A, "10.0.1.1"),  # moved to another real (a SYN re-selected): new there
        flow(3): (VIP_A, "10.0.1.1"),
        flow(4): (VIP_A, "10.0.1.2"),
        flow(5): (VIP_B, "10.0.2.1"),
    },
)


def test_rates_are_the_differences_over_the_interval() -> None:
    view = top.frame(BEFORE, AFTER, None, "name")
    assert view["interval_s"] == 2.0
    a, b = view["vips"]
    assert (a["vip"], a["pps"], a["bps"]) == (VIP_A, 200.0, 40_000 * 8 / 2)
    assert (b["vip"], b["pps"], b["bps"]) == (VIP_B, 10.0, 4000 * 8 / 2)
    r1, r2 = a["reals"]
    assert (r1["pps"], r2["pps"]) == (150.0, 50.0)
    assert (r1["traffic_share"], r1["ring_share"]) == (0.75, 0.5)
    assert (r2["traffic_share"], r2["ring_share"]) == (0.25, 0.5)
    assert view["totals"] == {
        "forwarded_pps": 210.0,
        "passed_pps": 1.0,
        "dropped_pps": 3.0,
        "new_flows_per_s": 4.0,
    }
    # Only reasons that moved, and not `forward` (that is the VIPs' traffic).
    assert view["reasons"] == {"pass_not_vip": 1.0, "drop_no_real": 3.0}
    assert view["conn_table"]["ipv4"] == {"entries": 3, "capacity": 1000, "fill": 0.003}


def test_new_flows_are_table_entries_that_appeared_or_changed_real() -> None:
    view = top.frame(BEFORE, AFTER, None, "name")
    a, b = view["vips"]
    assert view["new_flows_per_vip"]
    assert a["new_flows_per_s"] == 3 / 2  # flows 2 (moved), 3 and 4
    assert [r["new_flows_per_s"] for r in a["reals"]] == [2 / 2, 1 / 2]
    assert b["new_flows_per_s"] == 1 / 2


def test_a_table_too_big_to_read_gives_no_per_vip_new_flows() -> None:
    big = top.Sample(AFTER.taken, AFTER.vips, AFTER.counters, None, FILL)
    view = top.frame(BEFORE, big, None, "name")
    assert not view["new_flows_per_vip"]
    assert view["vips"][0]["new_flows_per_s"] is None
    assert view["totals"]["new_flows_per_s"] == 4.0  # the counter still tells the total
    assert "not counted" in top.render_plain("header", view)


def test_a_vip_without_traffic_has_no_traffic_share() -> None:
    idle = sample(14.0, AFTER.vips, AFTER.counters, AFTER.flows)
    view = top.frame(AFTER, idle, None, "name")
    assert all(r["traffic_share"] is None for v in view["vips"] for r in v["reals"])
    assert view["reasons"] == {} and view["totals"]["forwarded_pps"] == 0


def test_announcement_state_comes_from_the_daemons_bgp_state() -> None:
    bgp = {"announcer": "exabgp", "announcing": True, "vips": {VIP_A: True, VIP_B: False},
           "neighbors": {"10.0.0.254": "established"}}  # fmt: skip
    view = top.frame(BEFORE, AFTER, bgp, "name")
    assert [v["announced"] for v in view["vips"]] == [True, False]
    text = top.render_plain("header", view)
    assert "WITHDRAWN" in text and "BGP (exabgp): announcing" in text
    assert [v["announced"] for v in top.frame(BEFORE, AFTER, None, "name")["vips"]] == [None, None]


def test_sort_orders_reals_busiest_first_and_name_keeps_address_order() -> None:
    # 10.0.1.2 (second by address) carries more packets, fewer bytes, no new flow.
    reals = [real("10.0.1.1", 160, 46000, 0.5), real("10.0.1.2", 340, 4000 + 4000, 0.5)]
    after = sample(AFTER.taken, [vip(VIP_A, 500, 50_000, reals)], AFTER.counters, {})
    order = {
        key: [r["address"] for r in top.frame(BEFORE, after, None, key)["vips"][0]["reals"]]
        for key in top.SORT_KEYS
    }
    assert order["pps"] == ["10.0.1.2", "10.0.1.1"]
    assert order["bps"] == ["10.0.1.1", "10.0.1.2"]
    assert order["name"] == ["10.0.1.1", "10.0.1.2"]
    assert order["flows"] == ["10.0.1.1", "10.0.1.2"]  # ties keep address order


def test_sort_puts_a_busier_later_vip_first() -> None:
    # VIP_B (address order second) gets more new flows than VIP_A in this pair.
    flows = dict(AFTER.flows or {})
    flows.update({flow(10 + i): (VIP_B, "10.0.2.1") for i in range(5)})
    after = sample(AFTER.taken, AFTER.vips, AFTER.counters, flows)
    by_flows = top.frame(BEFORE, after, None, "flows")
    assert [v["vip"] for v in by_flows["vips"]] == [VIP_B, VIP_A]
    assert [v["vip"] for v in top.frame(BEFORE, after, None, "pps")["vips"]] == [VIP_A, VIP_B]


def test_samples_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="in order"):
        top.frame(AFTER, BEFORE, None, "pps")


def test_plain_and_rich_renderings_show_the_same_rows() -> None:
    view = top.frame(BEFORE, AFTER, None, "pps")
    text = top.render_plain("xlb on eth0", view)
    lines = text.splitlines()
    assert lines[0] == "xlb on eth0"
    assert (
        "forwarded 210 pkt/s" in lines[1] and "moving: drop_no_real 3/s, pass_not_vip 1/s" in text
    )
    row = next(line for line in lines if "-> 10.0.1.1" in line)
    assert row.split()[-4:] == ["1", "75.0%", "50.0%", "1"]  # new/s, traffic, ring, weight
    console = Console(file=io.StringIO(), width=160, record=True)
    console.print(top.render_rich("xlb on eth0", view))
    shown = console.export_text()
    assert "-> 10.0.1.1" in shown and "75.0%" in shown and "drop_no_real 3/s" in shown


def test_json_frames_are_one_object_per_line() -> None:
    out = io.StringIO()
    args = argparse.Namespace(json=True, once=True)
    view = top.frame(BEFORE, AFTER, None, "pps")
    top._show(view, "header", args, None, out)
    top._show(view, "header", args, None, out)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["vips"][0]["pps"] == 200.0 and second["totals"] == view["totals"]


def test_top_options_parse() -> None:
    args = cli.build_parser().parse_args(["top", "--once", "--json", "--sort", "bps"])
    assert (args.once, args.json, args.sort, args.interval, args.count) == (
        True, True, "bps", 1.0, None,
    )  # fmt: skip
    args = cli.build_parser().parse_args(["top", "--count", "3", "--interval", "0.5"])
    assert (args.count, args.interval, args.once) == (3, 0.5, False)


@pytest.mark.parametrize(
    "argv",
    [["top", "--sort", "weight"], ["top", "--once", "--count", "2"], ["top", "--interval", "0"]],
)
def test_bad_top_options_are_one_line_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xlb: error:") and len(err.splitlines()) == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_or_a_missing_rich_gets_plain_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not top.live_capable(io.StringIO())
    assert top.live_capable(Terminal())
    monkeypatch.setitem(sys.modules, "rich", None)  # as if the top extra were not installed
    assert not top.live_capable(Terminal())
