"""Second chance on a real (bpf/handoff.h): a packet that carries an
alternate is decapsulated if this host holds a socket for its inner 4-tuple
(or it is a SYN, or a syncookie ACK), and handed on to the alternate if not.

Every test runs the decap program (XDP and tc) with BPF_PROG_TEST_RUN in a
network namespace of its own that holds real sockets: the program's
bpf_skc_lookup_tcp() looks in the namespace of the device the packet came
in on (the test run's ingress device xv0, a veth whose peer xv1 plays the
network: the neighbour every route here goes to). Sockets:

  established   a connection over loopback, client address on lo
  time-wait     the same, closed by the server first
  request       a SYN injected on xv1 from an address routed out of xv0:
                the SYN-ACK leaves and nobody answers (handshake in progress)
  syncookie     the same with net.ipv4.tcp_syncookies=2: the SYN-ACK is
                read on xv1 and the ACK carries its cookie
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from pkt_defs import (
    CLIENT4,
    CLIENT4_B,
    CLIENT6,
    CLIENT6_B,
    CONFIG,
    GUE_PORT,
    LB_MAC,
    VIP4,
    VIP6,
    assert_packet,
    decapsulated,
    encapsulated,
    frame,
    tcp4,
    tcp6,
    udp4,
)
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from xlb import Balancer, Flow, Real, VipFlags, netns
from xlb._bpf import ifindex
from xlb.decap import Decap, DecapMode

IN_MAC = "02:00:00:00:99:01"  # xv0: encapsulated packets arrive here
PEER_MAC = "02:00:00:00:99:02"  # xv1: the next hop of every route
HERE4, HERE6 = "10.0.0.1", "fd00::1"  # this real: the decap addresses
ALT4, ALT6 = "10.0.0.2", "fd00::2"  # the other real: a neighbour on xv0
ALT4_NO_NEIGH = "10.0.0.3"  # on xv0's subnet, never resolved
ALT4_UNROUTED = "10.97.0.2"
SERVER_PORT4, SERVER_PORT6 = VIP4.port, VIP6.port  # listeners on the VIPs
CLOSED_PORT = 81  # nothing listens here
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
XDP_DROP, XDP_PASS, XDP_TX = 1, 2, 3
SK_BUFF_SIZE = 192  # sizeof(struct __sk_buff): the kernel copies all of it back


@dataclass(frozen=True)
class Mode:
    name: str
    decap_mode: DecapMode
    passed: int
    dropped: int


MODES = [Mode("xdp", "native", XDP_PASS, XDP_DROP), Mode("tc", "tc", TC_ACT_OK, TC_ACT_SHOT)]


@dataclass
class RealHost:
    """A real's namespace: the decap program, a listener per family, and
    whatever sockets a test opens (closed afterwards)."""

    ns: str
    mode: Mode
    decap: Decap
    xv0: int
    xv1: int
    forwarding: bool
    sockets: list[socket.socket] = field(default_factory=list)

    def run(self, data: bytes) -> tuple[int, bytes, dict[str, int]]:
        """The program's verdict, its output and the counters it moved."""
        with netns.enter(self.ns):  # the ifindex, the FIB and the sockets are the namespace's
            before = self.decap.counters()
            if self.mode.name == "xdp":
                ctx = struct.pack("=6I", 0, len(data), 0, self.xv0, 0, 0)
            else:  # struct __sk_buff (192 bytes), all zero but ifindex: the skb's device
                ctx = struct.pack("=10I", *([0] * 10)) + struct.pack("=I", self.xv0)
                ctx += bytes(SK_BUFF_SIZE - len(ctx))
            result = self.decap.program.test_run(data, ctx=ctx)
            after = self.decap.counters()
        delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        return result.retval, result.data, delta

    def open(self, family: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
        with netns.enter(self.ns):
            sock = socket.socket(family, kind)
        self.sockets.append(sock)
        return sock


def sh(ns: str, command: str) -> None:
    netns.run(ns, command.split())


def make_real_host(ns: str, mode: Mode, syncookies: int = 1, forwarding: bool = False) -> RealHost:
    sh(ns, f"ip link add xv0 address {IN_MAC} type veth peer name xv1 address {PEER_MAC}")
    sh(ns, "ip link set xv0 up")
    sh(ns, "ip link set xv1 up")
    sh(ns, f"ip addr add {HERE4}/24 dev xv0")
    sh(ns, f"ip -6 addr add {HERE6}/64 dev xv0 nodad")
    for address in (VIP4.address, CLIENT4):
        sh(ns, f"ip addr add {address}/32 dev lo")
    for address in (VIP6.address, CLIENT6):
        sh(ns, f"ip -6 addr add {address}/128 dev lo nodad")
    for address in (ALT4, ALT6, CLIENT4_B, CLIENT6_B):
        if address in (CLIENT4_B, CLIENT6_B):
            sh(ns, f"ip route add {address} dev xv0")
        sh(ns, f"ip neigh add {address} lladdr {PEER_MAC} nud permanent dev xv0")
    sh(ns, f"sysctl -qw net.ipv4.tcp_syncookies={syncookies}")
    if forwarding:  # what bpf_fib_lookup() wants of the ingress device
        sh(ns, "sysctl -qw net.ipv4.conf.xv0.forwarding=1 net.ipv6.conf.xv0.forwarding=1")
    with netns.enter(ns):
        decap = Decap(addresses=[HERE4, HERE6], mode=mode.decap_mode, gue_port=GUE_PORT)
        host = RealHost(ns, mode, decap, ifindex("xv0"), ifindex("xv1"), forwarding)
    for family, address, port in (
        (socket.AF_INET, str(VIP4.address), SERVER_PORT4),
        (socket.AF_INET6, str(VIP6.address), SERVER_PORT6),
    ):
        listener = host.open(family)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(64)
    return host


@contextlib.contextmanager
def hosting(host: RealHost) -> Iterator[RealHost]:
    try:
        yield host
    finally:
        for sock in host.sockets:
            sock.close()
        host.decap.close()


@pytest.fixture(params=MODES, ids=[m.name for m in MODES])
def real_host(make_netns: Callable[[], str], request: pytest.FixtureRequest) -> Iterator[RealHost]:
    """A real as reals are: its interface does not forward."""
    with hosting(make_real_host(make_netns(), request.param)) as host:
        yield host


@pytest.fixture(params=MODES, ids=[m.name for m in MODES])
def cookie_host(
    make_netns: Callable[[], str], request: pytest.FixtureRequest
) -> Iterator[RealHost]:
    """A real whose listeners always answer with syncookies."""
    with hosting(make_real_host(make_netns(), request.param, syncookies=2)) as host:
        yield host


@pytest.fixture
def forwarding_host(make_netns: Callable[[], str]) -> Iterator[RealHost]:
    """An XDP real whose interface forwards: bpf_fib_lookup() answers."""
    with hosting(make_real_host(make_netns(), MODES[0], forwarding=True)) as host:
        yield host


# --------------------------------------------------------------- packets


def carried(inner: Packet, alternate: str, *, gue: bool = False, flags: int = 0) -> bytes:
    """The balancer's frame to this real (HERE4/HERE6 by the outer family
    of the alternate) carrying `alternate` (flags: the carrier's)."""
    here = HERE4 if ":" not in alternate else HERE6
    return encapsulated(
        inner,
        Real(here),
        flags=VipFlags.GUE if gue else VipFlags.NONE,
        dmac=IN_MAC,
        smac=LB_MAC,
        alternate=alternate,
        carrier_flags=flags,
    )


def handed_on(
    inner: Packet, alternate: str, host: RealHost, *, gue: bool = False, sender: bool = False
) -> bytes:
    """What leaves for the alternate: outer destination the alternate, TTL
    one less, carrier cleared (flag 1, address zero). MACs: at tc as they
    came (the kernel's neighbour code fills them after the program); at
    XDP the FIB's (xv0's, the neighbour's) when the device forwards, else
    back to the sender (its MAC and ours swapped; `sender`: that case on a
    device that forwards, when the FIB knows no neighbour)."""
    zero = "::" if ":" in alternate else "0.0.0.0"
    if host.mode.name == "tc":
        dmac, smac = IN_MAC, LB_MAC
    elif host.forwarding and not sender:
        dmac, smac = PEER_MAC, IN_MAC
    else:
        dmac, smac = LB_MAC, IN_MAC
    return encapsulated(
        inner,
        Real(alternate),
        flags=VipFlags.GUE if gue else VipFlags.NONE,
        dmac=dmac,
        smac=smac,
        alternate=zero,
        carrier_flags=1,
        ttl=63,
    )


def ack4(sport: int, src: str = CLIENT4, dport: int = SERVER_PORT4, **tcp: object) -> Packet:
    return tcp4(VIP4, dport, src=src, sport=sport, **tcp)  # type: ignore[arg-type]


def ack6(sport: int, src: str = CLIENT6, dport: int = SERVER_PORT6, **tcp: object) -> Packet:
    return tcp6(VIP6, dport, src=src, sport=sport, **tcp)  # type: ignore[arg-type]


def assert_decapsulated(
    host: RealHost, data: bytes, inner: Packet, outcome: str, counter: str = "ipip"
) -> None:
    retval, out, delta = host.run(data)
    assert retval == host.mode.passed, delta
    assert_packet(out, decapsulated(inner, dst=IN_MAC, src=LB_MAC))
    assert delta == {counter: 1, outcome: 1}


def assert_handed_on(host: RealHost, data: bytes, want: bytes) -> None:
    retval, out, delta = host.run(data)
    assert retval == (XDP_TX if host.mode.name == "xdp" else TC_ACT_REDIRECT), delta
    assert_packet(out, want, "handed on")
    assert delta == {"sc_handed_on": 1}


# --------------------------------------------------------------- sockets


def established(host: RealHost, family: int, port: int = 0) -> int:
    """A connection to the VIP over loopback from client port `port` (0:
    any); its client port."""
    v4 = family == socket.AF_INET
    vip, vport = (str(VIP4.address), SERVER_PORT4) if v4 else (str(VIP6.address), SERVER_PORT6)
    listener = next(s for s in host.sockets if s.family == family and s.getsockname()[1] == vport)
    client = host.open(family)
    client.bind((CLIENT4 if v4 else CLIENT6, port))
    client.connect((vip, vport))
    server, _ = listener.accept()
    host.sockets.append(server)
    return int(client.getsockname()[1])


def tcp_states(host: RealHost) -> set[tuple[int, int]]:
    """(local port, state) of every IPv4 TCP socket in the namespace."""
    with netns.enter(host.ns), open("/proc/thread-self/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return {(int(r[1].split(":")[1], 16), int(r[3], 16)) for r in rows}


def time_wait(host: RealHost) -> int:
    """A connection the server closed first (its side in TIME_WAIT); its
    client port."""
    sport = established(host, socket.AF_INET)
    client, server = host.sockets[-2], host.sockets[-1]
    server.close()
    client.close()
    deadline = time.monotonic() + 10
    tcp_time_wait = 6
    while (SERVER_PORT4, tcp_time_wait) not in tcp_states(host):
        assert time.monotonic() < deadline, "the server side never reached TIME_WAIT"
        time.sleep(0.01)
    return sport


def inject_syn(host: RealHost, l3: Packet) -> Packet | None:
    """Send a client's SYN into xv0 from the wire (xv1); return the SYN-ACK
    the stack sends back out of xv0, if any comes within 5 s."""
    with netns.enter(host.ns):
        wire = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        wire.bind(("xv1", 0))
        wire.settimeout(0.2)
        wire.send(bytes(Ether(dst=IN_MAC, src=PEER_MAC) / l3))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                raw = wire.recv(4096)
            except TimeoutError:
                continue
            reply = Ether(raw)
            if TCP in reply and reply[TCP].flags == "SA" and reply[TCP].dport == l3[TCP].sport:
                ip: Packet = reply[IP] if IP in reply else reply[IPv6]
                return ip
        return None
    finally:
        wire.close()


# ----------------------------------------------------------------- tests


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def test_an_established_connection_is_ours(real_host: RealHost, family: int) -> None:
    sport = established(real_host, family)
    if family == socket.AF_INET:
        inner, alt, counter = ack4(sport), ALT4, "ipip"
    else:
        inner, alt, counter = ack6(sport), ALT6, "ip6ip6"
    assert_decapsulated(real_host, carried(inner, alt), inner, "sc_socket", counter)


def test_a_time_wait_socket_is_ours(real_host: RealHost) -> None:
    inner = ack4(time_wait(real_host), flags="FA")
    assert_decapsulated(real_host, carried(inner, ALT4), inner, "sc_socket")


@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
def test_a_handshake_in_progress_is_ours(real_host: RealHost, family: int) -> None:
    """The final ACK of a handshake whose SYN reached us: a request socket."""
    if family == 4:
        syn = ack4(43000, src=CLIENT4_B, flags="S", payload=b"")
        inner, alt, counter = ack4(43000, src=CLIENT4_B), ALT4, "ipip"
    else:
        syn = ack6(43000, src=CLIENT6_B, flags="S", payload=b"")
        inner, alt, counter = ack6(43000, src=CLIENT6_B), ALT6, "ip6ip6"
    assert inject_syn(real_host, syn) is not None, "no SYN-ACK: no request socket"
    assert_decapsulated(real_host, carried(inner, alt), inner, "sc_socket", counter)


def test_an_ack_with_our_syncookie_is_ours(cookie_host: RealHost) -> None:
    syn = ack4(43001, src=CLIENT4_B, flags="S", payload=b"")
    synack = inject_syn(cookie_host, syn)
    assert synack is not None, "the listener sent no SYN-ACK"
    inner = tcp4(VIP4, SERVER_PORT4, src=CLIENT4_B, sport=43001, flags="A", payload=b"")
    inner[TCP].seq, inner[TCP].ack = syn[TCP].seq + 1, synack[TCP].seq + 1
    assert_decapsulated(cookie_host, carried(inner, ALT4), inner, "sc_syncookie")
    # the same ACK with another cookie (its counter bits: the low 24 bits
    # carry the MSS index, which a small change leaves valid) is not ours
    inner[TCP].ack = (inner[TCP].ack + (1 << 30)) % (1 << 32)
    assert_handed_on(cookie_host, carried(inner, ALT4), handed_on(inner, ALT4, cookie_host))


def test_a_syn_is_ours(real_host: RealHost) -> None:
    inner = ack4(43002, flags="S")
    assert_decapsulated(real_host, carried(inner, ALT4), inner, "sc_syn")


@pytest.mark.parametrize(
    ("inner", "alt"),
    [
        (ack4(43003), ALT4),  # only the listener of port 80 answers the lookup
        (ack4(43004, dport=CLOSED_PORT), ALT4),  # nothing at all
        (ack6(43005), ALT6),
    ],
    ids=["v4_listener_only", "v4_no_socket", "v6_listener_only"],
)
def test_a_miss_is_handed_on_to_the_alternate(real_host: RealHost, inner: Packet, alt: str) -> None:
    assert_handed_on(real_host, carried(inner, alt), handed_on(inner, alt, real_host))


@pytest.mark.parametrize("family", [4, 6], ids=["gue_v4", "gue_v6"])
def test_gue_carriers_are_read_and_cleared(real_host: RealHost, family: int) -> None:
    inner, alt = (ack4(43006), ALT4) if family == 4 else (ack6(43006), ALT6)
    want = handed_on(inner, alt, real_host, gue=True)
    assert_handed_on(real_host, carried(inner, alt, gue=True), want)
    sport = established(real_host, socket.AF_INET if family == 4 else socket.AF_INET6)
    mine = ack4(sport) if family == 4 else ack6(sport)
    data = carried(mine, alt, gue=True)
    assert_decapsulated(real_host, data, mine, "sc_socket", "gue")


def test_a_packet_handed_over_is_never_handed_on_again(real_host: RealHost) -> None:
    inner = ack4(43007)
    cleared = carried(inner, "0.0.0.0", flags=1)
    assert_decapsulated(real_host, cleared, inner, "sc_received")


def test_udp_is_out_of_scope(real_host: RealHost) -> None:
    inner = udp4(VIP4, 53, sport=43008)
    assert_decapsulated(real_host, carried(inner, ALT4), inner, "sc_not_tcp")


def test_an_alternate_that_is_us_is_kept(real_host: RealHost) -> None:
    inner = ack4(43009)
    assert_decapsulated(real_host, carried(inner, HERE4), inner, "sc_alt_local")


@pytest.mark.parametrize(
    ("inner", "alt"), [(ack4(43012), ALT4), (ack6(43012), ALT6)], ids=["v4", "v6"]
)
def test_xdp_hands_on_by_the_fib_where_the_device_forwards(
    forwarding_host: RealHost, inner: Packet, alt: str
) -> None:
    want = handed_on(inner, alt, forwarding_host)
    assert_handed_on(forwarding_host, carried(inner, alt), want)


def test_xdp_without_a_route_drops_and_without_a_neighbour_hands_back(
    forwarding_host: RealHost,
) -> None:
    """Passed up, our stack would reset a connection that lives on the
    alternate: a packet that cannot be handed on is dropped. No neighbour:
    back to the sender, which can resolve it."""
    inner = ack4(43010)
    retval, _, delta = forwarding_host.run(carried(inner, ALT4_UNROUTED))
    assert (retval, delta) == (XDP_DROP, {"sc_no_route": 1})
    back = handed_on(inner, ALT4_NO_NEIGH, forwarding_host, sender=True)
    assert_handed_on(forwarding_host, carried(inner, ALT4_NO_NEIGH), back)


def test_a_packet_whose_ttl_runs_out_is_dropped(real_host: RealHost) -> None:
    inner = ack4(43011)
    data = bytearray(carried(inner, ALT4))
    data[14 + 8] = 1  # outer TTL 1 (the checksum no longer matters: it is not sent)
    retval, _, delta = real_host.run(bytes(data))
    assert (retval, delta) == (real_host.mode.dropped, {"sc_no_route": 1})


@pytest.mark.parametrize(
    ("vip_family", "flags"),
    [(4, VipFlags.NONE), (6, VipFlags.NONE), (4, VipFlags.GUE), (6, VipFlags.GUE)],
    ids=["ipip", "ip6ip6", "gue_v4", "gue_v6"],
)
def test_round_trip_from_the_balancer(
    real_host: RealHost, vip_family: int, flags: VipFlags
) -> None:
    """The balancer's own output after a ring change that moved a flow from
    the alternate to this real: handed on, and ours once we hold a socket."""
    vip, here, alt = (VIP4, HERE4, ALT4) if vip_family == 4 else (VIP6, HERE6, ALT6)
    other = "10.0.0.7" if vip_family == 4 else "fd00::7"
    client = CLIENT4 if vip_family == 4 else CLIENT6
    with Balancer(config=CONFIG) as lb:
        lb.add_vip(vip, flags, ring_size=13)
        lb.set_reals(vip, [alt, other])
        lb.add_real(vip, here)

        def moved_to_us(sport: int) -> bool:
            flow = Flow(client, vip.address, sport, vip.port, "tcp")
            return str(lb.alternate(flow)) == alt and str(lb.predict(flow)) == here

        sport = next(s for s in range(44000, 44400) if moved_to_us(s))
        established(real_host, socket.AF_INET if vip_family == 4 else socket.AF_INET6, sport)
        inner = ack4(sport) if vip_family == 4 else ack6(sport)
        out = lb.run(frame(inner)).packet
        stranger = ack4(sport + 1) if vip_family == 4 else ack6(sport + 1)
    data = bytes.fromhex(IN_MAC.replace(":", "")) + out[6:]  # as this real's NIC got it
    counter = "gue" if flags else ("ipip" if vip_family == 4 else "ip6ip6")
    assert_decapsulated(real_host, data, inner, "sc_socket", counter)
    assert real_host.run(carried(stranger, alt, gue=bool(flags)))[2] == {"sc_handed_on": 1}
