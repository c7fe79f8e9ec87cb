"""`xlb -Ln` (ipvsadm's habits) against a lab with known traffic.

One lab for the module (3 reals, the default services on vip4 and vip6,
udp_ttl 2 s so a UDP entry can be seen going inactive). Each test empties
the connection table, makes its own connections from the lab's client
(each HTTP GET on a new connection, each UDP exchange from a new socket),
and reads `xlb -Ln ...` run as the console script in the balancer's
namespace. The client knows which real answered each connection and from
which source port, so the connection counts and the connection list are
checked against what the client saw, not against what xlb says elsewhere.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter as Tally
from collections.abc import Iterator
from pathlib import Path

import pytest
from waits import eventually

from xlb import BalancerConfig, Vip, netns
from xlb.lab import Lab
from xlb.model import Counter, format_endpoint

XLB = str(Path(sys.executable).with_name("xlb"))
UDP_TTL_S = 2.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(reals=3, balancer_config=BalancerConfig(mtu=1600, udp_ttl_s=UDP_TTL_S)) as lab:
        lab.add_default_services()
        yield lab


@pytest.fixture
def quiet(lab: Lab) -> Lab:
    """The lab with an empty connection table and counters read as a base."""
    lab.balancer.clear_flows()
    return lab


def xlb(lab: Lab, *args: str, code: int = 0) -> str:
    node = lab.balancers[0]
    where = ["-i", node.interface, "--pin-dir", str(node.pin_dir)]
    result = subprocess.run(
        ["nsenter", f"--net={netns.NETNS_DIR / node.netns}", XLB, *args, *where],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result.stdout if code == 0 else result.stderr


def real_lines(out: str, service: str) -> dict[str, list[str]]:
    """The `  -> ` lines under a service line, by the real's address:port."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(service))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  -> "):
            break
        fields = line.split()
        rows[fields[1]] = fields[2:]
    return rows


def by_address(lab: Lab, counts: Tally[str], family: int, port: int) -> dict[str, int]:
    """Lab names (real1) to 'address:port' as xlb prints the reals."""
    return {
        format_endpoint(lab.real(name).address(family), port): count
        for name, count in counts.items()
    }


def test_ln_is_ipvsadm_ln_with_the_connections_each_real_got(quiet: Lab) -> None:
    lab = quiet
    v4 = lab.client.http_get(lab.vip4, lab.tcp_port, count=30)
    v6 = lab.client.http_get(lab.vip6, lab.tcp_port, count=20)
    assert not v4.failures and not v6.failures
    out = xlb(lab, "-Ln")
    lines = out.splitlines()
    assert lines[0].startswith("xlb ") and "pinned at" in lines[0]
    assert lines[1] == "Prot LocalAddress:Port Scheduler Flags"
    assert lines[2] == "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
    services = [line for line in lines[3:] if not line.startswith("  -> ")]
    port = lab.tcp_port
    assert services == [
        f"TCP  {lab.vip4}:{port} mh",
        f"TCP  [{lab.vip6}]:{port} mh",
        f"UDP  {lab.vip4}:{lab.udp_port} mh",
        f"UDP  [{lab.vip6}]:{lab.udp_port} mh",
    ]
    for family, replies in ((4, v4), (6, v6)):
        vip = format_endpoint(lab.vip_address(family), port)
        rows = real_lines(out, f"TCP  {vip} ")
        expected = by_address(lab, replies.by_real(), family, port)
        assert set(rows) == {format_endpoint(r.address(family), port) for r in lab.reals}
        for address, (forward, weight, active, inactive) in rows.items():
            assert (forward, weight) == ("Tunnel", "1")
            assert (int(active), int(inactive)) == (expected.get(address, 0), 0), address
    # ipvsadm's columns: "  -> %-28s %-7s %-6d %-10u %-10u"
    row = next(line for line in lines[3:] if line.startswith("  -> "))
    assert re.fullmatch(r"  -> .{28} .{7} .{6} \d+ *( \d+)?", row), row


def test_udp_entries_past_udp_ttl_are_inactive(quiet: Lab) -> None:
    lab = quiet
    replies = lab.client.udp_exchange(lab.vip4, lab.udp_port, count=12)
    assert not replies.failures
    expected = by_address(lab, replies.by_real(), 4, lab.udp_port)
    service = f"UDP  {lab.vip4}:{lab.udp_port} "

    def counts() -> dict[str, tuple[int, int]]:
        rows = real_lines(xlb(lab, "-Ln"), service)
        return {a: (int(f[2]), int(f[3])) for a, f in rows.items() if a in expected}

    fresh = counts()
    assert sum(active for active, _ in fresh.values()) + sum(i for _, i in fresh.values()) == 12
    # Idle for longer than udp_ttl: the next packet would re-select, InActConn.
    aged = eventually(
        counts,
        lambda seen: all(seen[a] == (0, n) for a, n in expected.items()),
        timeout=30,
        every=0.5,
    )
    assert aged == {a: (0, n) for a, n in expected.items()}


def test_stats_counts_connections_and_packets_in_ipvsadm_columns(quiet: Lab) -> None:
    lab = quiet
    before = _real_counters(lab)
    replies = lab.client.http_get(lab.vip4, lab.tcp_port, count=24)
    assert not replies.failures
    out = xlb(lab, "-Ln", "--stats", "--exact")
    lines = out.splitlines()
    assert lines[1].split() == ["Prot", "LocalAddress:Port", "Conns", "InPkts", "OutPkts",
                                "InBytes", "OutBytes"]  # fmt: skip
    assert lines[2] == "  -> RemoteAddress:Port"
    vip = f"{lab.vip4}:{lab.tcp_port}"
    service = next(line for line in lines if line.startswith(f"TCP  {vip} "))
    rows = real_lines(out, f"TCP  {vip} ")
    expected = by_address(lab, replies.by_real(), 4, lab.tcp_port)
    totals = [0, 0, 0, 0, 0]
    for address, fields in rows.items():
        conns, in_pkts, out_pkts, in_bytes, out_bytes = map(int, fields)
        made = expected.get(address, 0)
        assert conns == made, address
        grew = in_pkts - before[address].packets
        # A GET is at least SYN, the request and the FIN from the client.
        assert grew >= 3 * made, (address, grew, made)
        assert (out_pkts, out_bytes) == (0, 0)  # replies never pass the balancer
        assert in_bytes - before[address].bytes >= grew * 40  # IPv4 + TCP headers at least
        totals = [t + v for t, v in zip(totals, map(int, fields), strict=True)]
    assert list(map(int, service.split()[2:])) == totals


def _real_counters(lab: Lab) -> dict[str, Counter]:
    """Each real's packets and bytes so far, by 'address:port' (a base to count from)."""
    node = lab.balancers[0]
    assert node.balancer is not None
    stats = node.balancer.real_stats(Vip(lab.vip4, lab.tcp_port, "tcp"))
    return {format_endpoint(a, lab.tcp_port): c for a, c in stats.items()}


def test_connection_list_is_each_client_connection_and_its_real(quiet: Lab) -> None:
    lab = quiet
    replies = lab.client.http_get(lab.vip6, lab.tcp_port, count=15)
    assert not replies.failures
    out = xlb(lab, "-Lnc")
    lines = out.splitlines()
    assert lines[1] == "xlb connection entries"
    assert lines[2].split() == ["pro", "expire", "state", "source", "virtual", "destination"]
    client = lab.client.address(6)
    seen = {}
    for line in lines[3:]:
        proto, expire, state, source, virtual, destination = line.split()
        assert (proto, expire, state) == ("TCP", "never", "ACTIVE")
        assert virtual == format_endpoint(lab.vip6, lab.tcp_port)
        host, _, sport = source.rpartition(":")
        assert host == f"[{client}]"
        seen[int(sport)] = destination
    expected = {
        r.sport: format_endpoint(lab.real(r.real).address(6), lab.tcp_port)
        for r in replies
        if r.real is not None
    }
    assert seen == expected


def test_rate_counts_new_connections_per_second(quiet: Lab) -> None:
    lab = quiet
    idle = xlb(lab, "-Ln", "--rate", "--interval", "0.5").splitlines()
    assert idle[1].split() == ["Prot", "LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS",
                               "OutBPS"]  # fmt: skip
    assert all(line.split()[-5:] == ["0"] * 5 for line in idle[3:]), idle
    targets = [(lab.vip4, lab.tcp_port, "tcp")]
    with lab.client.traffic(targets) as traffic:
        eventually(lambda: traffic.report.ok["new"], lambda n: n >= 5)
        out = xlb(lab, "-Ln", "--rate", "--interval", "1", "-t", f"{lab.vip4}:{lab.tcp_port}")
    assert traffic.report.failed == 0
    lines = out.splitlines()
    service = lines[3].split()
    assert service[:2] == ["TCP", f"{lab.vip4}:{lab.tcp_port}"] and len(lines) == 3 + 1 + 3
    cps, in_pps, out_pps, in_bps, out_bps = map(int, service[2:])
    assert cps > 0 and in_pps >= cps and in_bps > in_pps and (out_pps, out_bps) == (0, 0)
    reals = [list(map(int, line.split()[2:])) for line in lines[4:]]
    assert abs(sum(r[0] for r in reals) - cps) <= len(reals)  # rounding per row


def test_what_has_no_meaning_is_said_and_unknown_services_are_errors(quiet: Lab) -> None:
    lab = quiet
    assert "no per-real connection thresholds" in xlb(lab, "-Ln", "--thresholds", code=2)
    assert "no TCP timeouts" in xlb(lab, "-L", "--timeout", code=2)
    assert "no service 192.0.2.250:80/tcp" in xlb(lab, "-Ln", "-t", "192.0.2.250:80", code=1)
    one = xlb(lab, "-l", "-n", "-u", f"[{lab.vip6}]:{lab.udp_port}").splitlines()
    assert one[3] == f"UDP  [{lab.vip6}]:{lab.udp_port} mh" and len(one) == 4 + len(lab.reals)
