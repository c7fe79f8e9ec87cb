"""The metrics endpoint, scraped over HTTP while real packets flow.

A client namespace sends UDP datagrams over a veth to the balancer's
namespace, where xlb runs in generic XDP mode and sends them back
encapsulated (the client drops them: nobody decapsulates, which does not
matter here). The test scrapes http://127.0.0.1:PORT/metrics during and
after the traffic, parses it with prometheus_client's own parser, and
checks that the counters are exactly the traffic sent.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from xlb import Balancer, BalancerConfig, Flow, Real, Vip, _limits, netns
from xlb.health import ProbeResult, TargetHealth
from xlb.metrics import discovery_file, start_metrics_server

XLB = str(Path(sys.executable).with_name("xlb"))
VIP = Vip("10.100.0.1", 5000, "udp")
CLIENT = "10.0.0.2"
FLOWS, PER_FLOW, PAYLOAD = 20, 5, 100


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class Setup:
    def __init__(self, lb_ns: str, client_ns: str, pin_dir: Path, lb: Balancer) -> None:
        self.lb_ns, self.client_ns, self.pin_dir, self.lb = lb_ns, client_ns, pin_dir, lb


@pytest.fixture
def setup(make_netns: Any) -> Iterator[Setup]:
    lb_ns, client_ns = make_netns(), make_netns()
    pin_dir = Path(f"/sys/fs/bpf/xlbt-metrics-{os.getpid()}")
    netns.run(
        lb_ns,
        ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1", "netns", client_ns],
    )
    netns.run(lb_ns, ["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"])
    netns.run(lb_ns, ["ip", "link", "set", "eth0", "up"])
    netns.run(client_ns, ["ip", "addr", "add", f"{CLIENT}/24", "dev", "eth1"])
    netns.run(client_ns, ["ip", "link", "set", "eth1", "up"])
    netns.run(client_ns, ["ip", "route", "add", "10.100.0.0/24", "via", "10.0.0.1"])
    client_mac = json.loads(netns.run(client_ns, ["ip", "-j", "link", "show", "eth1"]).stdout)[0][
        "address"
    ]
    with netns.enter(lb_ns):
        lb = Balancer(
            "eth0", "generic", pin_dir=pin_dir, config=BalancerConfig(gateway_mac=client_mac)
        )
    try:
        lb.add_vip(VIP)
        lb.set_reals(VIP, [Real("10.30.1.2"), Real("10.30.2.2"), Real("10.30.3.2")])
        yield Setup(lb_ns, client_ns, pin_dir, lb)
    finally:
        lb.close(detach=True)
        shutil.rmtree(pin_dir, ignore_errors=True)


def send_traffic(client_ns: str, sports: list[int]) -> None:
    """PER_FLOW datagrams of PAYLOAD bytes from each source port, in the client's netns."""
    error: list[BaseException] = []

    def run() -> None:
        try:
            with netns.enter(client_ns):
                socks = []
                for sport in sports:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    sock.bind((CLIENT, sport))
                    socks.append(sock)
                for _ in range(PER_FLOW):
                    for sock in socks:
                        sock.sendto(b"x" * PAYLOAD, (str(VIP.address), VIP.port))
                    time.sleep(0.02)
                for sock in socks:
                    sock.close()
        except BaseException as exc:  # reported in the test's thread
            error.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not error, error


def test_scraped_counters_match_the_traffic_sent(setup: Setup) -> None:
    lb = setup.lb
    sports = [20000 + i for i in range(FLOWS)]
    server = start_metrics_server(lb, "127.0.0.1:0")
    try:
        before = scrape(server.url)
        assert value(before, "xlb_vip_packets_total", vip=str(VIP)) == 0
        assert value(before, "xlb_vips") == 1
        sender = threading.Thread(target=send_traffic, args=(setup.client_ns, sports))
        sender.start()
        during = []
        while sender.is_alive():
            during.append(scrape(server.url))  # scrapes run while packets flow
            time.sleep(0.01)
        sender.join()
        total = FLOWS * PER_FLOW
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the veth backlog drains asynchronously
            after = scrape(server.url)
            if value(after, "xlb_vip_packets_total", vip=str(VIP)) >= total:
                break
            time.sleep(0.05)
    finally:
        server.close()

    assert during, "no scrape ran during the traffic"
    seen = [value(s, "xlb_vip_packets_total", vip=str(VIP)) for s in during]
    assert seen == sorted(seen) and seen[-1] <= total  # counters only grow

    assert value(after, "xlb_vip_packets_total", vip=str(VIP)) == total
    nbytes = value(after, "xlb_vip_bytes_total", vip=str(VIP))
    assert nbytes == lb.stats(VIP).bytes and nbytes / total in (
        20 + 8 + PAYLOAD,
        14 + 20 + 8 + PAYLOAD,
    )
    expected: dict[str, float] = {"10.30.1.2": 0, "10.30.2.2": 0, "10.30.3.2": 0}
    for sport in sports:
        expected[str(lb.predict(Flow(CLIENT, VIP.address, sport, VIP.port, "udp")))] += PER_FLOW
    per_real = {
        real: value(after, "xlb_real_packets_total", vip=str(VIP), real=real) for real in expected
    }
    assert per_real == expected
    assert (
        sum(value(after, "xlb_real_bytes_total", vip=str(VIP), real=real) for real in expected)
        == nbytes
    )
    assert value(after, "xlb_xdp_actions_total", action="tx") == total
    assert value(after, "xlb_packets_total", reason="forward") == total
    assert value(after, "xlb_conn_table_misses_total") == FLOWS
    assert value(after, "xlb_conn_table_hits_total") == total - FLOWS
    assert value(after, "xlb_conn_table_entries", family="ipv4") == FLOWS  # one per flow
    assert value(after, "xlb_conn_table_entries", family="ipv6") == 0
    for family in ("ipv4", "ipv6"):
        capacity = value(after, "xlb_conn_table_capacity", family=family)
        assert capacity == _limits.XLB_LIMIT_CONN_TABLE_SIZE
    assert value(after, "xlb_real_weight", vip=str(VIP), real="10.30.1.2") == 1
    shares = [value(after, "xlb_real_ring_share", vip=str(VIP), real=r) for r in expected]
    assert abs(sum(shares) - 1) < 1e-9
    assert value(after, "xlb_vip_ring_size", vip=str(VIP)) == 65537
    # Not ours: ARP and IPv6 neighbour discovery passed to the stack, by reason.
    passed = value(after, "xlb_xdp_actions_total", action="pass")
    assert passed == sum(
        v
        for (n, labels), v in after.items()
        if n == "xlb_packets_total" and labels[0][1].startswith("pass")
    )


def test_ring_changes_update_latency_and_health(setup: Setup, tmp_path: Path) -> None:
    lb = setup.lb
    up, down = TargetHealth(rise=2, fall=3), TargetHealth(rise=2, fall=3)
    for _ in range(7):
        up.record(ProbeResult(True))
    for ok in (True, True, True, False, False, False, False):
        down.record(ProbeResult(ok, "" if ok else "connection refused"))
    health = {
        str(VIP): {
            "healthy": True,
            "unhealthy_transitions": 0,
            "reals": {
                "10.30.1.2": up.as_dict(),
                "10.30.2.2": down.as_dict(),
                "10.30.3.2": {"state": "unchecked"},
            },
        }
    }
    server = start_metrics_server(lb, "127.0.0.1:0", health_source=lambda: health)
    try:
        lb.set_weight(VIP, "10.30.3.2", 0)
        lb.set_reals(VIP, [Real("10.30.1.2"), Real("10.30.2.2")])
        with pytest.raises(Exception, match="already exists"):
            lb.add_vip(VIP)
        lb.set_vip_flags(VIP, lb.vip_flags(VIP))  # no ring change
        m = scrape(server.url)
        assert value(m, "xlb_ring_updates_total", vip=str(VIP)) == 2
        assert value(m, "xlb_updates_total", op="set_weight", result="ok") == 1
        assert value(m, "xlb_updates_total", op="set_reals", result="ok") == 1
        assert value(m, "xlb_updates_total", op="add_vip", result="error") == 1
        assert value(m, "xlb_updates_total", op="set_vip_flags", result="ok") == 1
        assert value(m, "xlb_update_duration_seconds_count", op="set_reals") == 1
        assert 0 < value(m, "xlb_update_duration_seconds_sum", op="set_reals") < 5
        assert value(m, "xlb_update_duration_seconds_bucket", op="set_reals", le="+Inf") == 1
        assert value(m, "xlb_real_up", vip=str(VIP), real="10.30.1.2") == 1
        assert value(m, "xlb_real_up", vip=str(VIP), real="10.30.2.2") == 0
        assert ("xlb_real_up", (("real", "10.30.3.2"), ("vip", str(VIP)))) not in m
        assert (
            value(m, "xlb_real_health_transitions_total", vip=str(VIP), real="10.30.2.2", to="down")
            == 1
        )
        assert (
            value(
                m, "xlb_real_health_probes_total", vip=str(VIP), real="10.30.2.2", result="failed"
            )
            == 4
        )
        assert value(m, "xlb_vip_healthy", vip=str(VIP)) == 1
        assert value(m, "xlb_vip_reals", vip=str(VIP)) == 2

        # `xlb list` finds the daemon's health through the announced endpoint.
        assert json.loads(discovery_file(setup.pin_dir).read_text())["address"] == server.address
        lock = tmp_path / "eth0.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            out = subprocess.run(
                [
                    XLB,
                    "list",
                    "--json",
                    "-i",
                    "eth0",
                    "--pin-dir",
                    str(setup.pin_dir),
                    "--lock-dir",
                    str(tmp_path),
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
        finally:
            os.close(fd)
        assert out.returncode == 0, out.stderr
        (listed,) = json.loads(out.stdout)["vips"]
        assert listed["health"] == "healthy"
        assert {r["address"]: r["health"] for r in listed["reals"]} == {
            "10.30.1.2": "up",
            "10.30.2.2": "down",
        }
    finally:
        server.close()
    assert not discovery_file(setup.pin_dir).exists()


def test_bad_addresses_are_refused(setup: Setup) -> None:
    from xlb.errors import ConfigError, XlbError

    for bad in ("nowhere", "127.0.0.1:99999", "example.com:9100"):
        with pytest.raises(ConfigError):
            start_metrics_server(setup.lb, bad)
    with (
        start_metrics_server(setup.lb, "127.0.0.1:0") as first,
        pytest.raises(XlbError, match="cannot serve metrics"),
    ):
        start_metrics_server(setup.lb, first.address)


def test_colon_port_listens_on_every_address(setup: Setup) -> None:
    """ ":PORT" is every IPv4 address, as documented (and as Prometheus
    exporters read it); the URL and the announcement name the loopback."""
    # Entered first: the socket and the scrapes live in the balancer's namespace.
    with netns.enter(setup.lb_ns), start_metrics_server(setup.lb, ":0") as server:
        assert server.address == f"0.0.0.0:{server.port}"
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        announced = json.loads(discovery_file(setup.pin_dir).read_text())["address"]
        assert announced == f"127.0.0.1:{server.port}"
        for host in ("127.0.0.1", "10.0.0.1"):  # loopback and eth0's address
            m = scrape(f"http://{host}:{server.port}/metrics")
            assert value(m, "xlb_vips") == 1
