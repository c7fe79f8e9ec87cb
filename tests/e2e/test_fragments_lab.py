"""Oversized UDP datagrams through the VIP, reassembled by the reals.

The client's link has an MTU of 1500, so a 4000-byte datagram leaves it
in three fragments (its kernel cuts them, IPv4 and IPv6 alike); only the
first carries the UDP ports. The balancer must send all three to one real,
whose kernel reassembles the datagram after the decap program stripped
each fragment's tunnel header; the lab server echoes the whole datagram
back, so an answer that matches proves the real got every byte. Before
fragments were balanced, they went to the balancer's own stack and
vanished.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xlb.lab import Lab

SIZE = 4000  # > the client's 1500-byte link MTU: three fragments
FLOWS = 24


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(reals=3) as lab:
        lab.add_default_services()
        yield lab


@pytest.mark.parametrize("family", [4, 6])
def test_oversized_datagrams_are_reassembled_by_one_real(lab: Lab, family: int) -> None:
    lb = lab.balancer
    before = lb.counters()
    decap_before = lab.decap_counters()
    # a real's answer is fragmented too; an IPv6 one bigger than the client's
    # link first draws a "packet too big" (routed back to that real by the
    # balancer), and the client's next try gets it: hence three tries
    replies = lab.client.udp_exchange(
        lab.vip_address(family), lab.udp_port, FLOWS, size=SIZE, timeout=9.0, tries=3
    )
    assert replies.ok, replies.failures[:5]
    assert len(replies.by_real()) >= 2, replies.by_real()  # flows spread, datagrams whole

    after = lb.counters()
    firsts = after["frag_first"] - before["frag_first"]
    laters = after["frag_later"] - before["frag_later"]
    print(f"IPv{family}: {FLOWS} datagrams of {SIZE} bytes: {firsts} first and "
          f"{laters} later fragments balanced; answers by {dict(replies.by_real())}")  # fmt: skip
    assert firsts >= FLOWS and laters >= 2 * FLOWS
    assert after["pass_fragment"] == before["pass_fragment"]
    assert after["drop_frag_not_found"] == before["drop_frag_not_found"]
    stripped = "ipip" if family == 4 else "ip6ip6"
    decapped = sum(
        counters[stripped] - decap_before[real][stripped]
        for real, counters in lab.decap_counters().items()
    )
    assert decapped >= 3 * FLOWS
