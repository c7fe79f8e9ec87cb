"""A health probe leaves with exactly the outer headers a client packet of
the same 5-tuple gets, so an ECMP fabric carries it on the clients' path.

The balancer (bpf/xlb.bpf.c, XDP) and the probe path (bpf/healthcheck.bpf.c,
tc egress) wrap packets with the same builders (bpf/outer.h) and the same
flow hash (bpf/hash.h, with the VIP's hash flags from the shared `vips` map).
Each case runs one client packet through the balancer and the same IP
packet, marked as a probe, through the tc program (both BPF_PROG_TEST_RUN on
the real objects, sharing their pinned maps as the daemon's do) and compares
the two frames byte for byte: MACs, outer IPv4/IPv6 header (id, DF, TOS,
TTL, source with the flow-hash bits, flow label, checksum), GUE's UDP header
and the inner packet. Nothing is masked: the data plane's outer IPv4 id is
always 0, never per packet.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pkt_defs import (
    CLIENT4,
    CONFIG,
    CONFIG_GUE_ALL,
    LB_MAC,
    NOT_VIP4,
    NOT_VIP6,
    REAL4,
    REAL4_GUE,
    REAL4_NOMAC,
    REAL6,
    REAL6_4IN6,
    REAL6_GUE,
    SMALL_RING,
    VIP4,
    VIP4_ANY_UDP,
    VIP4_DPORT_ONLY,
    VIP4_GUE,
    VIP4_GUE6,
    VIP4_NO_SPORT,
    VIP4_NOMAC,
    VIP6,
    VIP6_ANY_TCP,
    VIP6_GUE,
    Service,
    assert_packet,
    echo4,
    encapsulated,
    frame,
    tcp4,
    tcp6,
    udp4,
    udp6,
)
from scapy.packet import Packet

from xlb import Balancer, BalancerConfig, Real, Vip, VipFlags
from xlb._bpf import BpfObject, Program
from xlb.health import HC_OBJECT, HC_PROGRAM, MARK_BASE, Tunnel, _target_value

MARK = MARK_BASE | 1
# struct __sk_buff (192 bytes in linux/bpf.h: a shorter ctx fails the run
# with ENOSPC when the kernel copies it back): only `mark` set, at offset 8.
SKB_CTX_SIZE = 192
PROBE_CTX = struct.pack("=III", 0, 0, MARK).ljust(SKB_CTX_SIZE, b"\0")
TC_ACT_OK = 0
# The frame a probe socket's packet has at tc egress: from the balancer's
# interface (the MAC the balancer puts as source, the client's frame's
# destination) to the probe route's fake next hop, which tc replaces.
FAKE_NEXT_HOP_MAC = "02:00:00:00:00:99"
PREFIX_VIP = Vip("192.0.2.128/28", 80, "tcp")


@dataclass(frozen=True)
class Case:
    id: str
    vip: Service
    inner: Packet  # the client's (and the probe's) IP packet
    config: BalancerConfig = CONFIG

    @property
    def real(self) -> Real:
        return self.vip.reals[0]

    @property
    def gue(self) -> bool:
        """What health.target_for() gives the probe (effective_encapsulation)."""
        return VipFlags.GUE in self.vip.flags or self.config.gue_all


def service(vip: Vip, real: Real, flags: VipFlags = VipFlags.NONE) -> Service:
    return Service(vip, (real,), flags)


CASES = [
    Case("ipip4-tcp", service(VIP4, REAL4), tcp4(VIP4, tos=0x28, flags="S")),
    Case(
        "ipip4-udp-no-df",
        service(VIP4_DPORT_ONLY, REAL4, VipFlags.DPORT_ONLY),
        udp4(VIP4_DPORT_ONLY, 5353, df=False, tos=0x04),
    ),
    Case(
        "ipip4-no-sport",
        service(VIP4_NO_SPORT, REAL4, VipFlags.NO_SPORT),
        tcp4(VIP4_NO_SPORT, sport=51234),
    ),
    Case("ipip4-gateway-mac", service(VIP4_NOMAC, REAL4_NOMAC), tcp4(VIP4_NOMAC)),
    Case("ip6ip6", service(VIP6, REAL6), tcp6(VIP6, tc=0xB8, fl=0x12345)),
    Case("ip6ip6-any-port", service(VIP6_ANY_TCP, REAL6), tcp6(VIP6_ANY_TCP, 8443)),
    Case("4in6", service(VIP4_ANY_UDP, REAL6_4IN6), udp4(VIP4_ANY_UDP, 7, df=False, tos=0x10)),
    Case("4in6-df", service(VIP4_ANY_UDP, REAL6_4IN6), udp4(VIP4_ANY_UDP, 8, tos=0x10)),
    Case("gue4", service(VIP4_GUE, REAL4_GUE, VipFlags.GUE), udp4(VIP4_GUE, df=False)),
    Case("gue4-df", service(VIP4_GUE, REAL4_GUE, VipFlags.GUE), udp4(VIP4_GUE, tos=0x48)),
    Case("gue6", service(VIP6_GUE, REAL6_GUE, VipFlags.GUE), udp6(VIP6_GUE, tc=0x20)),
    Case("gue-4in6", service(VIP4_GUE6, REAL6_GUE, VipFlags.GUE), udp4(VIP4_GUE6, df=False)),
    Case(
        "prefix-vip-no-sport",  # the probe program finds prefix VIPs too (vip_prefix.h)
        service(PREFIX_VIP, REAL4, VipFlags.NO_SPORT),
        tcp4("192.0.2.133", 80, sport=51234),
    ),
    Case("gue-all4", service(VIP4, REAL4), tcp4(VIP4), CONFIG_GUE_ALL),
    Case("gue-all6", service(VIP6, REAL6), tcp6(VIP6), CONFIG_GUE_ALL),
]


@dataclass
class Planes:
    """The balancer and the probe program over one pin directory."""

    balancer: Balancer
    probes: BpfObject

    @property
    def probe_program(self) -> Program:
        return self.probes.program(HC_PROGRAM)

    def aim_probes(self, real: Real, gue: bool) -> None:
        """What ProbePath.acquire() writes for a tunnel, under MARK."""
        tunnel = Tunnel(real.address, real.mac, gue)
        self.probes.map("hc_targets").update(struct.pack("=I", MARK), _target_value(tunnel))

    def probe(self, inner: Packet) -> bytes:
        packet = frame(inner, src=LB_MAC, dst=FAKE_NEXT_HOP_MAC)
        result = self.probe_program.test_run(packet, ctx=PROBE_CTX)
        assert result.retval == TC_ACT_OK, f"probe verdict {result.retval}"
        return bytes(result.data)


@pytest.fixture(scope="module")
def planes() -> Iterator[Planes]:
    pin_dir = Path("/sys/fs/bpf") / f"xlbt-probe-encap-{os.getpid()}"
    try:
        with Balancer(pin_dir=pin_dir, config=CONFIG) as balancer:
            for vip in {case.vip for case in CASES}:
                balancer.add_vip(vip.vip, vip.flags, ring_size=SMALL_RING)
                balancer.set_reals(vip.vip, list(vip.reals))
            # after the balancer: the probe program adopts its `config` and `vips`
            probes = BpfObject(HC_OBJECT, pin_dir=pin_dir, only=[HC_PROGRAM])
            try:
                yield Planes(balancer, probes)
            finally:
                probes.close()
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_probe_gets_the_outer_headers_of_a_client_packet(planes: Planes, case: Case) -> None:
    planes.balancer.configure(case.config)
    client = planes.balancer.run(frame(case.inner))
    assert client.action == "XDP_TX"
    planes.aim_probes(case.real, case.gue)
    assert_packet(planes.probe(case.inner), client.packet, "probe vs client packet")


@pytest.mark.parametrize(
    ("inner", "real", "flow"),
    [
        (tcp4(NOT_VIP4, 80), REAL4, None),
        (tcp6(NOT_VIP6, 80), REAL6, None),
        (echo4(NOT_VIP4), REAL4, (CLIENT4, NOT_VIP4, 0, 0, 1)),
    ],
    ids=["tcp4", "tcp6", "icmp4"],
)
def test_probe_to_no_vip_hashes_its_flow_without_vip_flags(
    planes: Planes, inner: Packet, real: Real, flow: tuple[str, str, int, int, int] | None
) -> None:
    """A check may probe an address that is no VIP (its `address`), or send
    other than TCP/UDP (a command): no client packet to compare with, the
    flow hash without VIP flags (ports 0 unless TCP/UDP) shapes the header."""
    planes.balancer.configure(CONFIG)
    planes.aim_probes(real, gue=False)
    want = encapsulated(inner, real, flow=flow)
    assert_packet(planes.probe(inner), want, "probe to no VIP")
