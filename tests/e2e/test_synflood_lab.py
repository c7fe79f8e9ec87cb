"""A SYN flood in the lab: held idle connections keep their real.

The flood is 1.2M spoofed SYNs per CPU of the balancer's own program,
run with BPF_PROG_TEST_RUN (repeat) behind the bench's test-run wrapper
(bench/wrapper.bpf.c), which gives each SYN a new client address: the
program and the maps are the lab balancer's, so the flood fills the very
connection table the lab's clients use, millions of SYNs a second, far
faster than packets built in Python. (Its output, XDP_TX in a test run,
goes nowhere: the reals never see the flood.)

The table is kept busy first (400k established flows per CPU, most of
each CPU's LRU share), as a production balancer's is: the kernel's LRU
gives an entry in use a second chance, and only in a busy table do idle
entries age to where new ones evict them.

With the guard (the default syn_flood_threshold), 40 held idle connections
keep their entries, and a ring change afterwards resets none of them; new
connections made while the flood runs are served. The control: the same
flood with the guard off evicts held connections' entries (19 of 40 here),
and then exactly those the new ring sends to another real break.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from bench.progs import Flows, Harness
from xlb import Balancer, Flow
from xlb.lab import HeldConnection, Lab, Replies
from xlb.testing import tcp_packet

HELD = 40
SYNS_PER_CPU = 1_200_000
BUSY = 400_000  # established flows per CPU: most of its 524288-entry LRU share
FLOOD_RANGE, BUSY_RANGE = 0, 1  # client address ranges of the two
BATCH = 200_000  # packets per BPF_PROG_TEST_RUN call
SERVING = ["real1", "real2", "real3"]  # real4 joins later: the ring change
CONTROL_ROUNDS = 5


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(reals=4) as lab:
        lab.add_default_services(names=SERVING)
        yield lab


def blast(lb: Balancer, vip: str, cpus: list[int], flags: str, count: int, range_: int) -> float:
    """`count` TCP segments (`flags`) per CPU from as many client addresses,
    run by the balancer's program on each CPU in parallel (a thread pinned
    to each); the addresses of `range_` (0, 1, ...) are the same in every
    call. Returns the seconds it took."""
    errors: list[BaseException] = []

    def run(cpu: int) -> None:
        try:
            os.sched_setaffinity(0, {cpu})  # this thread: test runs use its CPU
            first = f"{20 + 2 * range_ + cpu}.0.0.1"  # a /8 of clients per range and CPU
            frame = tcp_packet(first, vip, 40000, 80, flags)
            harness = Harness()
            try:
                sent = 0
                while sent < count:
                    batch = min(BATCH, count - sent)
                    flows = Flows.varying(frame, batch)
                    harness.prepare(
                        lb.program, frame, replace(flows, src_base=flows.src_base + sent)
                    )
                    harness.run(frame, batch)
                    sent += batch
            finally:
                harness.close()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(cpu,)) for cpu in cpus]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.monotonic() - start


def flood(lb: Balancer, vip: str, cpus: list[int]) -> float:
    """The SYN flood: SYNS_PER_CPU spoofed SYNs per CPU, each a new 5-tuple."""
    return blast(lb, vip, cpus, "S", SYNS_PER_CPU, FLOOD_RANGE)


def keep_busy(lb: Balancer, vip: str, cpus: list[int]) -> None:
    """What a busy balancer's table holds besides our connections: BUSY
    flows per CPU in use (a first ACK records each, a second uses it), so
    that most of each CPU's LRU share is in its active list and idle
    entries age out of it (the kernel's LRU gives a used entry a second
    chance; a table of a few live flows never ages them)."""
    for _ in range(2):
        blast(lb, vip, cpus, "A", BUSY, BUSY_RANGE)


def held_flows(lab: Lab, held: list[HeldConnection]) -> list[Flow]:
    return [Flow(lab.client.ipv4, lab.vip4, h.sport, lab.tcp_port) for h in held]


def test_a_syn_flood_then_a_ring_change_resets_no_held_connection(lab: Lab) -> None:
    lb = lab.balancer
    vip = lab.vip(4, "tcp")
    # Second chance (docs/ecmp.md) hands a moved flow on to its previous real
    # for a while after a ring change; the guard keeps its entry for good. Off
    # here, so that the control shows what the table alone loses.
    lb.set_second_chance(vip, 0)
    cpus = sorted(os.sched_getaffinity(0))
    held = lab.client.hold(lab.vip4, lab.tcp_port, HELD)
    flows = held_flows(lab, held)
    owners = {f: lab.real(str(h.real)).ipv4 for f, h in zip(flows, held, strict=True)}
    assert all(lb.flow_real(f) == owners[f] for f in flows)

    keep_busy(lb, str(lab.vip4), cpus)
    before = lb.counters()
    legit: list[Replies] = []
    flood_over = threading.Event()

    def connect_meanwhile() -> None:  # new connections, batch after batch, until it ends
        while not flood_over.is_set():
            legit.append(lab.client.http_get(lab.vip4, lab.tcp_port, count=16))

    client = threading.Thread(target=connect_meanwhile)
    client.start()
    try:
        seconds = flood(lb, str(lab.vip4), cpus)
    finally:
        flood_over.set()
        client.join()
    after = lb.counters()
    syns = SYNS_PER_CPU * len(cpus)
    skipped = after["syn_flood_skip"] - before["syn_flood_skip"]
    print(
        f"flood: {syns} SYNs in {seconds:.2f} s ({syns / seconds / 1e6:.2f} M/s); "
        f"syn_flood_skip +{skipped} (the flood's SYNs and the new connections')"
    )
    print(f"{sum(len(r) for r in legit)} new connections during the flood")
    assert legit and all(r.ok for r in legit), [r.failures[:3] for r in legit]
    # at most one threshold's worth of entries per CPU and window of the flood
    threshold = lb.config.syn_flood_threshold
    assert syns - skipped <= 2 * threshold * len(cpus) * (seconds + 1)
    assert after["syn_flood_windows"] > before["syn_flood_windows"]
    assert all(lb.flow_real(f) == owners[f] for f in flows)

    lb.add_real(vip, lab.backends(4, ["real4"])[0])  # the ring change
    answers = [h.try_request() for h in held]
    failed = [a for a, h in zip(answers, held, strict=True) if a.real != h.real]
    assert not failed, failed

    # The control: without the guard the same floods take held flows' entries
    # (the LRU gives entries just used a second chance: it may take a few),
    # and then exactly the evicted flows the new ring sends elsewhere break.
    lb.configure(replace(lb.config, syn_flood_threshold=0))
    evicted: list[Flow] = []
    rounds = 0
    while not evicted and rounds < CONTROL_ROUNDS:
        keep_busy(lb, str(lab.vip4), cpus)
        flood(lb, str(lab.vip4), cpus)
        rounds += 1
        evicted = [f for f in flows if lb.flow_real(f) is None]
    print(
        f"without the guard: {len(evicted)} of {HELD} held flows lost their entry "
        f"after {rounds} flood(s)"
    )
    assert evicted
    moved = {f for f in evicted if lb.predict(f) != owners[f]}
    answers = [h.try_request() for h in held]
    broken = {f for f, a, h in zip(flows, answers, held, strict=True) if a.real != h.real}
    print(f"a request on each: {len(broken)} broke, the ring moved {len(moved)} evicted flows")
    assert broken == moved
