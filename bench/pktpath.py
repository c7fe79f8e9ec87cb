"""Figure 1: ns per packet through BPF_PROG_TEST_RUN, path by path.

Every case runs behind the wrapper (progs.Harness, wrapper.bpf.c), pinned
to CPU 0, `repeat` iterations per syscall; rounds interleave all cases so
drift on this shared VM hits cases and baselines alike. A case's ratio is
the median over rounds of (case / its baseline in the same round), the
baseline getting the same frame (v4 or v6) through the same wrapper.

What one iteration is, per case:
  v4/v6 TCP hit        ACK of a flow already in the connection table
  v4/v6 SYN new flow   SYN of a 5-tuple never seen: the wrapper counts the
                       client address up (never repeating within the run),
                       so each iteration is a ring lookup + a fresh insert
                       into a table that holds < 50% of one CPU's LRU share
  v4 SYN existing key  the same SYN again: NOEXIST insert fails, SYN_RESET,
                       ring lookup, overwrite (a client's SYN retransmit)
                       (these rows with the SYN-flood guard off, which the
                       millions of SYNs a second of the run would trip)
  v4 SYN under flood   new flows as above on a balancer whose guard
                       (syn_flood_threshold 1000, the default) is tripped:
                       ring lookup, a lookup for an entry, no insert
  v4 UDP hit           datagram of a known flow (reads the clock: UDP ageing)
  v4 no conn table     ACK to a NO_CONN_TABLE VIP: ring every packet
  v4 not a VIP         ACK to an address with no VIP: XDP_PASS
  v4 GUE hit           ACK of a known flow to a GUE VIP (IPv4 + UDP outer)
  v4 QUIC by CID       QUIC short-header datagram to a QUIC VIP whose connection
                       ID names a real (QUIC-LB server id): CID read and hashed,
                       one server-id lookup, no connection table
  v4 UDP fragment      a later fragment of a datagram whose first fragment
                       was seen (ports from `frags`), of a known flow
  v4 prefix hit        ACK of a known flow to an address of a prefix VIP
                       (no fast path: exact lookup misses, LPM lookup, hash,
                       connection table), on a balancer of its own so that
                       the rows above run without prefix VIPs
  v4 not a VIP, with   ACK to an address of no VIP while prefix VIPs
    prefix VIPs        exist: the LPM lookups it then pays (same balancer)
Baselines: bench_tx (XDP_TX) and bench_min_encap (prepend 20-byte IPv4).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from xlb import Balancer, BalancerConfig, Real, Vip, VipFlags
from xlb._bpf import Program
from xlb.quiclb import derived_server_id, encode_cid
from xlb.testing import GATEWAY_MAC
from xlb.testing.packets import CLIENT_MAC, LB_MAC, quic_short_header, tcp_packet, udp_packet

from .common import Rounds, log, pinned, spread
from .progs import Baselines, Flows, Harness, kernel_ns, prog_insns

CPU = 0
PAYLOAD = b"x" * 10  # v4 TCP frame of 64 bytes, v6 of 84
CLIENT4, CLIENT6 = "10.2.0.1", "fd00:2::1"
V4_TCP = Vip("10.9.0.1", 80, "tcp")
V6_TCP = Vip("fd00:9::1", 80, "tcp")
V4_UDP = Vip("10.9.0.2", 53, "udp")
V4_BYPASS = Vip("10.9.0.3", 80, "tcp")
V4_GUE = Vip("10.9.0.4", 80, "tcp")
V4_PREFIX = Vip("10.9.1.0/24", 80, "tcp")
V4_QUIC = Vip("10.9.0.5", 443, "udp")
REALS4 = [Real(f"10.1.0.{i}") for i in range(1, 11)]
REALS6 = [Real(f"fd00:1::{i:x}") for i in range(1, 11)]


def configure_prefix(lb: Balancer) -> None:
    lb.add_vip(V4_PREFIX)
    lb.set_reals(V4_PREFIX, REALS4)


def fragment(first: bool) -> bytes:
    """A fragment of a UDP datagram from CLIENT4 to V4_UDP (IP id 0x77):
    the first (with the UDP header) or a later one (16 bytes in)."""
    ip = IP(src=CLIENT4, dst=str(V4_UDP.address), id=0x77, proto=17)
    if first:
        l3 = IP(bytes(ip / UDP(sport=40000, dport=53, len=1000) / Raw(PAYLOAD)))
        l3.flags = "MF"
    else:
        l3 = ip / Raw(PAYLOAD + b"x" * 8)
        l3.frag = 2
    return bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / l3)


def configure(lb: Balancer) -> None:
    lb.add_vip(V4_TCP)
    lb.add_vip(V6_TCP)
    lb.add_vip(V4_UDP)
    lb.add_vip(V4_BYPASS, VipFlags.NO_CONN_TABLE)
    lb.add_vip(V4_GUE, VipFlags.GUE)
    lb.add_vip(V4_QUIC, VipFlags.QUIC)
    for vip in (V4_TCP, V4_UDP, V4_BYPASS, V4_GUE, V4_QUIC):
        lb.set_reals(vip, REALS4)
    lb.set_reals(V6_TCP, REALS6)
    if lb.server_ids(V4_QUIC)[REALS4[3].address] != QUIC_SERVER_ID:
        raise RuntimeError(f"the QUIC frame's server id is not {REALS4[3]}'s")


# A 1-RTT packet naming the 4th real, its 8-octet CID as aioquic's default
QUIC_SERVER_ID = derived_server_id(REALS4[3].address)
QUIC_CID = encode_cid(QUIC_SERVER_ID, bytes.fromhex("5eed5eed5e"))


FRAMES = {
    "v4_ack": tcp_packet(CLIENT4, V4_TCP.address, 40000, 80, "A", PAYLOAD),
    "v4_syn": tcp_packet(CLIENT4, V4_TCP.address, 40000, 80, "S", PAYLOAD),
    "v6_ack": tcp_packet(CLIENT6, V6_TCP.address, 40000, 80, "A", PAYLOAD),
    "v6_syn": tcp_packet(CLIENT6, V6_TCP.address, 40000, 80, "S", PAYLOAD),
    "v4_udp": udp_packet(CLIENT4, V4_UDP.address, 40000, 53, PAYLOAD),
    "v4_bypass": tcp_packet(CLIENT4, V4_BYPASS.address, 40000, 80, "A", PAYLOAD),
    "v4_not_vip": tcp_packet(CLIENT4, "10.8.0.1", 40000, 80, "A", PAYLOAD),
    "v4_gue": tcp_packet(CLIENT4, V4_GUE.address, 40000, 80, "A", PAYLOAD),
    "v4_quic": udp_packet(CLIENT4, V4_QUIC.address, 40000, 443, quic_short_header(QUIC_CID)),
    "v4_frag_first": fragment(first=True),
    "v4_frag_later": fragment(first=False),
    "v4_prefix_ack": tcp_packet(CLIENT4, "10.9.1.7", 40000, 80, "A", PAYLOAD),
}
# frames a case's frame needs to have been seen first (its warm-up)
WARM_FIRST = {"v4_frag_later": "v4_frag_first"}

# case -> (frame, baseline family, expected action)
XLB_CASES = {
    "v4_tcp_hit": ("v4_ack", "v4", "XDP_TX"),
    "v4_tcp_syn_new": ("v4_syn", "v4", "XDP_TX"),
    "v4_tcp_syn_existing": ("v4_syn", "v4", "XDP_TX"),
    "v6_tcp_hit": ("v6_ack", "v6", "XDP_TX"),
    "v6_tcp_syn_new": ("v6_syn", "v6", "XDP_TX"),
    "v4_udp_hit": ("v4_udp", "v4", "XDP_TX"),
    "v4_no_conn_table": ("v4_bypass", "v4", "XDP_TX"),
    "v4_not_vip_pass": ("v4_not_vip", "v4", "XDP_PASS"),
    "v4_gue_hit": ("v4_gue", "v4", "XDP_TX"),
    "v4_quic_by_cid": ("v4_quic", "v4", "XDP_TX"),
    "v4_udp_fragment": ("v4_frag_later", "v4", "XDP_TX"),
}
# the same, on the balancer with a prefix VIP (configure_prefix)
PREFIX_CASES = {
    "v4_prefix_hit": ("v4_prefix_ack", "v4", "XDP_TX"),
    "v4_not_vip_with_prefixes": ("v4_not_vip", "v4", "XDP_PASS"),
}
HIT_ROWS = ["v4_tcp_hit", "v6_tcp_hit"]
SYN_ROWS = ["v4_tcp_syn_new", "v6_tcp_syn_new"]


def check_wrapper(h: Harness, lb: Balancer) -> dict[str, Any]:
    """The kernel feeds iteration n's output to iteration n+1; show it, and
    show that the wrapper undoes it (2 iterations = 2 forwards)."""
    frame = FRAMES["v4_ack"]
    before = lb.counters()
    lb.program.test_run(frame, repeat=2)
    after = lb.counters()
    bare = {k: after[k] - before[k] for k in ("forward", "pass_not_vip")}
    once = lb.program.test_run(frame)
    h.prepare(lb.program, frame, Flows.fixed(frame))
    before = lb.counters()
    twice = h.run(frame, 2)
    after = lb.counters()
    wrapped = {k: after[k] - before[k] for k in ("forward", "pass_not_vip")}
    if wrapped["forward"] != 2 or twice.data != once.data:
        raise RuntimeError(f"wrapper does not restore the input: {wrapped}")
    return {"unwrapped_repeat2": bare, "wrapped_repeat2": wrapped, "same_output": True}


def per_syscall(prog: Program, frame: bytes, calls: int) -> float:
    """Mean wall ns of one BPF_PROG_TEST_RUN syscall with repeat=1."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        prog.test_run(frame)
    return (time.perf_counter_ns() - start) / calls


def run(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 9
    repeat = 100_000 if quick else 400_000
    syn_repeat = 20_000 if quick else 40_000
    lb = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC, syn_flood_threshold=0))
    prefix_lb = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    flood_lb = Balancer(config=BalancerConfig(gateway_mac=GATEWAY_MAC))
    h = Harness()
    base = Baselines()
    try:
        configure(lb)
        configure_prefix(prefix_lb)
        configure(flood_lb)
        with pinned(CPU):
            wrapper_check = check_wrapper(h, lb)
            warm = [(lb, c) for c in XLB_CASES.values()]
            warm += [(prefix_lb, c) for c in PREFIX_CASES.values()]
            for balancer, (frame_name, _, action) in warm:
                if frame_name in WARM_FIRST:
                    balancer.program.test_run(FRAMES[WARM_FIRST[frame_name]])
                result = balancer.program.test_run(FRAMES[frame_name])  # warm: learn the flow
                if result.action != action:
                    raise RuntimeError(f"{frame_name}: {result.action}, expected {action}")
            syn_offset = {"v4_tcp_syn_new": 0, "v6_tcp_syn_new": 0, "v4_tcp_syn_flood": 0}

            def case(prog: Program, frame: bytes, n: int = repeat) -> Callable[[], float]:
                return lambda: h.measure(prog, frame, Flows.fixed(frame), n)

            def syn_new(name: str, frame: bytes, balancer: Balancer = lb) -> Callable[[], float]:
                def measure() -> float:
                    base_flows = Flows.varying(frame, 1 << 30)
                    flows = Flows(
                        base_flows.src_off,
                        (base_flows.src_base + 0x100 + syn_offset[name]) & 0xFFFFFFFF,
                        1 << 30,
                        base_flows.dst_off,
                        base_flows.dst_base,
                        1,
                    )
                    syn_offset[name] += syn_repeat
                    return h.measure(balancer.program, frame, flows, syn_repeat)

                return measure

            cases: dict[str, Callable[[], float]] = {}
            for fam in ("v4", "v6"):
                frame = FRAMES[f"{fam}_ack"]
                cases[f"baseline_tx_{fam}"] = case(base.tx, frame)
                cases[f"baseline_min_encap_{fam}"] = case(base.min_encap, frame)
            cases["unwrapped_tx_v4"] = lambda: kernel_ns(
                base.tx.test_run(FRAMES["v4_ack"], repeat=repeat)
            )
            for name, (frame_name, _, _) in XLB_CASES.items():
                frame = FRAMES[frame_name]
                if name.endswith("syn_new"):
                    cases[name] = syn_new(name, frame)
                elif "syn" in name:
                    cases[name] = case(lb.program, frame, syn_repeat)
                else:
                    cases[name] = case(lb.program, frame)
            for name, (frame_name, _, _) in PREFIX_CASES.items():
                cases[name] = case(prefix_lb.program, FRAMES[frame_name])
            flood_lb.program.test_run(FRAMES["v4_syn"], repeat=2000)  # trip its guard
            cases["v4_tcp_syn_flood"] = syn_new("v4_tcp_syn_flood", FRAMES["v4_syn"], flood_lb)
            log(f"pktpath: {len(cases)} cases x {rounds} rounds")
            r = Rounds.collect(cases, rounds)
            calls = 2000 if quick else 10000
            syscall = {
                "baseline_tx_v4": per_syscall(base.tx, FRAMES["v4_ack"], calls),
                "baseline_min_encap_v4": per_syscall(base.min_encap, FRAMES["v4_ack"], calls),
                "v4_tcp_hit": per_syscall(lb.program, FRAMES["v4_ack"], calls),
            }
        counters = lb.counters()
        ns = {name: round(r.median(name), 2) for name in cases}
        rows = {}
        flood_case = {"v4_tcp_syn_flood": ("v4_syn", "v4", "XDP_TX")}
        for name, (_, fam, _) in {**XLB_CASES, **PREFIX_CASES, **flood_case}.items():
            rows[name] = {
                "ns": ns[name],
                "baseline_min_encap_ns": ns[f"baseline_min_encap_{fam}"],
                "vs_min_encap": round(r.ratio(name, f"baseline_min_encap_{fam}"), 2),
                "baseline_tx_ns": ns[f"baseline_tx_{fam}"],
                "vs_tx": round(r.ratio(name, f"baseline_tx_{fam}"), 2),
                "spread": round(spread(r.samples[name]), 3),
            }
        insns = {
            "xlb_balancer": prog_insns(lb.program),
            "bench_tx": prog_insns(base.tx),
            "bench_min_encap": prog_insns(base.min_encap),
            "bench_wrapper": prog_insns(h.wrapper),
        }
        return {
            "method": (
                f"BPF_PROG_TEST_RUN, repeat={repeat} (SYN: {syn_repeat}), wrapper restores the "
                f"input and tail-calls the program, pinned to CPU {CPU} with sched_setaffinity "
                f"(BPF_F_TEST_RUN_ON_CPU is EINVAL for XDP), the kernel's ns per iteration + 0.5"
                f" (it rounds down), median of "
                f"{rounds} interleaved rounds"
            ),
            "rows": rows,
            "baselines_ns": {k: v for k, v in ns.items() if k.startswith(("baseline", "unwrap"))},
            "wrapper_overhead_ns": round(ns["baseline_tx_v4"] - ns["unwrapped_tx_v4"], 2),
            "wrapper_check": wrapper_check,
            "per_syscall_ns": {k: round(v, 1) for k, v in syscall.items()},
            "per_syscall_note": "one BPF_PROG_TEST_RUN per packet (repeat=1), wall time per call",
            "counters_after": {k: v for k, v in counters.items() if v},
            "insns": insns,
            "hit_vs_min_encap": max(rows[n]["vs_min_encap"] for n in HIT_ROWS),
            "syn_vs_min_encap": max(rows[n]["vs_min_encap"] for n in SYN_ROWS),
            "udp_vs_min_encap": rows["v4_udp_hit"]["vs_min_encap"],
        }
    finally:
        base.close()
        h.close()
        lb.close()
        prefix_lb.close()
        flood_lb.close()
