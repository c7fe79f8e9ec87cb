"""The reals' decap program (XDP) against a seeded corpus of mutated frames.

The corpus (one seed, see `build_corpus`): every kind of frame decap
strips or leaves alone (IPIP, IP6IP6, 4in6, GUE over both families, VLAN
tagged or not, frames to foreign addresses, plain traffic to the real),
every truncation of each, random byte mutations of each (mostly in the
headers) and random bytes.

decap.h's rules fix every verdict; what no frame may break, whatever its
bytes, is checked here (test_decap.py checks the verdicts of the cases
written by hand):

* the verdict is XDP_PASS, XDP_DROP, or (second chance's handing on) a
  transmit of a frame addressed to one of the real's own addresses, with
  its length unchanged;
* a frame passed is either left exactly as it was, or stripped: then it
  was addressed to one of the real's own addresses, and what comes out is
  its Ethernet header (MACs and VLAN tag kept) with the ethertype of the
  inner packet's family, followed by a tail of the input frame that starts
  with an IPv4 or IPv6 header;
* each frame moves exactly one of decap's counters.

A failure names the frame's index in the corpus: build_corpus() gives the
same frames for the same seed.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator

import pytest
from pkt_defs import GUE_PORT, VIP4_GUE, VIP6_GUE, tcp4, tcp6, udp4, udp6
from test_decap import LOCAL, R4, R6, gue4, gue6, outer4, outer6

from xlb.decap import Decap

SEED = 20261202
MUTANTS_PER_SEED = 150
RANDOM_FRAMES = 300
XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 1, 2, 3, 4
ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q = 0x0800, 0x86DD, 0x8100
ETH_HLEN = 14
OWN = {ipaddress.ip_address(str(r.address)) for r in LOCAL}


def seeds() -> list[bytes]:
    """One frame of every kind decap meets, untagged and VLAN tagged."""
    untagged = [
        outer4(R4, tcp4()),
        outer6(R6, tcp6()),
        outer6(R6, udp4(), nh=4),
        outer4(R4, tcp6(), proto=41),
        gue4(R4, udp4(VIP4_GUE)),
        gue6(R6, udp6(VIP6_GUE)),
        gue6(R6, udp4(VIP4_GUE)),
        outer4("10.0.0.99", tcp4()),
        gue6("fd00::99", udp6(VIP6_GUE)),
        outer4(R4, tcp4(), options=b"\x01\x01\x01\x00"),
        gue4(R4, udp4(VIP4_GUE), dport=53),
    ]
    tagged = [f[:12] + b"\x81\x00\x00\x07" + f[12:] for f in untagged]
    return untagged + tagged


def build_corpus(seed: int = SEED) -> list[bytes]:
    rng = random.Random(seed)
    corpus: list[bytes] = []
    for frame in seeds():
        corpus.append(frame)
        # every truncation that is still a frame (BPF_PROG_TEST_RUN refuses
        # less than an Ethernet header, as no device delivers one)
        corpus.extend(frame[:n] for n in range(ETH_HLEN, len(frame)))
        for _ in range(MUTANTS_PER_SEED):
            mutant = bytearray(frame)
            for _ in range(rng.randint(1, 4)):
                # mostly in the headers: the first 100 bytes hold them all
                at = rng.randrange(min(len(mutant), 100) if rng.random() < 0.9 else len(mutant))
                mutant[at] = rng.randrange(256)
            corpus.append(bytes(mutant))
    for _ in range(RANDOM_FRAMES):
        corpus.append(rng.randbytes(rng.randint(ETH_HLEN, 200)))
    return corpus


def l2_length(frame: bytes) -> int:
    """14, or 18 with one VLAN tag."""
    return 18 if int.from_bytes(frame[12:14], "big") == ETH_P_8021Q else 14


def outer_destination(frame: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The destination of the IP header after the Ethernet header, if any."""
    ip = frame[l2_length(frame) :]
    if len(ip) >= 20 and ip[0] >> 4 == 4:
        return ipaddress.IPv4Address(ip[16:20])
    if len(ip) >= 40 and ip[0] >> 4 == 6:
        return ipaddress.IPv6Address(ip[24:40])
    return None


def check_stripped(index: int, frame: bytes, out: bytes) -> None:
    """`out` is `frame` with outer headers removed, as the docstring says."""
    assert outer_destination(frame) in OWN, f"frame {index}: stripped but not addressed to us"
    l2 = l2_length(frame)
    assert out[: l2 - 2] == frame[: l2 - 2], f"frame {index}: MACs or VLAN tag changed"
    inner = out[l2:]
    assert len(inner) >= 20 and inner[0] >> 4 in (4, 6), f"frame {index}: no IP header inside"
    want = ETH_P_IP if inner[0] >> 4 == 4 else ETH_P_IPV6
    assert int.from_bytes(out[l2 - 2 : l2], "big") == want, f"frame {index}: wrong ethertype"
    assert frame.endswith(inner) and len(inner) < len(frame) - l2, (
        f"frame {index}: not a tail of the input"
    )


@pytest.fixture(scope="module")
def decap() -> Iterator[Decap]:
    with Decap(addresses=[r.address for r in LOCAL], mode="native", gue_port=GUE_PORT) as d:
        yield d


def test_the_corpus_is_seeded_and_big() -> None:
    corpus = build_corpus()
    assert corpus == build_corpus()
    assert len(corpus) > 5000


def test_no_frame_breaks_decap(decap: Decap) -> None:
    verdicts: dict[int, int] = {}
    stripped = 0
    for index, frame in enumerate(build_corpus()):
        before = sum(decap.counters().values())
        result = decap.program.test_run(frame)
        assert sum(decap.counters().values()) == before + 1, f"frame {index}: counters"
        verdicts[result.retval] = verdicts.get(result.retval, 0) + 1
        if result.retval == XDP_PASS:
            if result.data != frame:
                check_stripped(index, frame, result.data)
                stripped += 1
        elif result.retval in (XDP_TX, XDP_REDIRECT):
            assert outer_destination(frame) in OWN, f"frame {index}: handed on, not ours"
            assert len(result.data) == len(frame), f"frame {index}: handed on resized"
        else:
            assert result.retval == XDP_DROP, f"frame {index}: verdict {result.retval}"
    # the corpus reaches every outcome: stripped, left alone, dropped
    assert stripped > 500 and verdicts.get(XDP_DROP, 0) > 10, (stripped, verdicts)
    assert verdicts[XDP_PASS] - stripped > 500, (stripped, verdicts)
