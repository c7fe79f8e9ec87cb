"""The FIB-lookup next hop (BalancerConfig(fib_lookup=True), no gateway MAC).

A network namespace holds veth pairs with addresses and permanent neighbour
entries; the test thread enters it (xlb.netns.enter) and runs packets with
an xdp_md context whose ingress_ifindex is a veth, so bpf_fib_lookup()
resolves the real's MAC from the kernel's own tables.

BPF_PROG_TEST_RUN's rules for an XDP ctx (net/bpf/test_run.c): struct
xdp_md is six u32 (data, data_end, data_meta, ingress_ifindex,
rx_queue_index, egress_ifindex); data and data_meta must be 0, data_end
the frame length, egress_ifindex 0, and ingress_ifindex a device of the
calling thread's network namespace with rx_queue_index below its number
of queues. bpf_fib_lookup() also needs forwarding enabled on that device.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from pkt_defs import (
    LB_MAC,
    REAL_MAC,
    VIP4,
    VIP6,
    Service,
    Setup,
    apply,
    assert_packet,
    config_with,
    encapsulated,
    frame,
    tcp4,
    tcp6,
)
from scapy.packet import Packet

from xlb import Balancer, Real, Vip, netns
from xlb._bpf import ifindex

IN_MAC = "02:00:00:00:99:01"  # xv0: where client packets arrive, and reals live
NEIGH_MAC = "02:00:00:00:99:02"  # the reals' MAC in the neighbour table
OUT_MAC = "02:00:00:00:98:01"  # xv2: a second device with reals behind it
NEIGH2_MAC = "02:00:00:00:98:02"

REAL_V4 = Real("10.99.0.2")  # neighbour on xv0
REAL_V6 = Real("fd99::2")
REAL_NO_NEIGH = Real("10.99.0.3")  # on xv0's subnet, no neighbour entry
REAL_OTHER_DEV = Real("10.98.0.2")  # neighbour on xv2
REAL_OTHER_DEV6 = Real("fd98::2")
REAL_UNROUTED = Real("10.97.0.2")  # no route at all

FIB_CONFIG = config_with(gateway_mac=None, fib_lookup=True)


@dataclass(frozen=True)
class FibLab:
    ns: str
    lb: Balancer
    ingress: int  # ifindex of xv0 inside the namespace
    egress: int  # ifindex of xv2


def sh(ns: str, command: str) -> None:
    netns.run(ns, command.split())


@pytest.fixture
def fib_lab(make_netns: Callable[[], str]) -> Iterator[FibLab]:
    ns = make_netns()
    for a, b, mac, peer_mac in (
        ("xv0", "xv1", IN_MAC, "02:00:00:00:99:ff"),
        ("xv2", "xv3", OUT_MAC, "02:00:00:00:98:ff"),
    ):
        sh(ns, f"ip link add {a} address {mac} type veth peer name {b} address {peer_mac}")
        sh(ns, f"ip link set {a} up")
        sh(ns, f"ip link set {b} up")
    sh(ns, "ip addr add 10.99.0.1/24 dev xv0")
    sh(ns, "ip -6 addr add fd99::1/64 dev xv0 nodad")
    sh(ns, "ip addr add 10.98.0.1/24 dev xv2")
    sh(ns, "ip -6 addr add fd98::1/64 dev xv2 nodad")
    # bpf_fib_lookup() answers BPF_FIB_LKUP_RET_FWD_DISABLED unless the
    # ingress device forwards (IN_DEV_FORWARD / idev->cnf.forwarding).
    sh(ns, "sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1")
    for real, mac, dev in (
        (REAL_V4, NEIGH_MAC, "xv0"),
        (REAL_V6, NEIGH_MAC, "xv0"),
        (REAL_OTHER_DEV, NEIGH2_MAC, "xv2"),
        (REAL_OTHER_DEV6, NEIGH2_MAC, "xv2"),
    ):
        sh(ns, f"ip neigh add {real.address} lladdr {mac} nud permanent dev {dev}")
    with netns.enter(ns):
        lb = Balancer(config=FIB_CONFIG)  # loaded in the namespace it serves
        lab = FibLab(ns, lb, ifindex("xv0"), ifindex("xv2"))
    try:
        yield lab
    finally:
        lb.close()


def xdp_ctx(length: int, ingress_ifindex: int) -> bytes:
    """struct xdp_md for BPF_PROG_TEST_RUN (see the module docstring)."""
    return struct.pack("=6I", 0, length, 0, ingress_ifindex, 0, 0)


def run_on(lab: FibLab, data: bytes, ingress: int) -> tuple[str, bytes, dict[str, int]]:
    with netns.enter(lab.ns):  # the ifindex and the FIB are the namespace's
        before = lab.lb.counters()
        result = lab.lb.program.test_run(data, ctx=xdp_ctx(len(data), ingress))
        after = lab.lb.counters()
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    return result.action, result.data, delta


def serve(lab: FibLab, vip: Vip, real: Real) -> None:
    apply(lab.lb, Setup((Service(vip, (real,)),), FIB_CONFIG))


@pytest.mark.parametrize(
    ("vip", "l3", "real"),
    [(VIP4, tcp4(), REAL_V4), (VIP6, tcp6(), REAL_V6)],
    ids=["v4", "v6"],
)
def test_fib_lookup_takes_the_neighbours_mac(
    fib_lab: FibLab, vip: Vip, l3: Packet, real: Real
) -> None:
    serve(fib_lab, vip, real)
    data = frame(l3)
    action, out, delta = run_on(fib_lab, data, fib_lab.ingress)
    assert action == "XDP_TX", delta
    # dst = the neighbour's MAC, src = the egress device's MAC (the FIB's smac)
    want = encapsulated(l3, real, dmac=NEIGH_MAC, smac=IN_MAC, config=FIB_CONFIG)
    assert_packet(out, want)
    assert delta == {"xdp_tx": 1, "forward": 1, "conn_miss": 1}


def test_real_mac_wins_over_the_fib(fib_lab: FibLab) -> None:
    real = Real(str(REAL_V4.address), mac=REAL_MAC)
    serve(fib_lab, VIP4, real)
    action, out, _ = run_on(fib_lab, frame(tcp4()), fib_lab.ingress)
    assert action == "XDP_TX"
    assert_packet(out, encapsulated(tcp4(), real, smac=LB_MAC, config=FIB_CONFIG))


@pytest.mark.parametrize("real", [REAL_NO_NEIGH, REAL_UNROUTED], ids=["no_neighbour", "no_route"])
def test_fib_without_an_answer_drops_no_route(fib_lab: FibLab, real: Real) -> None:
    serve(fib_lab, VIP4, real)
    data = frame(tcp4())
    action, out, delta = run_on(fib_lab, data, fib_lab.ingress)
    assert action == "XDP_DROP"
    assert_packet(out, data)
    assert delta == {"xdp_drop": 1, "drop_no_route": 1, "conn_miss": 1}


@pytest.mark.parametrize(
    ("vip", "l3", "real"),
    [(VIP4, tcp4(), REAL_OTHER_DEV), (VIP6, tcp6(), REAL_OTHER_DEV6)],
    ids=["v4", "v6"],
)
def test_real_behind_another_device_is_redirected(
    fib_lab: FibLab, vip: Vip, l3: Packet, real: Real
) -> None:
    """xlb.bpf.c: "XDP_REDIRECT when the FIB says the real is behind another
    device" -- the packet arrives on xv0, the real's route and neighbour are
    on xv2."""
    serve(fib_lab, vip, real)
    data = frame(l3)
    action, out, delta = run_on(fib_lab, data, fib_lab.ingress)
    assert (action, delta) == ("XDP_REDIRECT", {"xdp_redirect": 1, "forward": 1, "conn_miss": 1})
    assert_packet(out, encapsulated(l3, real, dmac=NEIGH2_MAC, smac=OUT_MAC, config=FIB_CONFIG))
