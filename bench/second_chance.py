"""Second chance: what it costs the balancer and the reals.

ns per packet through the wrapper (progs.Harness), pinned to CPU 0, medians
of interleaved rounds, each beside the min-encap baseline of its round.

Balancer: this build ("on") and the same sources compiled with
-DXLB_SECOND_CHANCE=0 ("off": the hooks compiled out, the maps the same),
both loaded in this process and programmed alike, so each row is an A/B:

  v4_hit, v6_hit        ACK of a flow in the connection table (the hit
                        path: second chance adds nothing here but a branch)
  v4_stateless          ACK to a no_conn_table VIP whose ring never changed
                        (one `prev_rings` lookup)
  v4_stateless_agree    ACK to a no_conn_table VIP within its window after a
                        ring change that left this flow's slot alone (the
                        previous ring read, the rings agree)
  v4_stateless_carried  the same, a flow the change moved: "on" writes the
                        carrier (8 bytes), "off" does not
  v4_syn_table          SYN of a new flow to a connection-table VIP (today's
                        SYN: ring + insert; the source address counts up)
  v4_syn_stateless      the same SYN to a no_conn_table VIP (ring only: what
                        a stateless VIP costs, and a flood evicts nothing)

Decap (bpf/decap.bpf.c at XDP) behind restore.bpf.c (the whole 128-byte
frame put back each iteration: decap strips and rewrites what the wrapper
restores), in a namespace made for the run holding an established
connection over loopback; each row checks that every iteration counted its
outcome:

  decap_plain           IPIP without a carrier (today's decap)
  decap_carrier_socket  IPIP with a carrier, a socket found (bpf_skc_lookup_tcp)
  decap_carrier_handon  IPIP with a carrier, no socket: readdressed and
                        handed on (FIB lookup, back to the sender)

`python3 build.py bench --only second_chance` runs only these rows.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from scapy.layers.inet import IP, TCP, IPOption
from scapy.layers.l2 import Ether
from scapy.packet import Raw

import build
from xlb import Balancer, BalancerConfig, Flow, Real, Vip, VipFlags, netns
from xlb._bpf import Program
from xlb.decap import Decap
from xlb.testing import GATEWAY_MAC
from xlb.testing.packets import tcp_packet

from .common import BUILD_DIR, ROOT, Rounds, log, pinned, spread
from .progs import Baselines, Flows, Harness, bss, kernel_ns, load

CPU = 0
PAYLOAD = b"x" * 10
CLIENT4, CLIENT6 = "10.2.0.1", "fd00:2::1"
V4_TCP = Vip("10.9.0.1", 80, "tcp")
V6_TCP = Vip("fd00:9::1", 80, "tcp")
V4_STATELESS = Vip("10.9.0.5", 80, "tcp")  # changed once: a transition is open
V4_STATELESS_FIXED = Vip("10.9.0.6", 80, "tcp")  # never changed
REALS4 = [Real(f"10.1.0.{i}") for i in range(1, 11)]
REALS6 = [Real(f"fd00:1::{i:x}") for i in range(1, 11)]
NS = "xlb-bench-sc"
HERE, ALT = "10.30.1.2", "10.30.2.2"  # the real under test and the alternate
VIP_LO, CLIENT_LO = "10.100.0.1", "10.10.1.2"  # on the namespace's loopback


def off_object() -> Any:
    """bpf/xlb.bpf.c built with second chance compiled out."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    obj = BUILD_DIR / "xlb_second_chance_off.bpf.o"
    build.compile_bpf(ROOT / "bpf" / "xlb.bpf.c", obj, None, {"XLB_SECOND_CHANCE": 0})
    return obj


def configure(lb: Balancer) -> None:
    lb.add_vip(V4_TCP)
    lb.add_vip(V6_TCP)
    lb.set_reals(V4_TCP, REALS4)
    lb.set_reals(V6_TCP, REALS6)
    for vip in (V4_STATELESS, V4_STATELESS_FIXED):
        lb.add_vip(vip, VipFlags.NO_CONN_TABLE)
        lb.set_reals(vip, REALS4[:9])
    lb.add_real(V4_STATELESS, REALS4[9])  # the ring change: its window opens


def stateless_sports(lb: Balancer) -> tuple[int, int]:
    """A source port whose slot the change left alone and one it moved."""
    agree = moved = 0
    for sport in range(40000, 41000):
        flow = Flow(CLIENT4, V4_STATELESS.address, sport, 80)
        if lb.alternate(flow) is None:
            agree = agree or sport
        else:
            moved = moved or sport
        if agree and moved:
            return agree, moved
    raise RuntimeError("no moved flow among 1000 source ports")


def balancer_frames(lb: Balancer) -> dict[str, tuple[bytes, str]]:
    """row -> (frame, family of its baseline)."""
    agree, moved = stateless_sports(lb)
    return {
        "v4_hit": (tcp_packet(CLIENT4, V4_TCP.address, 40000, 80, "A", PAYLOAD), "v4"),
        "v6_hit": (tcp_packet(CLIENT6, V6_TCP.address, 40000, 80, "A", PAYLOAD), "v6"),
        "v4_stateless": (
            tcp_packet(CLIENT4, V4_STATELESS_FIXED.address, 40000, 80, "A", PAYLOAD),
            "v4",
        ),
        "v4_stateless_agree": (
            tcp_packet(CLIENT4, V4_STATELESS.address, agree, 80, "A", PAYLOAD),
            "v4",
        ),
        "v4_stateless_carried": (
            tcp_packet(CLIENT4, V4_STATELESS.address, moved, 80, "A", PAYLOAD),
            "v4",
        ),
        "v4_syn_table": (tcp_packet(CLIENT4, V4_TCP.address, 40000, 80, "S", PAYLOAD), "v4"),
        "v4_syn_stateless": (
            tcp_packet(CLIENT4, V4_STATELESS_FIXED.address, 40000, 80, "S", PAYLOAD),
            "v4",
        ),
    }


RESTORE_LEN = 128  # restore.bpf.c: every decap frame is exactly this long


class Restorer:
    """restore.bpf.c loaded: runs a program that strips or rewrites headers
    (the decap) on the same whole frame every iteration."""

    def __init__(self) -> None:
        self.obj = load("restore")
        self.program = self.obj.program("bench_restore")
        self.target = self.obj.map("target")
        self.state = bss(self.obj)

    def close(self) -> None:
        self.obj.close()

    def measure(self, program: Program, frame: bytes, repeat: int) -> float:
        if len(frame) != RESTORE_LEN:
            raise ValueError(f"a restored frame is {RESTORE_LEN} bytes, not {len(frame)}")
        self.target.update_fd(struct.pack("<I", 0), program.fd)
        self.state.update(struct.pack("<I", 0), frame + bytes(8))
        return kernel_ns(self.program.test_run(frame, repeat=repeat))


def carrier_frame(inner: bytes, alternate: str | None) -> bytes:
    """The balancer's IPIP frame to HERE, with the carrier of `alternate`
    (xlb_abi.h: IPv4 option 0x1e, length 8, flags, 0, address), padded
    with payload to RESTORE_LEN bytes."""
    options = []
    if alternate is not None:
        word = bytes([0x1E, 8, 0, 0]) + ipaddress.IPv4Address(alternate).packed
        options = [IPOption(word)]
    outer = IP(src="172.16.0.1", dst=HERE, proto=4, ttl=64, options=options)
    eth = Ether(dst="02:00:00:00:99:01", src="02:00:00:00:99:02")
    head = len(eth / outer) + len(inner)
    inner_ip = IP(inner)
    inner_ip[Raw].load += bytes(RESTORE_LEN - head)
    del inner_ip.len, inner_ip.chksum, inner_ip[TCP].chksum
    return bytes(eth / outer / Raw(bytes(inner_ip)))


@contextlib.contextmanager
def real_namespace() -> Iterator[list[socket.socket]]:
    """A namespace with the VIP and a client address on loopback and one
    established connection from the client to the VIP (the sockets)."""
    if netns.exists(NS):
        netns.delete(NS)
    netns.create(NS)
    sockets: list[socket.socket] = []
    try:
        netns.run(NS, ["ip", "link", "set", "lo", "up"])
        for address in (VIP_LO, CLIENT_LO):
            netns.run(NS, ["ip", "addr", "add", f"{address}/32", "dev", "lo"])
        with netns.enter(NS):
            listener = socket.socket()
            client = socket.socket()
            sockets += [listener, client]
            listener.bind((VIP_LO, 80))
            listener.listen(8)
            client.bind((CLIENT_LO, 41000))
            client.connect((VIP_LO, 80))
            server, _ = listener.accept()
            sockets.append(server)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
        netns.delete(NS)


def decap_frames() -> dict[str, bytes]:
    ours = bytes(
        IP(src=CLIENT_LO, dst=VIP_LO, ttl=57) / TCP(sport=41000, dport=80, flags="A") / PAYLOAD
    )
    stranger = bytes(
        IP(src=CLIENT_LO, dst=VIP_LO, ttl=57) / TCP(sport=41001, dport=80, flags="A") / PAYLOAD
    )
    return {
        "decap_plain": carrier_frame(ours, None),
        "decap_carrier_socket": carrier_frame(ours, ALT),
        "decap_carrier_handon": carrier_frame(stranger, ALT),
    }


DECAP_EXPECT = {
    "decap_plain": ("XDP_PASS", "ipip"),
    "decap_carrier_socket": ("XDP_PASS", "sc_socket"),
    "decap_carrier_handon": ("XDP_TX", "sc_handed_on"),
}


def check_balancer(lb: Balancer, frames: dict[str, tuple[bytes, str]], carrier: bool) -> None:
    """Every frame does what its row says (the carried one with a carrier
    exactly when `carrier`), and the flows of the hit rows are learned."""
    for name, (frame, _) in frames.items():
        before = lb.counters()["sc_carried"]
        out = lb.program.test_run(frame)
        if out.action != "XDP_TX":
            raise RuntimeError(f"{name}: {out.action}")
        carried = lb.counters()["sc_carried"] - before
        if carried != (1 if carrier and name == "v4_stateless_carried" else 0):
            raise RuntimeError(f"{name}: {carried} carriers")


def check_decap(decap: Decap, frames: dict[str, bytes]) -> None:
    for name, frame in frames.items():
        before = decap.counters()
        out = decap.program.test_run(frame)
        after = decap.counters()
        action, counter = DECAP_EXPECT[name]
        if out.action != action or after[counter] - before[counter] != 1:
            raise RuntimeError(f"{name}: {out.action}, {after}")


def counted(
    decap: Decap, name: str, measure: Callable[[], float], repeat: int
) -> Callable[[], float]:
    """`measure`, checked: every iteration took its row's outcome (a row
    whose frame the harness did not restore would count another)."""
    counter = DECAP_EXPECT[name][1]

    def checked() -> float:
        before = decap.counters()[counter]
        ns = measure()
        if decap.counters()[counter] - before != repeat:
            raise RuntimeError(f"{name}: not every iteration counted {counter}")
        return ns

    return checked


def run(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 9
    repeat = 100_000 if quick else 400_000
    syn_repeat = 20_000 if quick else 40_000
    config = BalancerConfig(gateway_mac=GATEWAY_MAC)
    on = Balancer(config=config)
    off = Balancer(config=config, object_path=off_object())
    h = Harness()
    restorer = Restorer()
    base = Baselines()
    try:
        configure(on)
        configure(off)
        frames = balancer_frames(on)
        with real_namespace(), Decap(addresses=[HERE]) as decap:
            dframes = decap_frames()
            with netns.enter(NS), pinned(CPU):
                check_balancer(on, frames, carrier=True)
                check_balancer(off, frames, carrier=False)
                check_decap(decap, dframes)
                cases = collect_cases(h, base, {"on": on, "off": off}, frames, repeat, syn_repeat)
                for name, frame in dframes.items():
                    run_once = partial(restorer.measure, decap.program, frame, repeat)
                    cases[name] = counted(decap, name, run_once, repeat)
                log(f"second_chance: {len(cases)} cases x {rounds} rounds")
                r = Rounds.collect(cases, rounds)
        return report(r, frames, dframes, repeat, syn_repeat, rounds, on)
    finally:
        base.close()
        restorer.close()
        h.close()
        off.close()
        on.close()


def fixed(h: Harness, prog: Program, frame: bytes, n: int) -> Callable[[], float]:
    return lambda: h.measure(prog, frame, Flows.fixed(frame), n)


def new_sources(h: Harness, prog: Program, frame: bytes, n: int) -> Callable[[], float]:
    """SYNs from a client address that counts up, never repeating in the run."""
    start = [0x100]

    def measure() -> float:
        base_flows = Flows.varying(frame, 1 << 30)
        flows = Flows(
            base_flows.src_off,
            (base_flows.src_base + start[0]) & 0xFFFFFFFF,
            1 << 30,
            base_flows.dst_off,
            base_flows.dst_base,
            1,
        )
        start[0] += n
        return h.measure(prog, frame, flows, n)

    return measure


def collect_cases(
    h: Harness,
    base: Baselines,
    builds: dict[str, Balancer],
    frames: dict[str, tuple[bytes, str]],
    repeat: int,
    syn_repeat: int,
) -> dict[str, Callable[[], float]]:
    cases: dict[str, Callable[[], float]] = {}
    for fam in ("v4", "v6"):
        frame = frames[f"{fam}_hit"][0]
        cases[f"baseline_min_encap_{fam}"] = fixed(h, base.min_encap, frame, repeat)
    for name, (frame, _) in frames.items():
        for build_name, lb in builds.items():
            if name.startswith("v4_syn"):
                cases[f"{name}_{build_name}"] = new_sources(h, lb.program, frame, syn_repeat)
            else:
                cases[f"{name}_{build_name}"] = fixed(h, lb.program, frame, repeat)
    return cases


def report(
    r: Rounds,
    frames: dict[str, tuple[bytes, str]],
    dframes: dict[str, bytes],
    repeat: int,
    syn_repeat: int,
    rounds: int,
    on: Balancer,
) -> dict[str, Any]:
    rows = {}
    for name, (_, fam) in frames.items():
        baseline = f"baseline_min_encap_{fam}"
        rows[name] = {
            "on_ns": round(r.median(f"{name}_on"), 2),
            "off_ns": round(r.median(f"{name}_off"), 2),
            "on_vs_off": round(r.ratio(f"{name}_on", f"{name}_off"), 3),
            "on_vs_min_encap": round(r.ratio(f"{name}_on", baseline), 2),
            "spread": round(max(spread(r.samples[f"{name}_{b}"]) for b in ("on", "off")), 3),
        }
    decap = {
        name: {
            "ns": round(r.median(name), 2),
            "vs_plain": round(r.ratio(name, "decap_plain"), 2),
            "spread": round(spread(r.samples[name]), 3),
        }
        for name in dframes
    }
    return {
        "method": (
            f"BPF_PROG_TEST_RUN through the wrapper, repeat={repeat} (SYN: {syn_repeat}), "
            f"pinned to CPU {CPU}, median of {rounds} interleaved rounds; 'off' = the same "
            "sources built with -DXLB_SECOND_CHANCE=0, loaded in the same process"
        ),
        "rows": rows,
        "decap": decap,
        "baselines_ns": {k: round(r.median(k), 2) for k in r.samples if k.startswith("baseline")},
        "syn_stateless_vs_syn_table": round(r.ratio("v4_syn_stateless_on", "v4_syn_table_on"), 2),
        "counters_after": {k: v for k, v in on.counters().items() if k.startswith("sc_") and v},
    }
