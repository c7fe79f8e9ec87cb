"""Prefix VIPs in the lab: clients reach many addresses of one VIP.

A TCP prefix VIP with a port and a UDP prefix VIP of every port, IPv4 and
IPv6. The router routes each prefix to the balancer (as it would an anycast
range announced over BGP), the reals take the whole prefix as local, and
connections to addresses all over the prefix are served, spread over the
reals by one ring per VIP, next to the lab's exact VIPs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from xlb import Vip
from xlb.lab import Lab

WEB4 = Vip("10.101.0.0/24", 80, "tcp")
WEB6 = Vip("fd00:101::/64", 80, "tcp")
ECHO4 = Vip("10.102.0.0/16", 0, "udp")
ECHO6 = Vip("fd00:102::/48", 0, "udp")
INSIDE = {
    WEB4: ["10.101.0.1", "10.101.0.77", "10.101.0.254"],
    WEB6: ["fd00:101::1", "fd00:101::abcd:1", "fd00:101::ffff:ffff:ffff:fffe"],
    ECHO4: ["10.102.0.9", "10.102.200.31"],
    ECHO6: ["fd00:102::9", "fd00:102:0:ffff::31"],
}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(reals=3) as lab:
        lab.add_default_services()
        for vip in INSIDE:
            lab.add_prefix_service(vip, ring_size=1009)
        yield lab


@pytest.mark.parametrize("vip", [WEB4, WEB6], ids=["v4", "v6"])
def test_clients_reach_addresses_all_over_a_tcp_prefix(lab: Lab, vip: Vip) -> None:
    before = lab.balancer.stats(vip).packets
    seen = {}
    for address in INSIDE[vip]:
        replies = lab.client.http_get(address, vip.port, count=24)
        assert replies.ok, (address, replies.failures[:3])
        seen[address] = replies.by_real()
        assert lab.balancer.lookup_vip(ipaddress.ip_address(address), vip.port, "tcp") == vip
    print(f"{vip}: {seen}")
    assert len(set().union(*seen.values())) == 3  # one ring, every real
    assert lab.balancer.stats(vip).packets - before >= 3 * 24 * 3  # SYN, request, ACKs...
    # the lab's exact VIP of the same family is served as before
    exact = lab.client.http_get(lab.vip_address(vip.family), lab.tcp_port, count=8)
    assert exact.ok, exact.failures[:3]


@pytest.mark.parametrize("vip", [ECHO4, ECHO6], ids=["v4", "v6"])
def test_clients_reach_addresses_of_an_any_port_udp_prefix(lab: Lab, vip: Vip) -> None:
    before = lab.balancer.stats(vip).packets
    for address in INSIDE[vip]:
        replies = lab.client.udp_exchange(address, lab.udp_port, 16)
        assert replies.ok, (address, replies.failures[:3])
    assert lab.balancer.stats(vip).packets - before >= 16 * len(INSIDE[vip])
