"""`xlb top` on a lab's data plane with known traffic.

The first test drives `top.run` in this process with an injected clock and
sleep: the "sleep" between the two samples sends a known set of UDP flows
through the lab (one datagram each, every one answered) and the clock says
exactly 2 s passed, so each rate, each real's share and each new flow can
be compared with what was sent and with the ring's prediction, exactly.
The second runs the `xlb` executable (`--once --json`, and plain through
a pipe) while background traffic flows, for the command line itself.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from waits import eventually, wait_for_traffic

from xlb import Flow, netns
from xlb.cli import build_parser, top
from xlb.cli.common import open_balancer, resolve_target
from xlb.lab import Lab

XLB = str(Path(sys.executable).with_name("xlb"))
FLOWS = 60
SPORTS = list(range(21000, 21000 + FLOWS))  # below 32768: not in the client's ephemeral range
INTERVAL_S = 2.0  # what the injected clock says passed between the samples
UDP_PAYLOAD = 16  # the lab client's token (secrets.token_hex(8))


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(reals=3) as lab:
        lab.add_default_services()
        yield lab


def top_args(lab: Lab, tmp_path: Path, *extra: str) -> list[str]:
    node = lab.balancers[0]
    assert node.pin_dir is not None
    return ["top", *extra, "-i", node.interface, "--pin-dir", str(node.pin_dir),
            "--lock-dir", str(tmp_path)]  # fmt: skip


class KnownTraffic:
    """The injected clock and sleep: each sleep sends FLOWS one-datagram UDP
    flows and waits until the data plane has counted them; the clock moves
    INTERVAL_S per sleep."""

    def __init__(self, lab: Lab) -> None:
        self.lab, self.now, self.sent = lab, 1000.0, 0
        self.vip = lab.vip(4, "udp")

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        before = self.lab.balancer.stats(self.vip).packets
        replies = self.lab.client.udp_exchange(self.vip.address, self.vip.port, sports=SPORTS,
                                               tries=1)  # fmt: skip
        assert not replies.failures, replies.failures[:3]  # one datagram per flow, each answered
        counted = eventually(
            lambda: self.lab.balancer.stats(self.vip).packets - before, lambda n: n >= FLOWS
        )
        assert counted == FLOWS
        self.sent += FLOWS
        self.now += INTERVAL_S


def test_once_json_rates_shares_and_new_flows_are_the_traffic_sent(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vip = lab.vip(4, "udp")
    # Fresh source ports each run would be new flows; these must not be in the table yet.
    lab.balancer.clear_flows()
    args = build_parser().parse_args(top_args(lab, tmp_path, "--once", "--json"))
    target = resolve_target(args)
    traffic = KnownTraffic(lab)
    with open_balancer(target) as lb:
        assert top.run(lb, target, args, clock=traffic.clock, sleep=traffic.sleep) == 0
    (line,) = capsys.readouterr().out.splitlines()
    view = json.loads(line)

    assert traffic.sent == FLOWS and view["interval_s"] == INTERVAL_S
    rows = {row["vip"]: row for row in view["vips"]}
    row = rows[str(vip)]
    assert row["pps"] == FLOWS / INTERVAL_S
    assert row["new_flows_per_s"] == FLOWS / INTERVAL_S
    per_packet = row["bps"] * INTERVAL_S / 8 / FLOWS
    assert per_packet in (20 + 8 + UDP_PAYLOAD, 14 + 20 + 8 + UDP_PAYLOAD), per_packet
    assert all(r["pps"] == 0 for name, r in rows.items() if name != str(vip))

    expected = Counter(
        str(lab.balancer.predict(Flow(lab.client.ipv4, vip.address, sport, vip.port, "udp")))
        for sport in SPORTS
    )
    reals = {r["address"]: r for r in row["reals"]}
    assert {a: r["pps"] * INTERVAL_S for a, r in reals.items()} == {
        a: float(expected[a]) for a in reals
    }
    assert {a: r["new_flows_per_s"] * INTERVAL_S for a, r in reals.items()} == {
        a: float(expected[a]) for a in reals
    }
    for address, r in reals.items():
        assert r["traffic_share"] == pytest.approx(expected[address] / FLOWS, abs=1e-6)
        shares = lab.balancer.ring_shares(vip)
        assert r["ring_share"] == pytest.approx(shares[ip_address(address)], abs=1e-6)
        assert r["health"] == "-"  # no daemon: nothing judges health
    assert row["announced"] is None and view["bgp"] is None

    assert view["totals"]["forwarded_pps"] == FLOWS / INTERVAL_S
    assert view["totals"]["new_flows_per_s"] == FLOWS / INTERVAL_S
    assert view["conn_table"]["ipv4"]["entries"] >= FLOWS
    # Sorted by packets: the busiest real first.
    assert [r["pps"] for r in row["reals"]] == sorted(
        (r["pps"] for r in row["reals"]), reverse=True
    )


def test_the_executable_shows_moving_traffic_as_json_and_as_plain_text(
    lab: Lab, tmp_path: Path
) -> None:
    vip = lab.vip(4, "tcp")
    node = lab.balancers[0]
    with lab.client.traffic([(vip.address, vip.port, "tcp")]) as traffic:
        wait_for_traffic(traffic)
        result = netns.run(
            node.netns, [XLB, *top_args(lab, tmp_path, "--once", "--json", "--interval", "1")]
        )
        plain = netns.run(node.netns, [XLB, *top_args(lab, tmp_path, "--once", "--sort", "bps")])
    assert result.stderr == "" and plain.stderr == ""
    view: dict[str, Any] = json.loads(result.stdout)
    row = next(r for r in view["vips"] if r["vip"] == str(vip))
    assert row["pps"] > 0 and row["bps"] > 0 and row["new_flows_per_s"] > 0
    assert view["vips"][0]["vip"] == str(vip)  # the only VIP with traffic sorts first
    assert sum(r["traffic_share"] or 0 for r in row["reals"]) == pytest.approx(1, abs=1e-3)
    lines = plain.stdout.splitlines()
    assert lines[0].startswith(f"xlb on {node.interface} (XDP native")
    assert lines[1].startswith("forwarded ") and "sorted by bps" in lines[1]
    assert any(line.startswith(str(vip)) for line in lines)
    assert "\x1b[" not in plain.stdout  # a pipe gets no terminal codes
